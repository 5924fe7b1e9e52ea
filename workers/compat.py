"""Work-arounds for interpreter bugs that threaded workers hit.

CPython 3.11 keeps the AST constructor's recursion depth in interpreter-wide state. Python 3.11
formats every traceback with ``ast.parse`` (for the ``^^^^`` anchors), and a threads-pool
worker formats tracebacks concurrently (Celery's retry handling does it on every retry); two
threads parsing at once corrupt the counter, after which *every* ``ast.parse`` in the process
fails with "SystemError: AST constructor recursion depth mismatch". Serialising ``ast.parse``
costs nothing measurable (it runs only while formatting errors) and removes the race.
"""

from __future__ import annotations

import ast
import functools
import sys
import threading
from typing import Any

_installed = False


def serialise_ast_parse() -> None:
    """Make ``ast.parse`` take a process-wide lock (CPython 3.11 only; idempotent)."""
    global _installed
    if _installed or sys.version_info[:2] != (3, 11):
        return
    lock = threading.RLock()  # re-entrant: formatting an error raised while parsing parses too
    original = ast.parse

    @functools.wraps(original)
    def parse(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return original(*args, **kwargs)

    ast.parse = parse
    _installed = True
