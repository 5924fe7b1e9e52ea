"""wait_until: the one polling loop, driven by a fake clock (no real waiting)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

from workflows.waiting import apoll, poll, wait_until


class Clock:
    """A clock that moves only when slept on; records every pause."""

    def __init__(self) -> None:
        self.now = 0.0
        self.pauses: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(round(seconds, 6))
        self.now += seconds


def ready_at(clock: Clock, when: float, value: str = "up") -> Callable[[], str | None]:
    return lambda: value if clock.now >= when else None


def test_returns_what_the_check_found_without_sleeping_when_it_is_there() -> None:
    clock = Clock()
    assert wait_until(lambda: 0, timeout=5, interval=1, clock=clock, sleep=clock.sleep) == 0
    assert clock.pauses == []  # 0 is an answer; only None means "not yet"


def test_polls_every_interval_until_found() -> None:
    clock = Clock()
    found = wait_until(
        ready_at(clock, 0.7), timeout=5, interval=0.25, clock=clock, sleep=clock.sleep
    )
    assert found == "up" and clock.pauses == [0.25, 0.25, 0.25]


def test_never_sleeps_past_the_deadline_and_looks_once_more_at_it() -> None:
    clock = Clock()
    looks: list[float] = []

    def never() -> None:
        looks.append(clock.now)
        return None

    assert wait_until(never, timeout=1.0, interval=0.4, clock=clock, sleep=clock.sleep) is None
    assert clock.pauses == [0.4, 0.4, 0.2]
    assert looks == [0.0, 0.4, 0.8, 1.0]


def test_a_zero_timeout_is_a_single_look() -> None:
    clock = Clock()
    assert wait_until(lambda: None, timeout=0, interval=1, clock=clock, sleep=clock.sleep) is None
    assert clock.pauses == []


def test_lateness_stretches_pauses_with_the_time_waited_up_to_the_cap() -> None:
    clock = Clock()
    found = wait_until(
        ready_at(clock, 60),
        timeout=120,
        interval=1,
        lateness=0.5,
        max_interval=8,
        clock=clock,
        sleep=clock.sleep,
    )
    assert found == "up"
    assert clock.pauses[:5] == [1, 1, 1, 1.5, 2.25]  # half the time waited, at least 1 s
    assert max(clock.pauses) == 8 and clock.now >= 60


def test_poll_yields_every_look_until_the_caller_stops() -> None:
    clock = Clock()
    seen: list[float] = []
    for now in poll(lambda: clock.now, timeout=10, interval=0.5, clock=clock, sleep=clock.sleep):
        seen.append(now)
        if now >= 1.5:
            break  # what was followed has ended: no pause after the last look
    assert seen == [0.0, 0.5, 1.0, 1.5] and clock.pauses == [0.5, 0.5, 0.5]


def test_poll_runs_out_at_the_deadline_after_a_last_look_there() -> None:
    clock = Clock()
    seen = list(poll(lambda: clock.now, timeout=1.0, interval=0.4, clock=clock, sleep=clock.sleep))
    assert seen == [0.0, 0.4, 0.8, 1.0]


def test_apoll_awaits_each_look_and_sleeps_without_blocking() -> None:
    clock = Clock()

    async def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        await asyncio.sleep(0)

    async def look() -> float:
        return clock.now

    async def follow() -> list[float]:
        seen = []
        async for now in apoll(look, timeout=math.inf, interval=2, clock=clock, sleep=sleep):
            seen.append(now)
            if len(seen) == 4:
                break
        return seen

    assert asyncio.run(follow()) == [0, 2, 4, 6] and clock.pauses == [2, 2, 2]
