"""The run lifecycle: create a run, enter its stages one by one, finish it.

The engine holds no state of its own and decides nothing by itself: it reads the store, asks
:mod:`workflows.decide` what comes next, and writes the answer. The store is the truth, and
every write that moves a run is a compare-and-set on the run's row, so the callback of a stage
(``ferryman.engine.advance``) may be delivered twice, or race an operator's approval or the
recovery watch, without dispatching a stage twice.

Dispatching is a collaborator (:class:`Dispatcher`): the Celery one sends a stage as a chord
whose callback calls :meth:`Engine.advance`; tests may pass one that records. Dispatches happen
only after the transaction that decided them has committed, so a worker never reads a run that
is not there yet.
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Protocol

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from plans.collection import collector_paused
from plans.model import Direction, Fabric, FailoverType, RecoveryPlan
from workflows import compensation, decide, gates
from workflows.cache import CompiledRuns
from workflows.compiler import CompiledRun, Stage, StageKind, compile_run
from workflows.events import EventKind
from workflows.memory import release_freed_memory
from workflows.settings import Settings
from workflows.statuses import (
    TERMINAL_RUN,
    ApprovalStatus,
    RunStateError,
    RunStatus,
    StepStatus,
)
from workflows.store import Approval, Database, Run, repository, utcnow
from workflows.store.repository import Conflict

__all__ = ["Advance", "BundleLike", "Dispatcher", "Engine", "RunStateError", "new_run_id"]

log = logging.getLogger(__name__)


class BundleLike(Protocol):
    """What the engine needs of a loaded bundle (``plans.Bundle``)."""

    @property
    def fabric(self) -> Fabric: ...

    @property
    def content_hash(self) -> str: ...

    def plan(self, name: str) -> RecoveryPlan: ...

    def snapshot(self) -> dict[str, Any]: ...


class Dispatcher(Protocol):
    """Sends a stage's units to the workers; the last one to finish calls ``advance``."""

    def dispatch(self, run_id: str, stage: Stage) -> None:
        """Send the stage (a chord in the Celery dispatcher)."""


class Advance(enum.StrEnum):
    """What :meth:`Engine.advance` did with a stage's callback."""

    ADVANCED = "advanced"  # the run moved on (to the next stage, a gate, or its end)
    FAILED = "failed"  # a failed step stopped the run
    NOT_READY = "not_ready"  # steps of the stage still run: call again later
    STALE = "stale"  # the run moved on or stopped: nothing to do


AfterCommit = list[Callable[[], None]]


def new_run_id() -> str:
    """A short random run id (12 hex digits: unique enough, easy to type)."""
    return uuid.uuid4().hex[:12]


class Engine:
    """Creates runs and moves them through their stages."""

    def __init__(self, db: Database, dispatcher: Dispatcher, settings: Settings) -> None:
        self.db = db
        self.dispatcher = dispatcher
        self.settings = settings
        self.compiled_runs = CompiledRuns()  # decoded once per run, not per stage or step

    # -- transactions

    @contextmanager
    def transaction(self) -> Iterator[tuple[Session, AfterCommit]]:
        """A session plus a list of actions (dispatches) to run once it has committed."""
        after: AfterCommit = []
        with self.db.session() as session:
            yield session, after
        for action in after:
            action()

    # -- starting runs

    def compile(
        self,
        bundle: BundleLike,
        plan: str,
        failover_type: FailoverType | str,
        direction: Direction | str = Direction.FAILOVER,
        options: dict[str, Any] | None = None,
    ) -> CompiledRun:
        """Compile without running (``--dry-run``)."""
        return compile_run(
            bundle.fabric,
            plan,
            bundle.plan(plan),
            failover_type,
            direction,
            options,
            gate_timeout=self.settings.gate_timeout,
        )

    def start(
        self,
        bundle: BundleLike,
        plan: str,
        failover_type: FailoverType | str,
        direction: Direction | str = Direction.FAILOVER,
        *,
        options: dict[str, Any] | None = None,
        requested_by: str = "",
        idempotency_key: str | None = None,
    ) -> Run:
        """Create a run of a plan and dispatch its first stage.

        With an ``idempotency_key`` already used, the existing run is returned and nothing new
        happens (queue triggers are delivered at least once) -- except that a run whose current
        stage was committed but never sent (the process that created it died in between, so
        the trigger came back) has that stage sent now.
        """
        if idempotency_key:
            with self.db.session() as session:
                existing = repository.find_run_by_key(session, idempotency_key=idempotency_key)
            if existing is not None:
                self.resend(existing.id)
                return existing
        # a large plan's compiled run and step rows are many objects: see plans.collection
        with collector_paused():
            compiled = self.compile(bundle, plan, failover_type, direction, options)
            run = Run(
                id=new_run_id(),
                plan=plan,
                operation=compiled.operation.value,
                direction=compiled.direction.value,
                status=RunStatus.PENDING.value,
                requested_by=requested_by,
                idempotency_key=idempotency_key or None,
                content_hash=bundle.content_hash,
                snapshot=bundle.snapshot(),
                compiled=compiled.to_json(),
                options=dict(options or {}),
            )
            try:
                return self._create(run, compiled, requested_by)
            except IntegrityError:
                if not idempotency_key:
                    raise
                # another trigger with the same key won the race: that run is the answer
                with self.db.session() as session:
                    existing = repository.find_run_by_key(session, idempotency_key=idempotency_key)
                if existing is None:
                    raise
                return existing

    def _create(self, run: Run, compiled: CompiledRun, actor: str, message: str = "") -> Run:
        pending = StepStatus.PENDING.value
        steps = [
            {
                "run_id": run.id,
                "key": spec.key,
                "seq": seq,
                "stage": stage.index,
                "unit": unit.key,
                "group": unit.group,
                "vm": spec.vm,
                "host": spec.host,
                "kind": spec.kind._value_,
                "on_error": spec.on_error,
                "status": pending,
            }
            for seq, (stage, unit, spec) in enumerate(compiled.steps())
        ]
        with self.transaction() as (session, after):
            repository.add_run(session, run=run, steps=steps)
            self.compiled_runs.put(run.id, compiled)
            repository.add_event(
                session,
                run_id=run.id,
                event=EventKind.CREATED,
                actor=actor,
                message=message or f"{run.operation} of plan {run.plan} ({run.direction})",
                data={"content_hash": run.content_hash, "parent": run.parent_id},
            )
            repository.set_run_status(session, run=run, status=RunStatus.RUNNING)
            self.enter(session, after, run, 0)
        return run

    def start_child(
        self, parent: Run, compiled: CompiledRun, *, requested_by: str, notes: str = ""
    ) -> Run:
        """Create a follow-up run of ``parent`` (same snapshot) and dispatch it."""
        run = Run(
            id=new_run_id(),
            plan=parent.plan,
            operation=compiled.operation.value,
            direction=compiled.direction.value,
            status=RunStatus.PENDING.value,
            parent_id=parent.id,
            requested_by=requested_by,
            content_hash=parent.content_hash,
            snapshot=parent.snapshot,
            compiled=compiled.to_json(),
            notes=notes,
        )
        message = f"{compiled.operation.value} of run {parent.id}"
        return self._create(run, compiled, requested_by, message)

    def start_compiled(
        self, bundle: BundleLike, compiled: CompiledRun, *, requested_by: str, message: str = ""
    ) -> Run:
        """Create and dispatch a run compiled outside the plan compiler (a protection run)."""
        run = Run(
            id=new_run_id(),
            plan=compiled.plan,
            operation=compiled.operation.value,
            direction=compiled.direction.value,
            status=RunStatus.PENDING.value,
            requested_by=requested_by,
            content_hash=bundle.content_hash,
            snapshot=bundle.snapshot(),
            compiled=compiled.to_json(),
            options=dict(compiled.options),
        )
        return self._create(run, compiled, requested_by, message)

    # -- moving through stages

    def enter(self, session: Session, after: AfterCommit, run: Run, index: int) -> None:
        """Enter stage ``index`` (or the first one after it with work left) of a running run.

        Each stage's records go to :func:`decide.enter_stage`, which passes over gates already
        approved and stages whose steps all succeeded (what makes resume continue exactly
        where the run stopped), sends a stage, or opens its gate.
        """
        compiled = self.compiled_runs.get(session, run.id)
        for stage in compiled.stages[index:]:
            repository.set_current_stage(session, run_id=run.id, stage=stage.index)
            if stage.kind is StageKind.GATE:
                gate = repository.approval_for(session, run_id=run.id, stage=stage.index)
                entry = decide.enter_stage(stage, gate=gate)
            else:
                steps = repository.step_facts(session, run_id=run.id, stage=stage.index)
                entry = decide.enter_stage(stage, steps)
            if isinstance(entry, decide.PassStage):
                continue
            if isinstance(entry, decide.OpenGate):
                assert stage.gate is not None
                gates.open_gate(
                    session, run, stage, entry.record, self.deadline(stage.gate.timeout)
                )
            else:
                repository.add_event(
                    session,
                    run_id=run.id,
                    event=EventKind.STAGE_STARTED,
                    message=f"stage {stage.index} {stage.name}: {len(stage.units)} task(s)",
                )
                after.append(partial(self._send, run.id, stage))
            return
        self.finish(session, after, run)

    def _send(self, run_id: str, stage: Stage) -> None:
        """Send a stage, then record it as sent (a crash in between is found by the watch)."""
        self.dispatcher.dispatch(run_id, stage)
        with self.db.session() as session:
            repository.mark_dispatched(session, run_id=run_id, stage=stage.index)

    def resend(self, run_id: str, *, entered_before: datetime | None = None) -> bool:
        """Send the current stage of a running run again if it was never recorded as sent.

        ``entered_before``: only if the stage was entered before then (the watch's wait, so
        a stage whose sender is still about to send it is left alone; None: at once). Stage
        dispatch is idempotent -- units skip succeeded steps and leave steps another delivery
        runs -- so a stage sent twice does each step once. Returns whether it was sent.
        """
        now = utcnow()
        wait = 0.0 if entered_before is None else max(0.0, (now - entered_before).total_seconds())
        with self.transaction() as (session, after):
            run = repository.get_run(session, run_id=run_id, with_inputs=False)
            compiled = self.compiled_runs.get(session, run.id)
            moves = decide.recover(run, compiled.stages, (), now, decide.Timing(wait, wait))
            if not any(isinstance(move, decide.ResendStage) for move in moves):
                return False
            index = run.current_stage
            # claim the resend (compare-and-set on the entry time): of several watches, one sends
            if not repository.claim_resend(
                session, run_id=run.id, stage=index, entered_before=entered_before
            ):
                return False
            repository.add_event(
                session,
                run_id=run.id,
                event=EventKind.STAGE_RESENT,
                message=f"stage {index} {compiled.stages[index].name} was committed but never "
                "sent (its sender stopped); sent again",
                data={"stage": index},
            )
            after.append(partial(self._send, run.id, compiled.stages[index]))
        return True

    def advance(self, run_id: str, stage: int, *, recovered: bool = False) -> Advance:
        """A stage's units have all reported: move the run as :func:`decide.after_stage` says.

        ``recovered``: the watch found the stage settled without its chord callback (recorded
        as an event). Returns what happened; the call is a compare-and-set, so a callback
        delivered twice, or late after the watch advanced the run, is :attr:`Advance.STALE`.
        """
        self.check_timeouts()
        with self.transaction() as (session, after):
            # the small columns only: the snapshot and compiled JSON are large and unchanging
            run = repository.get_run(session, run_id=run_id, with_inputs=False)
            compiled = self.compiled_runs.get(session, run.id)
            if stage >= len(compiled.stages):
                return Advance.STALE
            current = compiled.stages[stage]
            steps = repository.step_facts(session, run_id=run_id, stage=stage)
            move = decide.after_stage(run, current, steps)
            if isinstance(move, decide.Stale):
                return Advance.STALE
            if isinstance(move, decide.Wait):
                return Advance.NOT_READY
            # the compare-and-set first: of two callbacks (or a callback and the watch), the
            # one that loses writes nothing
            if isinstance(move, decide.NextStage) and not repository.move_stage(
                session, run_id=run_id, from_stage=stage, to_stage=stage + 1
            ):
                return Advance.STALE
            if recovered:
                repository.add_event(
                    session,
                    run_id=run_id,
                    event=EventKind.CALLBACK_RECOVERED,
                    message=f"stage {stage} {current.name}: every unit finished but the "
                    "stage's callback never came (its worker stopped); the run was moved on",
                    data={"stage": stage},
                )
            failed = [s for s in steps if decide.blocking(s)]
            repository.add_event(
                session,
                run_id=run_id,
                event=EventKind.STAGE_FINISHED,
                message=f"stage {stage} {current.name}: {len(failed)} failed step(s)",
            )
            if isinstance(move, decide.Fail):
                self.fail(session, after, run, move.error)
                return Advance.FAILED
            self.enter(session, after, run, stage + 1)
            return Advance.ADVANCED

    def finish(self, session: Session, after: AfterCommit, run: Run) -> None:
        """All stages done: succeeded, or failed if a group allowed to continue had failures."""
        # only failed steps can end a run as failed: a run of thousands of VMs is not read whole
        failed = repository.steps_of(
            session, run_id=run.id, status=StepStatus.FAILED, outcomes=False
        )
        ending = decide.finish(failed)
        if isinstance(ending, decide.Fail):
            self.fail(session, after, run, ending.error)
            return
        repository.set_run_status(session, run=run, status=RunStatus.SUCCEEDED)
        repository.add_event(session, run_id=run.id, event=EventKind.FINISHED, message="succeeded")
        self._on_finished(session, after, run)

    def fail(self, session: Session, after: AfterCommit, run: Run, error: str) -> None:
        """Stop the run as failed; a failed test run is compensated automatically."""
        repository.set_run_status(session, run=run, status=RunStatus.FAILED, error=error)
        repository.add_event(session, run_id=run.id, event=EventKind.FINISHED, message=error)
        self._on_finished(session, after, run)

    def _on_finished(self, session: Session, after: AfterCommit, run: Run) -> None:
        after.append(release_freed_memory)  # what the run's steps used, kept by the allocator
        follow = decide.after_finish(
            run.operation,
            RunStatus(run.status),
            has_parent=bool(run.parent_id),
            auto_compensate_test=self.settings.auto_compensate_test,
        )
        if follow is decide.FollowUp.CLOSE_PARENT:
            compensation.close_parent(session, run)
        elif follow is decide.FollowUp.COMPENSATE:
            after.append(partial(self._auto_compensate, run.id))

    def _auto_compensate(self, run_id: str) -> None:
        compensation.compensate(self, run_id, by="ferryman (automatic)")

    # -- operator actions

    def resume(self, run_id: str, *, by: str, skip_failed: bool = False) -> Run:
        """Re-run a failed run's failed steps and continue from where it stopped.

        ``skip_failed`` (``ferryman runs skip``): record the failed steps skipped instead of
        running them again, as when an operator checked that a script whose outcome was
        unknown did its work; the steps after them in their units still run.
        """
        with self.transaction() as (session, after):
            run = repository.get_run(session, run_id=run_id)
            if run.status != RunStatus.FAILED:
                raise RunStateError(f"run {run.id} is {run.status}; only a failed run resumes")
            steps = repository.steps_of(session, run_id=run.id)
            start = decide.resume_from(run.current_stage, steps)
            skipped = 0
            if skip_failed:
                for step in steps:
                    if step.status == StepStatus.FAILED:
                        error = f"skipped by {by} after: {step.error}"
                        repository.set_step_status(
                            session, step=step, status=StepStatus.SKIPPED, error=error
                        )
                        skipped += 1
            rerun = repository.reset_steps(
                session, run_id=run.id, statuses=[StepStatus.FAILED, StepStatus.CANCELLED]
            )
            repository.set_run_status(session, run=run, status=RunStatus.RUNNING, error="")
            repository.add_event(
                session,
                run_id=run.id,
                event=EventKind.RESUMED,
                actor=by,
                message=f"resumed at stage {start}; {rerun} step(s) to re-run"
                + (f", {skipped} failed step(s) skipped" if skip_failed else ""),
            )
            self.enter(session, after, run, start)
        return run

    def cancel(self, run_id: str, *, by: str, reason: str = "") -> Run:
        """Stop a run: nothing new is dispatched; steps already running finish first."""
        with self.transaction() as (session, _after):
            run = repository.get_run(session, run_id=run_id)
            if RunStatus(run.status) in TERMINAL_RUN:
                raise RunStateError(f"run {run.id} is already {run.status}")
            repository.set_run_status(
                session, run=run, status=RunStatus.CANCELLED, error=reason or f"cancelled by {by}"
            )
            for step in repository.steps_of(session, run_id=run.id):
                if step.status == StepStatus.PENDING:
                    repository.set_step_status(session, step=step, status=StepStatus.CANCELLED)
            gates.cancel_open(session, run)
            repository.add_event(
                session, run_id=run.id, event=EventKind.CANCELLED, actor=by, message=reason
            )
        return run

    def approve(self, run_id: str, *, by: str, comment: str = "", key: str | None = None) -> Run:
        """An operator approves the open gate: the run continues. ``key``: the request's
        idempotency key, kept with the decision's event so a retried request finds it."""
        return self._decide_gate(run_id, approved=True, by=by, comment=comment, key=key)

    def reject(self, run_id: str, *, by: str, comment: str = "", key: str | None = None) -> Run:
        """An operator rejects the open gate: the run fails (resume asks again)."""
        return self._decide_gate(run_id, approved=False, by=by, comment=comment, key=key)

    def _decide_gate(
        self, run_id: str, *, approved: bool, by: str, comment: str, key: str | None
    ) -> Run:
        if not by:
            raise RunStateError("say who decides: an approval records the operator's name (--by)")
        self.check_timeouts()
        with self.transaction() as (session, after):
            run = repository.get_run(session, run_id=run_id)
            approval = repository.approval_for(session, run_id=run.id, stage=run.current_stage)
            if run.status != RunStatus.WAITING or approval is None:
                raise RunStateError(f"run {run.id} is {run.status}, not waiting at a gate")
            status = gates.record_decision(
                session, approval, approved=approved, by=by, comment=comment, key=key
            )
            reason = f"gate {approval.name} rejected by {by}: {comment}"
            self._after_gate(
                session,
                after,
                run,
                decide.after_gate(approval.stage, status, approval.on_timeout, reason),
            )
        return run

    def _after_gate(
        self, session: Session, after: AfterCommit, run: Run, move: decide.NextStage | decide.Fail
    ) -> None:
        if isinstance(move, decide.Fail):
            self.fail(session, after, run, move.error)
            return
        repository.set_run_status(session, run=run, status=RunStatus.RUNNING)
        repository.move_stage(
            session, run_id=run.id, from_stage=move.stage, to_stage=move.stage + 1
        )
        self.enter(session, after, run, move.stage + 1)

    def check_timeouts(self) -> list[str]:
        """Apply the ``on_timeout`` policy of every overdue open gate; returns the runs affected."""
        affected: list[str] = []
        with self.db.session() as session:
            overdue = gates.overdue(session)
        for approval in overdue:
            try:
                if self._time_out(approval):
                    affected.append(approval.run_id)
            except Conflict:
                # Every worker's watch and every stage callback apply timeouts: another one
                # decided this gate (or moved its run) between the read and the write, and its
                # transaction applied the policy. Nothing of this one was written; the other
                # overdue gates, of other runs, still get theirs.
                log.info("the gate of run %s was timed out by another process", approval.run_id)
        return affected

    def _time_out(self, approval: Approval) -> bool:
        """Apply one overdue gate's policy in one transaction; False if decided meanwhile."""
        with self.transaction() as (session, after):
            run = repository.get_run(session, run_id=approval.run_id)
            fresh = repository.approval_for(session, run_id=run.id, stage=approval.stage)
            if fresh is None or fresh.status != ApprovalStatus.PENDING:
                return False  # decided meanwhile
            gates.record_timeout(session, fresh)
            if run.status == RunStatus.WAITING and run.current_stage == fresh.stage:
                move = decide.after_gate(
                    fresh.stage,
                    ApprovalStatus.TIMED_OUT,
                    fresh.on_timeout,
                    f"gate {fresh.name} timed out",
                )
                self._after_gate(session, after, run, move)
        return True

    def deadline(self, timeout: float | None) -> Any:
        """When a gate opened now with ``timeout`` seconds expires (None: never)."""
        return None if timeout is None else utcnow() + timedelta(seconds=timeout)
