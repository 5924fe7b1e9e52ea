"""Lab time: the simulated wall clock that replication, boots and recovery points follow.

Lab time runs ``1 / time_scale`` times as fast as real time (``time_scale`` 0.01: a 300 s
replication cycle takes 3 real seconds) and can be pushed forward with :meth:`Clock.advance`
(the admin API's ``POST /time/advance``). A frozen clock (``time_scale`` 0) only moves when
advanced, which makes tests deterministic.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime


class Clock:
    """A scaled clock: ``now()`` is lab seconds since the epoch (a float)."""

    def __init__(self, time_scale: float = 1.0, *, start: float | None = None) -> None:
        if time_scale < 0:
            raise ValueError("time_scale must be >= 0 (0 freezes the clock)")
        self.time_scale = time_scale
        # Lab time starts at the real time of creation, so timestamps look plausible.
        self._start = time.time() if start is None else start
        self._t0 = time.monotonic()
        self._offset = 0.0
        self._lock = threading.Lock()

    @property
    def frozen(self) -> bool:
        """True when lab time only moves through :meth:`advance`."""
        return self.time_scale == 0

    def now(self) -> float:
        """Lab time in seconds since the epoch."""
        with self._lock:
            offset = self._offset
        if self.frozen:
            return self._start + offset
        return self._start + offset + (time.monotonic() - self._t0) / self.time_scale

    def datetime(self, at: float | None = None) -> datetime:
        """Lab time (now, or ``at``) as an aware UTC datetime."""
        return datetime.fromtimestamp(self.now() if at is None else at, UTC)

    def advance(self, seconds: float) -> float:
        """Jump lab time forward by ``seconds``; returns the new lab time."""
        if seconds < 0:
            raise ValueError("lab time only moves forward; give seconds >= 0")
        with self._lock:
            self._offset += seconds
        return self.now()

    def real_seconds(self, lab_seconds: float) -> float:
        """How long ``lab_seconds`` of lab time lasts in real time (0 when frozen)."""
        return max(0.0, lab_seconds * self.time_scale)

    def sleep(self, lab_seconds: float, stop: threading.Event | None = None) -> None:
        """Block the caller for ``lab_seconds`` of lab time (never while holding a lock)."""
        real = self.real_seconds(lab_seconds)
        if real <= 0:
            return
        (stop or threading.Event()).wait(real)
