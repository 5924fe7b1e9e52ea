"""Compensation: undo a run's completed steps, newest first, as a run of its own.

Every mutating executor records how to undo its step (test VM -> Stop-VMFailover; uncommitted
failover -> Stop-VMFailover and restart the source; DNS -> the captured records). Compensating
a run compiles those records, in reverse order, into a linked ``compensate`` run; the original
run shows ``compensating`` and then ``compensated`` (or ``failed`` again if an undo failed:
compensate once more, or fix by hand). A failed test run is compensated automatically; a real
failover only when an operator asks.
"""

from __future__ import annotations

from typing import Protocol

from sqlmodel import Session

from workflows.compiler import (
    CompiledRun,
    CompileError,
    RunOperation,
    StepRecord,
    compile_followup,
)
from workflows.events import EventKind
from workflows.inputs import undo_record
from workflows.statuses import RunStateError, RunStatus, StepStatus
from workflows.steps import StepKind
from workflows.store import Database, Run, repository


class RunStarter(Protocol):
    """What follow-up runs need of the engine: its store and a way to start a linked run."""

    @property
    def db(self) -> Database: ...

    def start_child(
        self, parent: Run, compiled: CompiledRun, *, requested_by: str, notes: str = ""
    ) -> Run:
        """Create a follow-up run of ``parent`` and dispatch it."""


def step_records(session: Session, run_id: str) -> list[StepRecord]:
    """A run's recorded steps in the form the follow-up compiler reads."""
    return [
        StepRecord(
            key=step.key,
            kind=StepKind(step.kind),
            stage=step.stage,
            seq=step.seq,
            status=StepStatus(step.status),
            vm=step.vm,
            host=step.host,
            result=step.result,
            undo=undo_record(step.undo) if step.undo else None,
        )
        for step in repository.steps_of(session, run_id=run_id)
    ]


def compensate(engine: RunStarter, run_id: str, *, by: str) -> Run | None:
    """Start undoing ``run_id``; returns the compensation run (None if nothing to undo)."""
    with engine.db.session() as session:
        run = repository.get_run(session, run_id=run_id)
        allowed = (RunStatus.FAILED, RunStatus.SUCCEEDED, RunStatus.CANCELLED)
        if run.status not in allowed:
            raise RunStateError(
                f"run {run.id} is {run.status}; compensate a failed, succeeded or cancelled run "
                "(cancel a running one first)"
            )
        records = step_records(session, run.id)
        parent = CompiledRun.from_json(run.compiled)
        repository.set_run_status(session, run=run, status=RunStatus.COMPENSATING)
        repository.add_event(session, run_id=run.id, event=EventKind.COMPENSATION_STARTED, actor=by)
        try:
            compiled = compile_followup(parent, RunOperation.COMPENSATE, records)
        except CompileError:
            repository.set_run_status(session, run=run, status=RunStatus.COMPENSATED)
            return None
    return engine.start_child(run, compiled, requested_by=by)


def close_parent(session: Session, child: Run) -> None:
    """A compensation run finished: mark the run it undid compensated (or failed again)."""
    assert child.parent_id is not None
    parent = repository.get_run(session, run_id=child.parent_id)
    if parent.status != RunStatus.COMPENSATING:
        return
    if child.status == RunStatus.SUCCEEDED:
        repository.set_run_status(session, run=parent, status=RunStatus.COMPENSATED)
    else:
        repository.set_run_status(
            session,
            run=parent,
            status=RunStatus.FAILED,
            error=f"compensation run {child.id} failed: {child.error}",
        )
