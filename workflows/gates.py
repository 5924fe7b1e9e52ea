"""Manual gates: a run waits in ``waiting`` with no worker slot held until someone decides.

This module keeps a gate's records: opening it, recording an approval, rejection, timeout or
cancellation. What the run does next is :func:`workflows.decide.after_gate`'s answer, applied
by the engine (:meth:`workflows.engine.Engine.approve`, ``reject`` and ``check_timeouts``).
Timeouts need no scheduler: every engine entry point (advance, approve, ``runs list`` and
``runs show``) first applies the policy of overdue gates, and the workers' watch
(:class:`workflows.recovery.Watch`) does the same every few seconds, so a gate times out even
when nobody looks.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from workflows.compiler import Stage
from workflows.decide import GateRecord
from workflows.events import EventKind
from workflows.statuses import ApprovalStatus, RunStatus
from workflows.store import Approval, Run, repository, utcnow

TIMEOUT_ACTOR = "ferryman (timeout)"


def open_gate(
    session: Session, run: Run, stage: Stage, record: GateRecord, deadline: datetime | None
) -> None:
    """Open the gate of ``stage``: its record as :func:`workflows.decide.enter_stage` said,
    the run ``waiting``, and the event that tells the operator what to check."""
    assert stage.gate is not None
    gate = stage.gate
    if record is GateRecord.NEW:
        repository.add_approval(
            session,
            approval=Approval(
                run_id=run.id,
                stage=stage.index,
                name=gate.name,
                instructions=gate.instructions,
                status=ApprovalStatus.PENDING.value,
                on_timeout=gate.on_timeout,
                deadline=deadline,
            ),
        )
    elif record is GateRecord.REOPEN:
        existing = repository.approval_for(session, run_id=run.id, stage=stage.index)
        assert existing is not None
        repository.reopen_approval(session, approval=existing, deadline=deadline)
    repository.set_run_status(session, run=run, status=RunStatus.WAITING)
    repository.add_event(
        session,
        run_id=run.id,
        event=EventKind.GATE_OPENED,
        message=f"{gate.name}: {gate.instructions}",
        data={"stage": stage.index, "timeout": gate.timeout, "on_timeout": gate.on_timeout},
    )


def record_decision(
    session: Session,
    approval: Approval,
    *,
    approved: bool,
    by: str,
    comment: str,
    key: str | None = None,
) -> ApprovalStatus:
    """Record an operator's approval or rejection of ``approval``; returns its new status.

    ``key``: the request's idempotency key, kept with the decision's event so a retried
    request finds it.
    """
    status = ApprovalStatus.APPROVED if approved else ApprovalStatus.REJECTED
    repository.decide_approval(session, approval=approval, status=status, by=by, comment=comment)
    repository.add_event(
        session,
        run_id=approval.run_id,
        event=EventKind.GATE_APPROVED if approved else EventKind.GATE_REJECTED,
        actor=by,
        message=f"{approval.name}: {comment}" if comment else approval.name,
        data={"idempotency_key": key} if key else None,
    )
    return status


def overdue(session: Session) -> list[Approval]:
    """Open gates whose deadline has passed."""
    return repository.pending_approvals(session, due_before=utcnow())


def record_timeout(session: Session, approval: Approval) -> None:
    """Record that nobody decided ``approval`` before its deadline."""
    repository.decide_approval(
        session,
        approval=approval,
        status=ApprovalStatus.TIMED_OUT,
        by=TIMEOUT_ACTOR,
        comment=f"no decision before {approval.deadline:%Y-%m-%d %H:%M:%S} UTC",
    )
    repository.add_event(
        session,
        run_id=approval.run_id,
        event=EventKind.GATE_TIMED_OUT,
        message=f"{approval.name}: timed out, policy {approval.on_timeout}",
    )


def cancel_open(session: Session, run: Run) -> None:
    """Close the run's open gate as cancelled (the run is being cancelled)."""
    for approval in repository.approvals_of(session, run_id=run.id):
        if approval.status == ApprovalStatus.PENDING:
            repository.decide_approval(
                session,
                approval=approval,
                status=ApprovalStatus.CANCELLED,
                by="ferryman",
                comment="run cancelled",
            )
