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

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")


def pauses(
    *,
    timeout: float,
    interval: float,
    lateness: float = 0.0,
    max_interval: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[float]:
    """The pauses between looks, from now until ``timeout`` seconds have passed.

    Each pause is ``interval`` seconds, or ``lateness`` times the time waited so far when that
    is longer, never more than ``max_interval`` nor past the deadline; the iterator ends at the
    deadline. The clock starts when this is called, not at the first pause.
    """
    started = clock()
    deadline = started + timeout

    def paced() -> Iterator[float]:
        while True:
            now = clock()
            remaining = deadline - now
            if remaining <= 0:
                return
            pause = max(interval, (now - started) * lateness)
            if max_interval is not None:
                pause = min(pause, max_interval)
            yield min(pause, remaining)

    return paced()


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

    ``check`` runs at once, then after each of :func:`pauses`. ``clock`` and ``sleep`` are for
    tests that do not want to wait.
    """
    for found in poll(
        check,
        timeout=timeout,
        interval=interval,
        lateness=lateness,
        max_interval=max_interval,
        clock=clock,
        sleep=sleep,
    ):
        if found is not None:
            return found
    return None


def poll(
    look: Callable[[], T],
    *,
    timeout: float,
    interval: float,
    lateness: float = 0.0,
    max_interval: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[T]:
    """Yield ``look()`` at once, then after each of :func:`pauses`, until the caller stops or
    ``timeout`` seconds pass (a last look is taken at the deadline).

    For a follower that shows every change as it comes: it stops iterating when what it
    follows has ended; an iteration that runs out means the time was up.
    """
    paced = pauses(
        timeout=timeout,
        interval=interval,
        lateness=lateness,
        max_interval=max_interval,
        clock=clock,
    )
    while True:
        yield look()
        pause = next(paced, None)
        if pause is None:
            return
        sleep(pause)


async def apoll(
    look: Callable[[], Awaitable[T]],
    *,
    timeout: float,
    interval: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncIterator[T]:
    """:func:`poll` for a coroutine: ``await look()`` at once, then every ``interval``
    seconds, without blocking the event loop between looks."""
    paced = pauses(timeout=timeout, interval=interval, clock=clock)
    while True:
        yield await look()
        pause = next(paced, None)
        if pause is None:
            return
        await sleep(pause)
