"""The embedded variant: a worker thread and the gate watch inside the calling process.

For ``ferryman demo``, commands on the in-memory broker, tests and small plans. The wiring
itself is :mod:`workflows.runtime` (the composition root); this module only starts a worker
around a runtime it built. The memory transport polls every 5 ms (its default second per poll
would dominate a run) and the cache backend joins chords in O(M^2) and keeps at most 5,000
results: large plans belong on Redis.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from celery.contrib.testing.worker import start_worker

from workers.app import never_join_results, queues_for
from workers.tasks import Executor
from workflows.recovery import Watch
from workflows.runtime import Runtime, build_runtime
from workflows.settings import Settings

__all__ = ["Runtime", "build_runtime", "embedded", "worker"]


@contextmanager
def worker(
    runtime: Runtime,
    sites: Iterable[str],
    *,
    concurrency: int = 8,
    gate_interval: float = 1.0,
) -> Iterator[Runtime]:
    """Run a worker thread on the sites' queues and the engine queue, plus the gate watch."""
    with start_worker(
        runtime.app,
        pool="threads",
        concurrency=concurrency,
        perform_ping_check=False,
        hostname="ferryman@embedded",
        queues=queues_for(sites),
        loglevel="WARNING",
        shutdown_timeout=60,
    ):
        never_join_results()  # after start_worker, which sets the opposite for tests
        watch = Watch(runtime.engine, interval=gate_interval).start()
        try:
            yield runtime
        finally:
            watch.stop()


@contextmanager
def embedded(
    settings: Settings,
    sites: Iterable[str],
    *,
    executor: Executor | None = None,
    concurrency: int = 8,
) -> Iterator[Runtime]:
    """The engine with an in-process worker (memory broker unless settings say otherwise)."""
    runtime = build_runtime(settings, executor, concurrency=concurrency)
    try:
        with worker(runtime, sites, concurrency=concurrency):
            yield runtime
    finally:
        runtime.db.dispose()
