"""The store on SQLite and PostgreSQL: the same behaviour on both."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy.exc import IntegrityError

from workflows.events import EventKind
from workflows.statuses import ApprovalStatus, IllegalTransition, RunStatus, StepStatus
from workflows.store import Approval, Conflict, Database, Run, RunNotFound, Step, repository


def make_run(
    db: Database, run_id: str = "abcdef123456", key: str | None = None, vm: str = "vm"
) -> Run:
    run = Run(
        id=run_id,
        plan="p",
        operation="test",
        direction="failover",
        status=RunStatus.PENDING.value,
        idempotency_key=key,
        snapshot={"fabric": {"x": 1}},
        compiled={"stages": []},
    )
    steps = [
        Step(
            run_id=run_id,
            key=f"s{i}",
            seq=i,
            stage=i // 2,
            unit=f"u{i}",
            vm=vm,
            kind="start_vm",
            status=StepStatus.PENDING.value,
        )
        for i in range(4)
    ]
    with db.session() as session:
        repository.add_run(session, run=run, steps=steps)
    return run


def test_run_round_trip_with_json_columns(db: Database) -> None:
    make_run(db)
    with db.session() as session:
        run = repository.get_run(session, run_id="abcd")  # a unique prefix works
        assert run.snapshot == {"fabric": {"x": 1}}
        assert [s.key for s in repository.steps_of(session, run_id=run.id, stage=1)] == ["s2", "s3"]
    with db.session() as session, pytest.raises(RunNotFound, match="runs list"):
        repository.get_run(session, run_id="nope")


def test_status_changes_are_checked_and_compare_and_set(db: Database) -> None:
    run = make_run(db)
    with db.session() as session:
        repository.set_run_status(session, run=run, status=RunStatus.RUNNING)
        assert run.started_at is not None
    with db.session() as session, pytest.raises(IllegalTransition):
        repository.set_run_status(session, run=run, status=RunStatus.PENDING)
    with db.session() as session, pytest.raises(Conflict):
        # someone else moved it to WAITING meanwhile; a decision based on RUNNING loses
        repository.set_run_status(session, run=run, status=RunStatus.WAITING)
        repository.set_run_status(
            session, run=run, status=RunStatus.SUCCEEDED, expect=RunStatus.RUNNING
        )


def test_move_stage_lets_one_caller_win(db: Database) -> None:
    make_run(db)
    wins: list[bool] = []
    barrier = threading.Barrier(6)

    def contend() -> None:
        barrier.wait()
        with db.session() as session:
            wins.append(
                repository.move_stage(session, run_id="abcdef123456", from_stage=0, to_stage=1)
            )

    threads = [threading.Thread(target=contend) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 5 + [True]


def test_step_lifecycle_and_prior_results(db: Database) -> None:
    make_run(db)
    with db.session() as session:
        step = repository.get_step(session, run_id="abcdef123456", key="s0")
        repository.set_step_status(session, step=step, status=StepStatus.RUNNING)
        repository.set_step_status(
            session,
            step=step,
            status=StepStatus.SUCCEEDED,
            result={"addresses": ["10.0.0.1"]},
            undo={"action": "x"},
        )
        assert step.attempts == 1 and step.finished_at is not None
        other = repository.get_step(session, run_id="abcdef123456", key="s1")
        repository.set_step_status(session, step=other, status=StepStatus.RUNNING)
        repository.set_step_status(session, step=other, status=StepStatus.FAILED, error="boom")
    with db.session() as session:
        assert repository.prior_results(session, run_id="abcdef123456", vm="vm") == {
            "start_vm": {"addresses": ["10.0.0.1"]}
        }
        assert (
            repository.reset_steps(session, run_id="abcdef123456", statuses=[StepStatus.FAILED])
            == 1
        )
        assert repository.get_step(session, run_id="abcdef123456", key="s1").status == "pending"


def test_idempotency_key_is_unique(db: Database) -> None:
    make_run(db, "run000000001", key="k-1")
    with db.session() as session:
        found = repository.find_run_by_key(session, idempotency_key="k-1")
        assert found is not None and found.id == "run000000001"
    with pytest.raises(IntegrityError):
        make_run(db, "run000000002", key="k-1")


def test_approvals_record_who_when_why(db: Database) -> None:
    make_run(db)
    with db.session() as session:
        gate = repository.add_approval(
            session,
            approval=Approval(
                run_id="abcdef123456", stage=1, name="confirm", status=ApprovalStatus.PENDING.value
            ),
        )
        again = repository.add_approval(
            session,
            approval=Approval(
                run_id="abcdef123456", stage=1, name="confirm", status=ApprovalStatus.PENDING.value
            ),
        )
        assert again.id == gate.id  # opening a gate twice is harmless
        repository.decide_approval(
            session, approval=gate, status=ApprovalStatus.APPROVED, by="alice", comment="AG healthy"
        )
    with db.session() as session:
        decided = repository.approval_for(session, run_id="abcdef123456", stage=1)
        assert decided is not None
        assert (decided.status, decided.decided_by, decided.comment) == (
            "approved",
            "alice",
            "AG healthy",
        )
        assert decided.decided_at is not None
        with pytest.raises(IllegalTransition):
            repository.decide_approval(
                session, approval=decided, status=ApprovalStatus.REJECTED, by="bob", comment=""
            )
        repository.add_event(
            session,
            run_id="abcdef123456",
            event=EventKind.GATE_APPROVED,
            actor="alice",
            message="ok",
        )
        assert [e.event for e in repository.events_of(session, run_id="abcdef123456")] == [
            "gate_approved"
        ]
