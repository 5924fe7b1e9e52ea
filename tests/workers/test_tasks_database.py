"""A database error under a unit (SQLite "database is locked"): retried, never a stuck run.

Faults are injected at the database driver (an SQLAlchemy cursor event raising SQLite's own
error), so the store, the task and Celery's retry all run for real in an embedded worker.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event

from plans import Bundle, load_bundle
from tests.workers.test_tasks import EXAMPLE
from tests.workflows.fakes import FakeExecutor, on_other_vms
from tests.workflows.test_engine import without_gate
from workers.embedded import Runtime, embedded
from workflows.progress import wait_for
from workflows.settings import RetryPolicy, Settings
from workflows.statuses import TERMINAL_RUN, RunStatus
from workflows.store import Run, repository


class LockedStepWrites:
    """Makes the next ``count`` writes of a step's success fail as a locked database."""

    def __init__(self) -> None:
        self.left = 0
        self.fired = 0
        self._lock = threading.Lock()

    def arm(self, count: int) -> None:
        with self._lock:
            self.left, self.fired = count, 0

    def __call__(
        self, _conn: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any
    ) -> None:
        if not statement.startswith("UPDATE step SET status") or "succeeded" not in parameters:
            return
        with self._lock:
            if self.left <= 0:
                return
            self.left -= 1
            self.fired += 1
        raise sqlite3.OperationalError("database is locked")


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    return load_bundle([EXAMPLE])


@pytest.fixture(scope="module")
def faults() -> LockedStepWrites:
    return LockedStepWrites()


@pytest.fixture(scope="module")
def runtime(
    tmp_path_factory: pytest.TempPathFactory, faults: LockedStepWrites
) -> Iterator[Runtime]:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path_factory.mktemp('db')}/ferryman.db",
        retry=RetryPolicy(max_retries=3, base_delay=0.01, max_delay=0.05),
        advance_poll=0.05,
        auto_compensate_test=False,  # a failed run stays failed, so it can be resumed
    )
    with embedded(
        settings, ["stockholm", "gothenburg"], executor=FakeExecutor(), concurrency=4
    ) as rt:
        event.listen(rt.db.engine, "before_cursor_execute", faults)
        yield rt
        faults.arm(0)


def settle(rt: Runtime, run_id: str) -> Run:
    return wait_for(rt.db, run_id, [*TERMINAL_RUN, RunStatus.WAITING], timeout=30, interval=0.02)


def test_a_locked_step_write_retries_the_unit_and_the_run_completes(
    runtime: Runtime, bundle: Bundle, faults: LockedStepWrites
) -> None:
    faults.arm(2)
    run = runtime.engine.start(without_gate(bundle), "three-tier", "test")
    done = settle(runtime, run.id)
    assert done.status == RunStatus.SUCCEEDED, done.error
    assert faults.fired == 2
    with runtime.db.session() as session:
        steps = repository.steps_of(session, run_id=run.id)
    assert {s.status for s in steps} == {"succeeded"}
    # each lost success write made its unit run again, starting that step once more
    assert sum(s.attempts for s in steps) == len(steps) + 2


def test_a_store_that_stays_locked_fails_the_run_clearly_and_resume_finishes_it(
    runtime: Runtime, bundle: Bundle, faults: LockedStepWrites
) -> None:
    faults.arm(10_000)
    run = runtime.engine.start(on_other_vms(without_gate(bundle), "b"), "three-tier", "test")
    failed = settle(runtime, run.id)
    assert failed.status == RunStatus.FAILED
    assert "could not be recorded: database error after 4 attempts" in failed.error
    assert "database is locked" in failed.error
    assert f"ferryman runs resume {run.id}" in failed.error
    with runtime.db.session() as session:
        steps = repository.steps_of(session, run_id=run.id)
    assert not [s.key for s in steps if s.status in ("pending", "running") and s.stage == 0]

    faults.arm(0)
    runtime.engine.resume(run.id, by="ops")
    done = settle(runtime, run.id)
    assert done.status == RunStatus.SUCCEEDED, done.error
