"""The run lifecycle: create a run, enter its stages one by one, finish it.

The engine holds no state of its own: the store is the truth, and every decision is a
compare-and-set on the run's row, so the callback of a stage (``ferryman.engine.advance``) may
be delivered twice, or race an operator's approval, without dispatching a stage twice.

Dispatching is a collaborator (:class:`Dispatcher`): the Celery one sends a stage as a chord
whose callback calls :meth:`Engine.advance`; tests may pass one that records. Dispatches happen
only after the transaction that decided them has committed, so a worker never reads a run that
is not there yet.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Protocol

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from plans.errors import FerrymanError
from plans.model import Direction, Fabric, FailoverType, RecoveryPlan
from workflows import gates
from workflows.cache import CompiledRuns
from workflows.compiler import (
    CompiledRun,
    RunOperation,
    Stage,
    StageKind,
    compile_run,
)
from workflows.events import EventKind
from workflows.settings import Settings
from workflows.statuses import (
    DONE_STEP,
    SETTLED_STEP,
    TERMINAL_RUN,
    RunStatus,
    StepStatus,
)
from workflows.steps import interrupted_script, reruns_after_a_crash
from workflows.store import Database, Run, Step, repository, utcnow


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


class RunStateError(FerrymanError):
    """The operation does not fit the run's current status; the message says what does."""


AfterCommit = list[Callable[[], None]]


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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
                "kind": spec.kind.value,
                "on_error": spec.on_error,
                "status": StepStatus.PENDING.value,
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

        Gates already approved and stages whose steps all succeeded are passed over, which is
        what makes resume continue exactly where the run stopped.
        """
        compiled = self.compiled_runs.get(session, run.id)
        while index < len(compiled.stages):
            stage = compiled.stages[index]
            repository.set_current_stage(session, run_id=run.id, stage=index)
            if stage.kind is StageKind.GATE:
                if gates.open_gate(self, session, run, stage):
                    return
            else:
                steps = repository.steps_of(session, run_id=run.id, stage=index)
                if any(StepStatus(step.status) not in DONE_STEP for step in steps):
                    repository.add_event(
                        session,
                        run_id=run.id,
                        event=EventKind.STAGE_STARTED,
                        message=f"stage {index} {stage.name}: {len(stage.units)} task(s)",
                    )
                    after.append(partial(self._send, run.id, stage))
                    return
            index += 1
        self.finish(session, after, run)

    def _send(self, run_id: str, stage: Stage) -> None:
        """Send a stage, then record it as sent (a crash in between is found by the sweep)."""
        self.dispatcher.dispatch(run_id, stage)
        with self.db.session() as session:
            repository.mark_dispatched(session, run_id=run_id, stage=stage.index)

    def resend(self, run_id: str, *, entered_before: datetime | None = None) -> bool:
        """Send the current stage of a running run again if it was never recorded as sent.

        ``entered_before``: only if the stage was entered before then (the sweep's grace, so
        a stage whose sender is still about to send it is left alone). Stage dispatch is
        idempotent -- units skip succeeded steps and leave steps another delivery runs -- so a
        stage sent twice does each step once. Returns whether it was sent.
        """
        with self.transaction() as (session, after):
            run = repository.get_run(session, run_id=run_id)
            compiled = CompiledRun.from_json(run.compiled)
            index = run.current_stage
            behind = run.dispatched_stage is None or run.dispatched_stage != index
            if run.status != RunStatus.RUNNING or not behind or index >= len(compiled.stages):
                return False
            if compiled.stages[index].kind is not StageKind.UNITS:
                return False  # a gate is opened in the transaction that enters it
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
            )
            after.append(partial(self._send, run.id, compiled.stages[index]))
        return True

    def resend_lost_stages(self) -> list[str]:
        """Send again every stage left unsent longer than ``settings.dispatch_grace``."""
        cutoff = utcnow() - timedelta(seconds=self.settings.dispatch_grace)
        with self.db.session() as session:
            candidates = [
                r.id for r in repository.undispatched_runs(session, entered_before=cutoff)
            ]
        return [run_id for run_id in candidates if self.resend(run_id, entered_before=cutoff)]

    def advance_settled_stages(self) -> list[str]:
        """Advance running runs whose sent stage has settled but whose callback never came.

        A chord's callback can be lost when a worker dies around its header's last task; the
        store still shows every unit finished. Only stages entered longer than
        ``settings.dispatch_grace`` ago are looked at; :meth:`advance` is a compare-and-set,
        so a late real callback finds the run moved on and does nothing.
        """
        cutoff = utcnow() - timedelta(seconds=self.settings.dispatch_grace)
        with self.db.session() as session:
            candidates = [
                (run_id, stage)
                for run_id, stage in repository.sent_runs(session, entered_before=cutoff)
                if stage_settled(repository.steps_of(session, run_id=run_id, stage=stage))
            ]
        return [
            run_id
            for run_id, stage in candidates
            if self.advance(run_id, stage) in ("advanced", "failed")
        ]

    def take_over_orphaned_steps(self) -> list[str]:
        """Hand every running step whose worker stopped beating to a fresh delivery.

        A worker refreshes the heartbeat of the steps it runs every ``settings.step_heartbeat``
        seconds. A step whose heartbeat is older than ``settings.step_lease`` lost its worker
        and, with it, possibly its message (a delivery that never comes back). Such a step is
        set back to pending and its unit is sent again on its own, linked to ``advance``: the
        unit skips its succeeded steps and the executors are idempotent, so the step is done
        once. A script is not run again blindly: it fails for an operator to check, as when
        its own message comes back (unless the plan says ``rerun_on_redelivery: true``). If
        the old delivery does come back later, it finds the step held by the new one and
        leaves it. Returns the runs touched.
        """
        cutoff = utcnow() - timedelta(seconds=self.settings.step_lease)
        with self.db.session() as session:
            orphans = repository.orphaned_steps(session, beat_before=cutoff)
        return sorted({step.run_id for step in orphans if self._take_over(step, cutoff)})

    def _take_over(self, orphan: Step, cutoff: datetime) -> bool:
        with self.transaction() as (session, after):
            compiled = self.compiled_runs.get(session, orphan.run_id)
            stage = compiled.stages[orphan.stage]
            unit = next((u for u in stage.units if u.key == orphan.unit), None)
            spec = unit and next((s for s in unit.steps if s.key == orphan.key), None)
            if unit is None or spec is None:
                return False  # not a step of this compiled run: nothing to send
            since = orphan.heartbeat_at or orphan.started_at
            silent = (
                f"its worker has not been heard from since {since:%H:%M:%S} UTC"
                if since
                else "its worker was never heard from"
            )
            then: Callable[[], Any]
            if reruns_after_a_crash(spec):
                status, message = (
                    StepStatus.PENDING,
                    f"{orphan.key}: {silent}; its unit was sent again",
                )
                fields: dict[str, Any] = {"task_id": None, "error": ""}
                then = partial(
                    self.dispatcher.dispatch, orphan.run_id, replace(stage, units=(unit,))
                )
            else:
                interrupted = interrupted_script(orphan.run_id, spec, orphan.attempts)
                status, message = StepStatus.FAILED, f"{orphan.key}: {silent}; {interrupted}"
                fields = {"error": message}
                then = partial(self.advance, orphan.run_id, orphan.stage)
            if not repository.take_over_step(
                session, step=orphan, beat_before=cutoff, status=status, **fields
            ):
                return False  # its worker beat meanwhile, or another watch took it
            after.append(then)
            repository.add_event(
                session,
                run_id=orphan.run_id,
                event=EventKind.STEP_TAKEN_OVER,
                message=message,
                data={"step": orphan.key, "task_id": orphan.task_id},
            )
        return True

    def resend_idle_units(self) -> list[str]:
        """Send again the units of a sent stage that wait with nothing happening.

        A unit's message can vanish before any of its steps starts (with the worker that
        had taken it, or held as a retry by a worker that died: the broker gives such
        messages back only after the visibility timeout, hours by default). When no step of
        the stage has started, finished or beaten for ``settings.step_lease`` and some units
        still have a pending step and none running, those units are sent again, at most once
        per lease (the stage's entry time is moved on, compare-and-set). A unit whose message
        was only slow finds its steps taken by the first delivery and leaves them.
        """
        idle_before = utcnow() - timedelta(seconds=self.settings.step_lease)
        found: list[tuple[str, int, datetime, list[str]]] = []
        with self.db.session() as session:
            for run_id, index, entered in repository.sent_stages(
                session, entered_before=idle_before
            ):
                steps = repository.steps_of(session, run_id=run_id, stage=index)
                if any(last_sign_of_life(step) >= idle_before for step in steps):
                    continue  # something of the stage is alive: its units are not lost
                waiting = waiting_units(steps)
                if waiting:
                    found.append((run_id, index, entered, waiting))
        return [run_id for run_id, *rest in found if self._resend_units(run_id, *rest)]

    def _resend_units(self, run_id: str, index: int, entered: datetime, keys: list[str]) -> bool:
        with self.transaction() as (session, after):
            if not repository.claim_stage(session, run_id=run_id, stage=index, entered=entered):
                return False  # the run moved on, or another watch sent them
            stage = self.compiled_runs.get(session, run_id).stages[index]
            units = tuple(unit for unit in stage.units if unit.key in keys)
            repository.add_event(
                session,
                run_id=run_id,
                event=EventKind.UNITS_RESENT,
                message=f"stage {index} {stage.name}: nothing happened for "
                f"{self.settings.step_lease:g} s while {', '.join(keys)} waited to start "
                "(their messages may have been lost with a worker); sent again",
                data={"units": keys},
            )
            after.append(partial(self.dispatcher.dispatch, run_id, replace(stage, units=units)))
        return True

    def advance(self, run_id: str, stage: int) -> str:
        """A stage's units have all reported: decide what comes next.

        Returns what happened: ``stale`` (the run moved on or stopped; nothing to do),
        ``not_ready`` (steps of the stage still run; call again later), ``failed`` or
        ``advanced``.
        """
        self.check_timeouts()
        with self.transaction() as (session, after):
            # the small columns only: the snapshot and compiled JSON are large and unchanging
            run = repository.get_run(session, run_id=run_id, with_inputs=False)
            if run.status != RunStatus.RUNNING or run.current_stage != stage:
                return "stale"
            steps = repository.steps_of(session, run_id=run_id, stage=stage)
            if not stage_settled(steps):
                return "not_ready"
            compiled = self.compiled_runs.get(session, run.id)
            failed = [s for s in steps if blocking(s)]
            repository.add_event(
                session,
                run_id=run_id,
                event=EventKind.STAGE_FINISHED,
                message=f"stage {stage} {compiled.stages[stage].name}: "
                f"{len(failed)} failed step(s)",
            )
            if failed and compiled.stages[stage].on_failure != "continue":
                self.fail(session, after, run, failure_summary(failed))
                return "failed"
            if not repository.move_stage(
                session, run_id=run_id, from_stage=stage, to_stage=stage + 1
            ):
                return "stale"
            self.enter(session, after, run, stage + 1)
            return "advanced"

    def finish(self, session: Session, after: AfterCommit, run: Run) -> None:
        """All stages done: succeeded, or failed if a group allowed to continue had failures."""
        failed = [s for s in repository.steps_of(session, run_id=run.id) if blocking(s)]
        if failed:
            self.fail(session, after, run, failure_summary(failed))
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
        from workflows import compensation  # the modules refer to each other by design

        if run.operation == RunOperation.COMPENSATE and run.parent_id:
            compensation.close_parent(session, run)
        elif (
            run.operation == RunOperation.TEST
            and run.status == RunStatus.FAILED
            and self.settings.auto_compensate_test
        ):
            # a failed test must not leave test VMs behind; real failovers are never rolled
            # back automatically (that can make a disaster worse)
            after.append(partial(self._auto_compensate, run.id))

    def _auto_compensate(self, run_id: str) -> None:
        from workflows import compensation

        compensation.compensate(self, run_id, by="ferryman (automatic)")

    # -- operator actions

    def resume(self, run_id: str, *, by: str) -> Run:
        """Re-run a failed run's failed steps and continue from where it stopped."""
        with self.transaction() as (session, after):
            run = repository.get_run(session, run_id=run_id)
            if run.status != RunStatus.FAILED:
                raise RunStateError(f"run {run.id} is {run.status}; only a failed run resumes")
            failed_stages = [
                step.stage
                for step in repository.steps_of(session, run_id=run.id)
                if step.status in (StepStatus.FAILED, StepStatus.CANCELLED)
            ]
            repository.reset_steps(
                session, run_id=run.id, statuses=[StepStatus.FAILED, StepStatus.CANCELLED]
            )
            start = min([run.current_stage, *failed_stages])
            repository.set_run_status(session, run=run, status=RunStatus.RUNNING, error="")
            repository.add_event(
                session,
                run_id=run.id,
                event=EventKind.RESUMED,
                actor=by,
                message=f"resumed at stage {start}; {len(failed_stages)} step(s) to re-run",
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

    def approve(self, run_id: str, *, by: str, comment: str = "") -> Run:
        """An operator approves the open gate: the run continues."""
        return gates.decide(self, run_id, approved=True, by=by, comment=comment)

    def reject(self, run_id: str, *, by: str, comment: str = "") -> Run:
        """An operator rejects the open gate: the run fails (resume asks again)."""
        return gates.decide(self, run_id, approved=False, by=by, comment=comment)

    def check_timeouts(self) -> list[str]:
        """Apply the timeout policy of every overdue gate; returns the runs affected."""
        return gates.check_timeouts(self)

    def deadline(self, timeout: float | None) -> Any:
        """When a gate opened now with ``timeout`` seconds expires (None: never)."""
        return None if timeout is None else utcnow() + timedelta(seconds=timeout)


def stage_settled(steps: list[Step]) -> bool:
    """Every unit of the stage has finished: all its steps settled, or it stopped at a failure.

    Steps after a unit's failed step stay pending (resume runs them), so pending alone does
    not mean "still running".
    """
    for unit_steps in by_unit(steps).values():
        for step in unit_steps:
            status = StepStatus(step.status)
            if blocking(step) or status is StepStatus.CANCELLED:
                break  # the unit stopped here
            if status not in SETTLED_STEP:
                return False
    return True


def by_unit(steps: list[Step]) -> dict[str, list[Step]]:
    """A stage's steps grouped by unit, each unit's in compiled order."""
    units: dict[str, list[Step]] = {}
    for step in sorted(steps, key=lambda s: s.seq):
        units.setdefault(step.unit, []).append(step)
    return units


def last_sign_of_life(step: Step) -> datetime:
    """When the step last showed activity: started, beat or finished (the epoch if never)."""
    moments = [m for m in (step.heartbeat_at, step.started_at, step.finished_at) if m]
    return max(moments, default=EPOCH)


def waiting_units(steps: list[Step]) -> list[str]:
    """Units whose next step is pending, with none of theirs running (see ``stage_settled``)."""
    waiting = []
    for key, unit_steps in by_unit(steps).items():
        for step in unit_steps:
            status = StepStatus(step.status)
            if blocking(step) or status in (StepStatus.CANCELLED, StepStatus.RUNNING):
                break  # stopped, or in a delivery's hands (see take_over_orphaned_steps)
            if status is StepStatus.PENDING:
                waiting.append(key)
                break
    return waiting


def blocking(step: Step) -> bool:
    """A failed step that fails its stage (not one allowed to fail)."""
    return step.status == StepStatus.FAILED and step.on_error != "continue"


def failure_summary(steps: list[Step]) -> str:
    """One line per failed step (at most five), for the run's error."""
    lines = [f"{step.key}: {step.error or 'failed'}" for step in steps[:5]]
    if len(steps) > 5:
        lines.append(f"... and {len(steps) - 5} more failed step(s)")
    return "\n".join(lines)
