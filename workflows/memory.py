"""Giving the memory a finished run used back to the system.

A large run leaves a worker's heap with much more free space than it keeps in use: glibc
keeps freed memory (above all in the arenas of the pool's threads) for later allocations
instead of returning it, so a worker that ran one 5,000-VM run stays at that run's size.
:func:`release_freed_memory` asks glibc to return what is free (``malloc_trim``); it takes a
few milliseconds and is called once per run, when the run ends.

What a trim cannot give back is a heap that large blocks spread out. glibc serves a block of
128 KiB or more from a mapping of its own, returned when the block is freed, but each such
block freed raises that threshold to its size (up to 32 MiB), and from then on blocks of that
size come from the heap of the thread that asks. A worker meets such blocks once per
stage and more as the run grows: SQLite builds a run's whole row (its snapshot and compiled
columns, several MB at 5,000 VMs) for every statement that updates the run, and the run's
compiled text is read whole once per run. Each left a hole of its size in one of the pool's
heaps that small values still alive were then placed in, so the heaps, and the resident set,
grew with every stage while the memory in use stayed flat (about 35 MB of glibc blocks after a
1,000-VM run and after a 5,000-VM run alike, against 50 and 130 MB free). A worker
calls :func:`keep_large_blocks_apart` once at start: the threshold stays at 128 KiB, so a large
block always has its own mapping and goes back to the system when it is freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
from collections.abc import Callable
from functools import cache
from typing import Any, cast

log = logging.getLogger(__name__)

# glibc's mallopt parameter for the size from which a block gets a mapping of its own
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value, kept fixed


@cache
def _libc() -> ctypes.CDLL | None:
    """glibc, or None where the C library is another (macOS, musl, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def _libc_function(name: str, argtypes: list[Any], restype: Any) -> Callable[..., int] | None:
    """glibc's function ``name`` with its C signature, or None where there is none."""
    libc = _libc()
    function: Any = getattr(libc, name, None) if libc is not None else None
    if function is None:
        return None
    function.argtypes = argtypes
    function.restype = restype
    return cast(Callable[..., int], function)


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where there is none."""
    return _libc_function("malloc_trim", [ctypes.c_size_t], ctypes.c_int)


@cache
def _mallopt() -> Callable[[int, int], int] | None:
    """glibc's ``mallopt``, or None where there is none."""
    return _libc_function("mallopt", [ctypes.c_int, ctypes.c_int], ctypes.c_int)


def keep_large_blocks_apart(threshold: int = MMAP_THRESHOLD) -> bool:
    """Give every block of ``threshold`` bytes or more a mapping of its own, also after large
    blocks were freed (see the module's text); whether it was set.

    Left to the environment when ``MALLOC_MMAP_THRESHOLD_`` is set there (glibc reads it at
    start), and a no-op where the C library is not glibc.
    """
    if os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        return False
    mallopt = _mallopt()
    if mallopt is None:
        return False
    try:
        return mallopt(M_MMAP_THRESHOLD, threshold) == 1
    except OSError as exc:
        log.debug("mallopt failed: %s", exc)
        return False


def release_freed_memory() -> None:
    """Return the heap's free memory to the system (nothing where the C library cannot)."""
    trim = _malloc_trim()
    if trim is None:
        return
    try:
        trim(0)
    except OSError as exc:  # never worth failing a run's end over
        log.debug("malloc_trim failed: %s", exc)
