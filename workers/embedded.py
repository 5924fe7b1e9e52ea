"""Everything in one process: memory broker, cache backend, a worker thread, the gate watch.

For ``ferryman demo``, tests and small plans. The memory transport polls every 5 ms (its default
second per poll would dominate a run) and the cache backend joins chords in O(M^2) and keeps at
most 5,000 results: large plans belong on Redis (DESIGN.md, Celery conventions).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from celery import Celery
from celery.contrib.testing.worker import start_worker

from workers.app import create_app, never_join_results, queues_for
from workers.tasks import Executor, register
from workflows.dispatch import CeleryDispatcher
from workflows.engine import Engine
from workflows.recovery import Watch
from workflows.settings import Settings
from workflows.store.database import Database, pool_size_for


@dataclass
class Runtime:
    """A wired engine: the Celery app, the engine and its database."""

    app: Celery
    engine: Engine
    db: Database


def build_runtime(
    settings: Settings, executor: Executor | None = None, *, concurrency: int | None = None
) -> Runtime:
    """Wire app, tasks, store and engine (no worker started); ``concurrency``: the threads of
    the worker that will run in this process, which sizes the store's connection pool."""
    app = create_app(settings)
    pool_size = None if concurrency is None else pool_size_for(concurrency)
    db = Database(settings.database_url, pool_size=pool_size)
    engine = Engine(db, CeleryDispatcher(app), settings)
    register(app, engine, executor)
    return Runtime(app, engine, db)


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
