"""Waiting for something to become true: the one polling loop every waiter uses.

A waiter hands :func:`wait_until` a ``check`` that answers None while the thing waited for is
not there yet, and says how often to look. The loop never sleeps past the deadline and looks
one last time at it, so a ``timeout`` of 0 is a single look. What a timeout means (an error,
a warning, a fallback) stays with the caller, who knows what to tell the operator.

The pause between looks is ``interval``, or, with ``lateness``, that share of the time waited
so far (capped at ``max_interval``): a thing that takes a second is seen within ``interval``
of it, one that takes a minute costs a few dozen looks instead of hundreds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    check: Callable[[], T | None],
    *,
    timeout: float,
    interval: float,
    lateness: float = 0.0,
    max_interval: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T | None:
    """Call ``check`` until it returns something not None; None once ``timeout`` seconds pass.

    ``check`` runs at once, then after each pause: ``interval`` seconds, or ``lateness``
    times the time waited so far when that is longer, never more than ``max_interval`` nor
    past the deadline. ``clock`` and ``sleep`` are for tests that do not want to wait.
    """
    started = clock()
    deadline = started + timeout
    while True:
        found = check()
        if found is not None:
            return found
        now = clock()
        remaining = deadline - now
        if remaining <= 0:
            return None
        pause = max(interval, (now - started) * lateness)
        if max_interval is not None:
            pause = min(pause, max_interval)
        sleep(min(pause, remaining))
