"""Gate timeouts applied by several processes at once: a lost race on one gate is no error.

Every worker's watch and every stage callback apply overdue gates' policies; two of them can
read the same pending gate and race to decide it. The loser's transaction writes nothing, and
the other overdue gates it was about to handle, of other runs, still get their policy.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.workflows.test_orphaned_steps import Recording
from tests.workflows.test_store import make_run
from workflows.engine import Engine
from workflows.events import EventKind
from workflows.settings import Settings
from workflows.statuses import ApprovalStatus
from workflows.store import Approval, Database, repository, utcnow


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/t.db")
    db = Database(settings.database_url)
    yield Engine(db, Recording(), settings)
    db.dispose()


def overdue_gate(db: Database, run_id: str) -> None:
    make_run(db, run_id, vm=f"vm-{run_id}")  # one run per VM
    with db.session() as session:
        repository.add_approval(
            session,
            approval=Approval(
                run_id=run_id,
                stage=1,
                name="confirm",
                instructions="check",
                status=ApprovalStatus.PENDING.value,
                on_timeout="fail",
                deadline=utcnow() - timedelta(seconds=5),
            ),
        )


def test_a_gate_decided_by_another_process_meanwhile_does_not_stop_the_others(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    overdue_gate(engine.db, "aaaaaaaaaaaa")
    overdue_gate(engine.db, "bbbbbbbbbbbb")
    decide = repository.decide_approval
    raced: list[str] = []

    def another_process_first(session: Any, *, approval: Approval, **kwargs: Any) -> Approval:
        if not raced:
            # another watch decides this gate between our read and our write
            raced.append(approval.run_id)
            with engine.db.session() as other:
                theirs = repository.approval_for(other, run_id=approval.run_id, stage=1)
                assert theirs is not None
                decide(other, approval=theirs, **kwargs)
        return decide(session, approval=approval, **kwargs)

    monkeypatch.setattr(repository, "decide_approval", another_process_first)
    affected = engine.check_timeouts()  # raised Conflict before
    other_run = ({"aaaaaaaaaaaa", "bbbbbbbbbbbb"} - set(raced)).pop()
    assert affected == [other_run]
    with engine.db.session() as session:
        for run_id in ("aaaaaaaaaaaa", "bbbbbbbbbbbb"):
            gate = repository.approval_for(session, run_id=run_id, stage=1)
            assert gate is not None and gate.status == ApprovalStatus.TIMED_OUT.value
        # the loser wrote nothing: one timeout event per gate, the winner's
        events = [
            e.run_id
            for run_id in ("aaaaaaaaaaaa", "bbbbbbbbbbbb")
            for e in repository.events_of(session, run_id=run_id)
            if e.event == EventKind.GATE_TIMED_OUT
        ]
    assert sorted(events) == [other_run]
