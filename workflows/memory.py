"""Giving the memory a finished run used back to the system.

A large run leaves a worker's heap with much more free space than it keeps in use: glibc
keeps freed memory (above all in the arenas of the pool's threads) for later allocations
instead of returning it, so a worker that ran one 5,000-VM run stays at that run's size.
:func:`release_freed_memory` asks glibc to return what is free (``malloc_trim``); it takes a
few milliseconds and is called once per run, when the run ends.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from collections.abc import Callable
from functools import cache

log = logging.getLogger(__name__)


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where there is none (macOS, musl, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]  # type: ignore[attr-defined]
    trim.restype = ctypes.c_int  # type: ignore[attr-defined]
    return trim


def release_freed_memory() -> None:
    """Return the heap's free memory to the system (nothing where the C library cannot)."""
    trim = _malloc_trim()
    if trim is None:
        return
    try:
        trim(0)
    except OSError as exc:  # never worth failing a run's end over
        log.debug("malloc_trim failed: %s", exc)
