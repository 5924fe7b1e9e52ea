"""Drill ticks racing each other on SQLite and PostgreSQL: ticks at once for one slot start one
drill and one run, start one cleanup once the test failover is over, and record (and notify)
the outcome once."""

from __future__ import annotations

import threading
from datetime import UTC, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlmodel import col, select

from plans import Bundle
from tests.workflows.test_orphaned_steps import Recording
from workflows.drills import Cron, Drills, TickResult, set_schedule, slot_key
from workflows.engine import Engine
from workflows.settings import Settings
from workflows.statuses import RunStatus, StepStatus
from workflows.store import Database, Run, Step, utcnow
from workflows.store.tables import Drill, NotificationOutbox

TICKS = 4


@pytest.fixture
def engine(db: Database, tmp_path: Path) -> Engine:
    return Engine(db, Recording(), Settings(database_url=f"sqlite:///{tmp_path}/unused.db"))


def _at_once(engine: Engine, bundle: Bundle, when: object) -> list[TickResult]:
    barrier = threading.Barrier(TICKS)
    results: list[TickResult] = []
    lock = threading.Lock()

    def tick() -> None:
        drills = Drills(engine, lambda: bundle)
        barrier.wait()
        done = drills.tick(when)  # type: ignore[arg-type]
        with lock:
            results.append(done)

    threads = [threading.Thread(target=tick) for _ in range(TICKS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def _finish(db: Database, run_id: str) -> None:
    """The run and its steps succeeded (as a worker would have recorded them)."""
    with db.session() as session:
        session.execute(
            update(Step)
            .where(col(Step.run_id) == run_id)
            .values(status=StepStatus.SUCCEEDED.value, changed=True)
        )
        session.execute(
            update(Run)
            .where(col(Run.id) == run_id)
            .values(status=RunStatus.SUCCEEDED.value, finished_at=utcnow())
        )


def test_ticks_at_once_start_clean_up_and_finish_a_slot_once(
    engine: Engine, bundle: Bundle
) -> None:
    db = engine.db
    with db.session() as session:
        schedule = set_schedule(session, plan="three-tier", cron="*/5 * * * *", by="tests")
    slot = Cron.parse(schedule.cron).following(schedule.since, UTC)
    assert slot is not None
    results = _at_once(engine, bundle, slot + timedelta(seconds=5))
    assert sum(len(r.started) for r in results) == 1
    assert all(r.errors == [] for r in results)
    with db.session() as session:
        (drill,) = session.exec(select(Drill)).all()
        (run,) = session.exec(select(Run)).all()
    assert drill.status == "testing" and drill.run_id == run.id
    assert run.idempotency_key == slot_key("three-tier", slot)

    _finish(db, run.id)  # the test failover is over
    cleaned = _at_once(engine, bundle, slot + timedelta(seconds=65))
    assert all(r.errors == [] for r in cleaned)
    with db.session() as session:
        cleanups = session.exec(select(Run).where(Run.parent_id == run.id)).all()
        drill = session.exec(select(Drill)).one()
    assert [c.operation for c in cleanups] == ["cleanup"]
    assert drill.status == "cleaning" and drill.cleanup_run_id == cleanups[0].id

    _finish(db, cleanups[0].id)
    results = _at_once(engine, bundle, slot + timedelta(seconds=125))
    assert sum(len(r.finished) for r in results) == 1
    with db.session() as session:
        drill = session.exec(select(Drill)).one()
        told = session.exec(select(NotificationOutbox)).all()
    assert drill.status == "succeeded" and drill.finished_at is not None
    assert drill.report is not None and drill.report["cleanup"]["status"] == "succeeded"
    assert [(t.event, t.subject) for t in told] == [
        ("drill_succeeded", f"drill:{drill.id}:drill_succeeded")
    ]
