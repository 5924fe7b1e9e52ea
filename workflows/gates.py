"""Manual gates: a run waits in ``waiting`` with no worker slot held until someone decides.

Approval and rejection record who decided, when and why, then continue or fail the run.
Timeouts need no scheduler: every engine entry point (advance, approve, ``runs list`` and
``runs show``) first applies the policy of overdue gates, and workers run a :class:`GateWatch`
thread that does the same every few seconds, so a gate times out even when nobody looks.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from sqlmodel import Session

from workflows.compiler import Stage
from workflows.events import EventKind
from workflows.statuses import ApprovalStatus, RunStatus
from workflows.store import Approval, Run, repository, utcnow
from workflows.store.repository import Conflict

if TYPE_CHECKING:
    from workflows.engine import AfterCommit, Engine

log = logging.getLogger(__name__)


def open_gate(engine: Engine, session: Session, run: Run, stage: Stage) -> bool:
    """Open the gate of ``stage``; False when it was already passed (approved or continued)."""
    assert stage.gate is not None
    gate = stage.gate
    existing = repository.approval_for(session, run_id=run.id, stage=stage.index)
    if existing is not None:
        passed = existing.status == ApprovalStatus.APPROVED or (
            existing.status == ApprovalStatus.TIMED_OUT and existing.on_timeout == "continue"
        )
        if passed:
            return False
        if existing.status != ApprovalStatus.PENDING:
            repository.reopen_approval(
                session, approval=existing, deadline=engine.deadline(gate.timeout)
            )
    else:
        repository.add_approval(
            session,
            approval=Approval(
                run_id=run.id,
                stage=stage.index,
                name=gate.name,
                instructions=gate.instructions,
                status=ApprovalStatus.PENDING.value,
                on_timeout=gate.on_timeout,
                deadline=engine.deadline(gate.timeout),
            ),
        )
    repository.set_run_status(session, run=run, status=RunStatus.WAITING)
    repository.add_event(
        session,
        run_id=run.id,
        event=EventKind.GATE_OPENED,
        message=f"{gate.name}: {gate.instructions}",
        data={"stage": stage.index, "timeout": gate.timeout, "on_timeout": gate.on_timeout},
    )
    return True


def decide(
    engine: Engine, run_id: str, *, approved: bool, by: str, comment: str, key: str | None = None
) -> Run:
    """Approve or reject the run's open gate; ``key``: the request's idempotency key, kept
    with the decision's event so a retried request finds it."""
    from workflows.engine import RunStateError

    if not by:
        raise RunStateError("say who decides: an approval records the operator's name (--by)")
    engine.check_timeouts()
    with engine.transaction() as (session, after):
        run = repository.get_run(session, run_id=run_id)
        approval = repository.approval_for(session, run_id=run.id, stage=run.current_stage)
        if run.status != RunStatus.WAITING or approval is None:
            raise RunStateError(f"run {run.id} is {run.status}, not waiting at a gate")
        status = ApprovalStatus.APPROVED if approved else ApprovalStatus.REJECTED
        repository.decide_approval(
            session, approval=approval, status=status, by=by, comment=comment
        )
        repository.add_event(
            session,
            run_id=run.id,
            event=EventKind.GATE_APPROVED if approved else EventKind.GATE_REJECTED,
            actor=by,
            message=f"{approval.name}: {comment}" if comment else approval.name,
            data={"idempotency_key": key} if key else None,
        )
        if approved:
            _continue(engine, session, after, run)
        else:
            engine.fail(session, after, run, f"gate {approval.name} rejected by {by}: {comment}")
    return run


def _continue(engine: Engine, session: Session, after: AfterCommit, run: Run) -> None:
    stage = run.current_stage
    repository.set_run_status(session, run=run, status=RunStatus.RUNNING)
    repository.move_stage(session, run_id=run.id, from_stage=stage, to_stage=stage + 1)
    engine.enter(session, after, run, stage + 1)


def check_timeouts(engine: Engine) -> list[str]:
    """Apply the ``on_timeout`` policy of every overdue open gate."""
    affected: list[str] = []
    with engine.db.session() as session:
        overdue = repository.pending_approvals(session, due_before=utcnow())
    for approval in overdue:
        try:
            if _time_out(engine, approval):
                affected.append(approval.run_id)
        except Conflict:
            # Every worker's watch and every stage callback apply timeouts: another one
            # decided this gate (or moved its run) between the read and the write, and its
            # transaction applied the policy. Nothing of this one was written; the other
            # overdue gates, of other runs, still get theirs.
            log.info("the gate of run %s was timed out by another process", approval.run_id)
    return affected


def _time_out(engine: Engine, approval: Approval) -> bool:
    """Apply one overdue gate's policy in one transaction; False if decided meanwhile."""
    with engine.transaction() as (session, after):
        run = repository.get_run(session, run_id=approval.run_id)
        fresh = repository.approval_for(session, run_id=run.id, stage=approval.stage)
        if fresh is None or fresh.status != ApprovalStatus.PENDING:
            return False  # decided meanwhile
        repository.decide_approval(
            session,
            approval=fresh,
            status=ApprovalStatus.TIMED_OUT,
            by="ferryman (timeout)",
            comment=f"no decision before {fresh.deadline:%Y-%m-%d %H:%M:%S} UTC",
        )
        repository.add_event(
            session,
            run_id=run.id,
            event=EventKind.GATE_TIMED_OUT,
            message=f"{fresh.name}: timed out, policy {fresh.on_timeout}",
        )
        if run.status == RunStatus.WAITING and run.current_stage == fresh.stage:
            if fresh.on_timeout == "continue":
                _continue(engine, session, after, run)
            else:
                engine.fail(session, after, run, f"gate {fresh.name} timed out")
    return True


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


class GateWatch:
    """A thread that, every ``interval`` seconds until stopped, applies gate timeouts, sends
    again stages left unsent by a crash (:meth:`Engine.resend_lost_stages`) and advances
    settled stages whose callback was lost (:meth:`Engine.advance_settled_stages`) and hands
    running steps whose worker went silent to a fresh delivery
    (:meth:`Engine.take_over_orphaned_steps`), and sends again units that never started in a
    stage gone quiet (:meth:`Engine.resend_idle_units`)."""

    def __init__(self, engine: Engine, interval: float = 5.0) -> None:
        self.engine = engine
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ferryman-gate-watch", daemon=True)

    def start(self) -> GateWatch:
        """Start watching."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop and wait for the thread."""
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.engine.check_timeouts()
                # a stage committed by a process that died before sending it is sent again
                for run_id in self.engine.resend_lost_stages():
                    log.warning("run %s: a stage committed but never sent was sent again", run_id)
                # and a settled stage whose chord callback was lost is advanced
                for run_id in self.engine.advance_settled_stages():
                    log.warning("run %s: a settled stage without its callback was advanced", run_id)
                # and a running step whose worker stopped beating goes to a fresh delivery
                for run_id in self.engine.take_over_orphaned_steps():
                    log.warning("run %s: a step whose worker went silent was taken over", run_id)
                # and units of a quiet stage that never started are sent once more
                for run_id in self.engine.resend_idle_units():
                    log.warning("run %s: units that never started were sent again", run_id)
            except Exception:  # a database hiccup must not kill the watch
                log.exception("gate timeout check failed; retrying in %s s", self.interval)
