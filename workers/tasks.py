"""The Celery tasks: short shells around the store and the step executors.

``ferryman.vm.steps`` and ``ferryman.script.run`` run a unit's steps in order: skip steps that
already succeeded (a redelivered message), mark the step running, call the executor, record the
outcome and its undo record. A step found running by another delivery (the stage was sent
twice) is left to it; one found running by an earlier delivery of the same message (its worker
died) runs again, except a script, which fails for an operator to check (``ferryman.script.run``).

Retrying is one policy applied in one place, :class:`Retries` (every task's base class,
:class:`FerrymanTask`, carries it): :func:`workflows.decide.retry` reads the error's type
(``retryable``; ``outcome_unknown`` for a failure after a request was sent, retried only by a
step that can read its effect back) and the task's policy (exponential backoff with jitter, a
bounded count); Celery's retry then runs the task again. A step's permanent error or spent
retries are recorded as its failure, and the task *returns* a status dict instead of raising,
so the stage's chord always completes and ``ferryman.engine.advance`` decides what happens next.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from celery import Celery, Task
from celery.exceptions import Retry

from plans.errors import FerrymanError, TransientError
from workers.errors import retryable
from workers.heartbeat import Heartbeat
from workers.progress import StepProgress
from workflows import decide
from workflows.compiler import CompiledRun
from workflows.decide import GiveUp, RetryLater, StepVerdict, UnitMove
from workflows.engine import Advance, Engine
from workflows.events import EventKind
from workflows.inputs import undo_json
from workflows.statuses import StepStatus
from workflows.steps import (
    TASK_ADVANCE,
    TASK_DRILLS,
    TASK_SCRIPT,
    TASK_VM,
    HostRef,
    StepOutcome,
    StepSpec,
    TaskUnit,
    interrupted_script,
    reruns_after_a_crash,
)
from workflows.store import repository, steprows, transient_database_error
from workflows.store.database import Statements
from workflows.store.repository import Conflict
from workflows.store.steprows import StepRow

log = logging.getLogger(__name__)


class StoreUnavailable(TransientError):
    """The store failed under a task (locked, connection lost): worth another attempt."""


class StageNotSettled(TransientError):
    """A stage's callback came while some of its steps still run: ask again shortly."""


class Retryable(Protocol):
    """What :class:`Retries` needs of a bound task (Celery's ``Task`` has it)."""

    @property
    def request(self) -> Any:
        """The delivery's request (``retries``: how many times it was retried)."""

    def retry(self, **options: Any) -> Exception:
        """Celery's retry: the exception to raise to run the task again later."""


Before = Callable[[RetryLater], bool]


@dataclass(frozen=True)
class Retries:
    """The one retry policy of Ferryman's tasks, applied here only.

    :meth:`apply` asks :func:`workflows.decide.retry` whether an error is worth another
    attempt (its type says so) with this ``policy`` (the task's option), and either raises
    Celery's retry or says it gave up.
    """

    policy: decide.Backoff

    def apply(
        self,
        task: Retryable,
        error: BaseException,
        *,
        rereadable: bool = True,
        before: Before | None = None,
    ) -> GiveUp | None:
        """Raise Celery's retry for ``error`` if the policy allows another attempt, else
        return how it gave up.

        ``rereadable``: the failed work can read its effect back, so an outcome-unknown error
        may be retried. ``before`` records the coming retry first; when it returns False (the
        work is someone else's now) nothing is retried and None is returned.
        """
        if transient_database_error(error):
            error = StoreUnavailable(f"{type(error).__name__}: {first_line(error)}")
        retries = int(getattr(task.request, "retries", 0) or 0)
        verdict = decide.retry(self.policy, error, retries, random.random(), rereadable=rereadable)
        if isinstance(verdict, GiveUp):
            return verdict
        if before is not None and not before(verdict):
            return None
        raise task.retry(
            countdown=verdict.delay, exc=error, max_retries=self.policy.max_retries
        ) from error


class FerrymanTask(Task):
    """The base of Ferryman's tasks: an error escaping the task's body goes through its
    ``retries`` option (:class:`Retries`), then, once given up, is raised."""

    retries: Retries | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # the worker's tracer has already pushed this delivery's request: run the body as is
        try:
            return self.run(*args, **kwargs)
        except Retry:
            raise
        except Exception as exc:
            if self.retries is not None:
                self.retries.apply(self, exc)
            raise


class Executor(Protocol):
    """What tasks need of ``workers.executors`` (tests pass a fake with the same shape)."""

    def context(
        self,
        run_id: str,
        failover_type: str,
        direction: str,
        hosts: dict[str, HostRef],
        prior: dict[str, dict[str, Any]] | None = None,
        *,
        attempt: int = 1,
    ) -> Any:
        """Build the executor's context for one step (``attempt``: how many times the step
        has been started, this time included)."""

    def run_step(self, ctx: Any, spec: StepSpec) -> StepOutcome:
        """Execute one step idempotently."""


@dataclass
class ConfiguredExecutor:
    """The real executors, with options for every context (poll interval, factories)."""

    context_options: dict[str, Any]

    def context(
        self,
        run_id: str,
        failover_type: str,
        direction: str,
        hosts: dict[str, HostRef],
        prior: dict[str, dict[str, Any]] | None = None,
        *,
        attempt: int = 1,
    ) -> Any:
        """Build a ``workers.executors.StepContext`` with the configured options."""
        from workers import executors

        return executors.context(
            run_id,
            failover_type,
            direction,
            hosts,
            prior,
            attempt=attempt,
            **self.context_options,
        )

    def run_step(self, ctx: Any, spec: StepSpec) -> StepOutcome:
        """Execute one step through the executor registry."""
        from workers import executors

        return executors.run_step(ctx, spec)


def default_executor(**context_options: Any) -> Executor:
    """The real executors, with options for every step's context.

    Imported here, in the caller's thread, rather than by the first tasks: CPython 3.11.7
    keeps the AST recursion depth in a process-wide counter, and a dozen worker threads
    importing (compiling) pypsrp and dnspython at once can corrupt it.
    """
    import workers.executors  # noqa: F401

    return ConfiguredExecutor(context_options)


def task_id(task: Task) -> str | None:
    """The Celery id of this delivery (the same for a message redelivered or retried)."""
    value = getattr(task.request, "id", None)
    return str(value) if value else None


def first_line(error: BaseException) -> str:
    """The first line of an error's message, at most 200 characters."""
    return (str(error).splitlines() or [""])[0][:200]


def describe_failure(spec: StepSpec, exc: BaseException) -> str:
    """A failure message naming the step, VM, host and cmdlet, plus the executor's own words."""
    where = f"on {spec.host}" if spec.host else ""
    subject = f"VM {spec.vm}" if spec.vm else "the run"
    cmdlet = getattr(exc, "cmdlet", "")
    error_id = getattr(exc, "fully_qualified_error_id", "")
    detail = f" [{cmdlet}{': ' + error_id if error_id else ''}]" if cmdlet else ""
    kind = "transient" if isinstance(exc, TransientError) else "permanent"
    if isinstance(exc, TransientError) and not retryable(exc):
        kind = "not retried"
    if not isinstance(exc, FerrymanError):
        kind = f"unexpected {type(exc).__name__}"
    return f"{spec.kind.value} of {subject} {where}{detail} failed ({kind}): {exc}".replace(
        "  ", " "
    )


@dataclass
class Done:
    """A step this delivery set running; once its executor returns, the outcome to record."""

    step: StepRow
    delivery: str | None
    prior: dict[str, dict[str, Any]]  # the VM's earlier results, as the step's context saw them
    rows: dict[str, StepRow]  # the rows read with it (the unit's next steps among them)
    outcome: StepOutcome = field(default_factory=StepOutcome)


TAKEN_OVER = "step %s of run %s was taken over by another delivery meanwhile; leaving it to it"


@dataclass
class UnitRunner:
    """Runs one unit's steps against the store; one instance per app."""

    engine: Engine
    executor: Executor
    heartbeat: Heartbeat = field(init=False)
    retries: Retries = field(init=False)

    def __post_init__(self) -> None:
        self.heartbeat = Heartbeat(self.engine.db, self.engine.settings.step_heartbeat)
        self.retries = Retries(self.engine.settings.retry)

    def run(self, task: Task, *, run_id: str, unit: dict[str, Any]) -> dict[str, Any]:
        """Execute the unit (see the module docstring); returns a status dict."""
        parsed = TaskUnit.from_json(unit)
        with self.engine.db.session() as session:
            compiled = self.engine.compiled_runs.get(session, run_id)  # decoded once per run
        failover_type = str(compiled.options.get("failover_type") or compiled.operation.value)
        summary: dict[str, Any] = {"run_id": run_id, "unit": parsed.key, "status": "succeeded"}
        done: Done | None = None
        for spec in parsed.steps:
            verdict, done = self._step(task, run_id, spec, compiled, failover_type, done)
            move = decide.after_step(verdict, spec.on_error)
            if move is UnitMove.CANCEL_REST:
                summary["status"] = verdict.value
                self._cancel_rest(run_id, parsed)
                break
            if move is UnitMove.STOP:
                summary["status"] = verdict.value
                if verdict is not StepVerdict.DUPLICATE:  # the other delivery carries on
                    summary["step"] = spec.key
                break
        if done is not None:
            with self.engine.db.statements() as statements:
                if self._record(statements, done) is None:
                    summary["status"] = "duplicate"
        return summary

    def _record(
        self,
        statements: Statements,
        done: Done,
        *,
        then: StepRow | None = None,
        delivery: str | None = None,
    ) -> bool | None:
        """Write a step's success (only if this delivery still holds it) and start the unit's
        next step ``then`` for ``delivery``; whether it started, None if this delivery no
        longer holds the step (nothing is written).

        A step's success is written just as the unit's next step starts (or on its own after
        the last one), and nothing runs on a host in between, so a crash leaves the same
        states as writing it at once.
        """
        try:
            # ``step`` as this delivery set it running: the UPDATE checks that it still is,
            # and still this delivery's (a step taken over meanwhile is the other's)
            return steprows.succeed_then_start(
                statements,
                step=done.step,
                owner=done.delivery,
                then=then,
                task_id=delivery,
                result=done.outcome.result,
                undo=undo_json(done.outcome.undo),
                changed=done.outcome.changed,
                error="",
            )
        except Conflict:
            log.warning(TAKEN_OVER, done.step.key, done.step.run_id)
            return None

    def _step(
        self,
        task: Task,
        run_id: str,
        spec: StepSpec,
        compiled: CompiledRun,
        failover_type: str,
        done: Done | None,
    ) -> tuple[StepVerdict, Done | None]:
        """Run one step; returns the verdict and, on success, the outcome still to record."""
        verdict, done = self._start(task, run_id, spec, done)
        if verdict is not StepVerdict.START or done is None:
            return verdict, None
        step, delivery, prior = done.step, done.delivery, done.prior
        try:
            with (
                self.heartbeat.holding(step.id or 0, delivery),
                StepProgress(self.engine.db, step, delivery) as progress,
            ):
                ctx = self.executor.context(
                    run_id,
                    failover_type,
                    compiled.direction.value,
                    compiled.hosts,
                    prior,
                    attempt=step.attempts,
                )
                progress.attach(ctx)  # a long step's figures go to its record, throttled
                outcome = self.executor.run_step(ctx, spec)
        except Retry:
            raise
        except Exception as exc:
            # a script cannot read back what it did: an outcome-unknown error is not retried
            rereadable = reruns_after_a_crash(spec)
            error = exc

            def pending(retry: RetryLater) -> bool:
                return self._retrying(run_id, spec, error, retry, owner=delivery)

            gave_up = self.retries.apply(task, exc, rereadable=rereadable, before=pending)
            if gave_up is None:
                return StepVerdict.DUPLICATE, None  # another delivery holds the step now
            message = describe_failure(spec, exc)
            if gave_up.exhausted:
                message += f"; gave up after {gave_up.attempts} attempts"
            return self._failed(run_id, spec, message, exc, owner=delivery), None
        done.outcome = outcome
        return StepVerdict.SUCCEEDED, done

    def _start(
        self, task: Task, run_id: str, spec: StepSpec, done: Done | None
    ) -> tuple[StepVerdict, Done | None]:
        """Record the previous step's success, read the step, start it: each a compare-and-set
        statement committed on its own (:meth:`Database.statements`).

        Returns :attr:`StepVerdict.START` with the step as this delivery set it running, or
        the verdict of :func:`decide.start_step` that stops it (``SUCCEEDED`` for a step done
        before, ``DUPLICATE``, ``CANCELLED``...; a script interrupted by its worker's death is
        recorded ``FAILED``).
        """
        delivery = task_id(task)
        # each statement here is a compare-and-set that stands on its own (a crash between
        # them leaves states a crash before or after either leaves), so they commit one by
        # one, without BEGIN and COMMIT round trips around them
        with self.engine.db.statements() as statements:
            if done is not None:
                # the unit's next step, pending when the unit's first step read it: start it
                # with the previous step's success, checking the run still runs (else read
                # all again)
                row = done.rows.get(spec.key)
                started = self._record(statements, done, then=row, delivery=delivery)
                if started is None:
                    return StepVerdict.DUPLICATE, None
                if started and row is not None:
                    prior = {**done.prior, done.step.kind: done.outcome.result}
                    return StepVerdict.START, Done(row, delivery, prior, done.rows)
            # one narrow query: the run's status (not its large row), the step, the VM's
            # results; and on PostgreSQL in the same statement the step's start when it is
            # pending and its run running (a first start, or a retry's)
            read, started = steprows.read_and_start(
                statements, run_id=run_id, key=spec.key, vm=spec.vm, task_id=delivery
            )
            step = read.step
            if started:
                return StepVerdict.START, Done(step, delivery, read.prior, read.rows)
            verdict = decide.start_step(
                read.run_status,
                StepStatus(step.status),
                holder=step.task_id,
                delivery=delivery,
                reruns=reruns_after_a_crash(spec),
            )
            if verdict is StepVerdict.START:
                try:
                    # committed before the executor runs: attempts counts every start
                    steprows.move_step(
                        statements, step=step, status=StepStatus.RUNNING, task_id=delivery
                    )
                except Conflict:
                    # another delivery of a duplicate stage took it
                    return StepVerdict.DUPLICATE, None
        if verdict is StepVerdict.INTERRUPTED:
            # an earlier delivery of this message started the script and its worker died
            interrupted = interrupted_script(run_id, spec, step.attempts)
            return self._failed(run_id, spec, interrupted, None, owner=step.task_id), None
        if verdict is not StepVerdict.START:
            return verdict, None
        return StepVerdict.START, Done(step, delivery, read.prior, read.rows)

    def _retrying(
        self,
        run_id: str,
        spec: StepSpec,
        exc: Exception,
        retry: RetryLater,
        *,
        owner: str | None,
    ) -> bool:
        """Record the step pending until its retry; False if another delivery holds it now."""
        failed = retry.attempt - 1
        message = (
            f"attempt {failed} failed: {describe_failure(spec, exc)}; retry in {retry.delay:.2f}s"
        )
        with self.engine.db.session() as session:
            step = repository.get_step(session, run_id=run_id, key=spec.key)
            try:
                repository.set_step_status(
                    session, step=step, status=StepStatus.PENDING, owner=owner, error=message
                )
            except Conflict:
                log.warning(TAKEN_OVER, spec.key, run_id)
                return False
            repository.add_event(
                session, run_id=run_id, event=EventKind.STEP_RETRY, message=f"{spec.key}: {message}"
            )
        return True

    def _failed(
        self,
        run_id: str,
        spec: StepSpec,
        message: str,
        exc: BaseException | None,
        *,
        owner: str | None,
    ) -> StepVerdict:
        """Record the step failed; ``DUPLICATE`` instead if another delivery holds it now."""
        if exc is not None and not isinstance(exc, FerrymanError):
            log.exception("step %s of run %s raised unexpectedly", spec.key, run_id)
        undo = getattr(exc, "undo", None)
        with self.engine.db.session() as session:
            step = repository.get_step(session, run_id=run_id, key=spec.key)
            try:
                repository.set_step_status(
                    session,
                    step=step,
                    status=StepStatus.FAILED,
                    owner=owner,
                    error=message,
                    undo=undo_json(undo),
                )
            except Conflict:
                log.warning(TAKEN_OVER, spec.key, run_id)
                return StepVerdict.DUPLICATE
            repository.add_event(
                session,
                run_id=run_id,
                event=EventKind.STEP_FAILED,
                message=f"{spec.key}: {message}",
                data={"on_error": spec.on_error},
            )
        return StepVerdict.FAILED

    def _cancel_rest(self, run_id: str, unit: TaskUnit) -> None:
        with self.engine.db.session() as session:
            for spec in unit.steps:
                step = repository.get_step(session, run_id=run_id, key=spec.key)
                if step.status == StepStatus.PENDING:
                    repository.set_step_status(session, step=step, status=StepStatus.CANCELLED)

    def execute(self, task: Task, *, run_id: str, unit: dict[str, Any]) -> dict[str, Any]:
        """:meth:`run`, never raising but for Celery's retry: the stage's chord must complete.

        An error escaping the unit goes through the retry policy (:class:`Retries`): a
        database error (locked, connection lost) retries the whole unit with backoff -- steps
        that succeeded are skipped, a step left running by this delivery runs again (a script
        fails for an operator to check). Any other error is a defect, not a host's answer.
        Once given up, the unit's unsettled steps are recorded failed with the reason, so the
        stage settles and the run fails (resume-able) instead of waiting for steps nobody runs.
        """
        try:
            return self.run(task, run_id=run_id, unit=unit)
        except Retry:
            raise
        except Exception as exc:
            key = unit.get("key") if isinstance(unit, dict) else None
            error = exc

            def warn(retry: RetryLater) -> bool:
                log.warning(
                    "unit %s of run %s could not use the database (%s); retry %d in %.2fs",
                    key,
                    run_id,
                    error,
                    retry.attempt - 1,
                    retry.delay,
                )
                return True

            try:
                gave_up = self.retries.apply(task, exc, before=warn)
                assert gave_up is not None  # ``warn`` never declines a retry
                return self._give_up(run_id, TaskUnit.from_json(unit), exc, gave_up)
            except Retry:
                raise
            except Exception:
                # not even the failure could be recorded: the watch's lease takes it from here
                log.exception("unit %s of run %s: its failure could not be recorded", key, run_id)
                return {"run_id": run_id, "unit": key, "status": "error", "error": str(exc)}

    def _give_up(
        self, run_id: str, unit: TaskUnit, error: Exception, gave_up: GiveUp
    ) -> dict[str, Any]:
        """Record the unit's unsettled steps failed with why the unit gave up."""
        if gave_up.exhausted:
            message = (
                f"the step's state could not be recorded: database error after "
                f"{gave_up.attempts} attempts ({type(error).__name__}: {first_line(error)}); "
                f"check the database, then 'ferryman runs resume {run_id}' runs the step again"
            )
            log.error("unit %s of run %s gave up: %s", unit.key, run_id, message)
        else:
            log.error("unit %s of run %s broke", unit.key, run_id, exc_info=error)
            message = (
                f"the unit broke: {type(error).__name__}: {first_line(error)} "
                "(the worker's log has the traceback); once the cause is fixed, "
                f"'ferryman runs resume {run_id}' runs its steps again"
            )
        self._abandon(run_id, unit, message)
        return {"run_id": run_id, "unit": unit.key, "status": "failed", "error": message}

    def _abandon(self, run_id: str, unit: TaskUnit, message: str) -> None:
        """Record every unsettled step of the unit failed (pending ones count one attempt)."""
        with self.engine.db.session() as session:
            for spec in unit.steps:
                step = repository.get_step(session, run_id=run_id, key=spec.key)
                status = StepStatus(step.status)
                if status not in (StepStatus.PENDING, StepStatus.RUNNING):
                    continue
                if status is StepStatus.PENDING:  # the table has no pending -> failed
                    repository.set_step_status(session, step=step, status=StepStatus.RUNNING)
                repository.set_step_status(
                    session, step=step, status=StepStatus.FAILED, error=message
                )
                repository.add_event(
                    session,
                    run_id=run_id,
                    event=EventKind.STEP_FAILED,
                    message=f"{spec.key}: {message}",
                    data={"on_error": spec.on_error},
                )


def register(app: Celery, engine: Engine, executor: Executor | None = None) -> None:
    """Register Ferryman's tasks on ``app``, bound to these collaborators."""
    runner = UnitRunner(engine, executor or default_executor())
    settings = engine.settings
    # a stage's callback asks again every advance_poll seconds until its steps settle, for
    # as long as a message may stay unacknowledged
    poll = decide.Poll(
        settings.advance_poll, int(settings.visibility_timeout / settings.advance_poll)
    )

    def run_unit(task: Task, **kwargs: Any) -> dict[str, Any]:
        return runner.execute(task, run_id=kwargs["run_id"], unit=kwargs["unit"])

    # shared=False: tasks belong to this app only (each app has its own engine and store)
    options: dict[str, Any] = {
        "base": FerrymanTask,
        "bind": True,
        "acks_late": True,
        "reject_on_worker_lost": True,
        "shared": False,
        "retries": runner.retries,
    }

    @app.task(name=TASK_VM, **options)
    def vm_steps(
        self: Task,
        *,
        run_id: str,
        stage: int,
        group: str | None,
        vm: str | None,
        unit_key: str,
        unit: dict[str, Any],
    ) -> dict[str, Any]:
        """Run one VM's steps of a stage."""
        return run_unit(self, run_id=run_id, unit=unit, unit_key=unit_key)

    @app.task(name=TASK_SCRIPT, **options)
    def script_run(
        self: Task,
        *,
        run_id: str,
        stage: int,
        group: str | None,
        vm: str | None,
        unit_key: str,
        unit: dict[str, Any],
    ) -> dict[str, Any]:
        """Run a plan's script action (once: see below).

        The step is recorded ``running`` (its attempt counted) before the script starts. With
        acks_late a worker killed mid-script has the message delivered again; a script, unlike
        a Hyper-V step, cannot read whether it already did its work, so the redelivery does not
        run it again: it fails the step saying the worker died while the script ran on that
        host, that it may or may not have completed, and that ``ferryman runs resume RUN``
        runs it again once an operator has checked (the action's ``on_error`` then applies as
        for any failure). An action with ``rerun_on_redelivery: true`` in the plan is run
        again at once instead.
        """
        return run_unit(self, run_id=run_id, unit=unit, unit_key=unit_key)

    @app.task(name=TASK_DRILLS, shared=False, ignore_result=True)
    def drills_tick(now: str | None = None) -> dict[str, Any]:
        """Start the scheduled drills that are due and move started ones on (Celery beat
        sends this every minute; a tick at the same time as another starts nothing twice)."""
        from datetime import datetime

        from workflows.drills import Drills, plans_loader

        moment = datetime.fromisoformat(now) if now else None
        return Drills(engine, plans_loader(settings)).tick(moment).to_json()

    @app.task(name=TASK_ADVANCE, **{**options, "retries": Retries(poll)})
    def advance(self: Task, *, run_id: str, stage: int) -> str:
        """A stage finished: move the run on (or ask again shortly if steps still run).

        A database error, like a stage not settled yet, is retried by the task's policy:
        the run would never move on otherwise.
        """
        outcome = engine.advance(run_id, stage)
        if outcome is Advance.NOT_READY:
            raise StageNotSettled(f"run {run_id}: steps of stage {stage} still run")
        return outcome.value
