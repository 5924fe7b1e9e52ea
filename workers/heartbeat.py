"""Step heartbeats: a worker shows, every few seconds, that the steps it runs are alive.

A step is recorded ``running`` before its executor starts. If the worker dies, the step's
message normally comes back (acks_late) and the same delivery runs it again; but a message can
be lost with its worker (popped from the broker and not yet recorded as unacknowledged, or a
broker that lost its state). The heartbeat tells the two apart: one thread per worker process
refreshes ``heartbeat_at`` of every step the process holds, in one UPDATE, and the workers'
watch (:meth:`workflows.recovery.Recovery.take_over_orphaned_steps`) hands a step whose heartbeat
is older than the lease to a fresh delivery.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from workflows.store import Database, repository

log = logging.getLogger(__name__)


class Heartbeat:
    """The steps this process runs, and the thread that keeps their heartbeat fresh."""

    def __init__(self, db: Database, interval: float) -> None:
        self.db = db
        self.interval = interval
        self._held: dict[int, str | None] = {}  # step id -> the delivery that holds it
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    @contextmanager
    def holding(self, step_id: int, task_id: str | None) -> Iterator[None]:
        """Keep the step's heartbeat fresh while the block runs its executor."""
        with self._lock:
            self._held[step_id] = task_id
            self._ensure_thread()
        try:
            yield
        finally:
            with self._lock:
                self._held.pop(step_id, None)

    def held(self) -> dict[int, str | None]:
        """The steps held right now (a copy)."""
        with self._lock:
            return dict(self._held)

    def beat(self) -> int:
        """Refresh the heartbeat of every held step once; returns how many rows changed."""
        owners = self.held()
        if not owners:
            return 0
        with self.db.session() as session:
            return repository.beat(session, owners=owners)

    def _ensure_thread(self) -> None:
        # started by the first step, in the process that runs it (a forked pool child
        # starts its own: threads do not survive a fork)
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._loop, name="ferryman-heartbeat", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        event = threading.Event()
        while not event.wait(self.interval):
            with self._lock:
                if not self._held:  # idle: stop; the next step starts a new thread
                    self._thread = None
                    return
            try:
                self.beat()
            except Exception as exc:  # the database is briefly away: beat again next time
                log.warning("step heartbeat failed (%s); retrying in %s s", exc, self.interval)
