"""What a run does next, decided from its records alone: no database, no broker, no clock.

The engine, the unit runner and the recovery watch read a run's compiled stages, its step and
gate records and the time, call a function of this module, and write what it returns; nothing
else decides. Each function answers one question the run's life asks:

- :func:`enter_stage` -- a stage is reached: pass it (done before), send it, or open its gate;
  :func:`finish` once no stage is left, and :func:`after_finish` for what follows a finished run;
- :func:`after_stage` -- a stage's callback came: wait, move on, or fail the run;
- :func:`after_gate` -- a gate was approved, rejected or timed out: move on or fail;
- :func:`resume_from` -- where a resumed run starts again;
- :func:`recover` -- the watch looks at a running run: a stage committed but never sent, a settled
  stage whose callback was lost, a step whose worker stopped beating, units that never started;
- :func:`start_step` and :func:`after_step` -- a unit's delivery meets one of its steps;
- :func:`retry` -- a task or step failed: try again later, or give up.

Records come in as anything with the attributes of the store's rows (:class:`StepFacts`,
:class:`RunFacts`, :class:`GateFacts`), so tests pass plain frozen dataclasses.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from workflows.compiler import Stage, StageKind
from workflows.statuses import (
    DONE_STEP,
    SETTLED_STEP,
    ApprovalStatus,
    RunStatus,
    StepStatus,
)
from workflows.steps import StepSpec, TaskUnit, reruns_after_a_crash

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CONTINUE = "continue"  # the on_error / on_failure / on_timeout value that lets a run go on


class StepFacts(Protocol):
    """What decisions read of a step record (``workflows.store.Step`` has these)."""

    @property
    def key(self) -> str: ...
    @property
    def stage(self) -> int: ...
    @property
    def unit(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def on_error(self) -> str: ...
    @property
    def error(self) -> str: ...
    @property
    def task_id(self) -> str | None: ...
    @property
    def started_at(self) -> datetime | None: ...
    @property
    def heartbeat_at(self) -> datetime | None: ...
    @property
    def finished_at(self) -> datetime | None: ...


class RunFacts(Protocol):
    """What decisions read of a run record (``workflows.store.Run`` has these)."""

    @property
    def status(self) -> str: ...
    @property
    def current_stage(self) -> int: ...
    @property
    def dispatched_stage(self) -> int | None: ...
    @property
    def stage_entered_at(self) -> datetime | None: ...


class GateFacts(Protocol):
    """What decisions read of a gate record (``workflows.store.Approval`` has these)."""

    @property
    def status(self) -> str: ...
    @property
    def on_timeout(self) -> str: ...


@dataclass(frozen=True)
class Timing:
    """The waits recovery allows before it acts (from ``Settings``)."""

    dispatch_grace: float  # a stage committed but unsent may still be on its way
    step_lease: float  # a running step's worker is dead once its heartbeat is this old

    @property
    def recovery_wait(self) -> float:
        """How long an unsent stage or a settled stage without its callback is left alone.

        The shorter of the two: a short lease means the operator wants crashes noticed
        quickly, and a lost callback or send is such a crash.
        """
        return min(self.dispatch_grace, self.step_lease)


# -- decisions


@dataclass(frozen=True)
class Wait:
    """Nothing to do yet (steps still run, or a lost message may still arrive)."""


@dataclass(frozen=True)
class Stale:
    """The caller's view is out of date: the run moved on or stopped; do nothing."""


@dataclass(frozen=True)
class PassStage:
    """The stage was done before (all steps succeeded, or its gate passed): go to the next."""

    stage: int


@dataclass(frozen=True)
class SendStage:
    """Send the stage's units (after the transaction that entered it commits)."""

    stage: int


class GateRecord(enum.Enum):
    """What opening a gate does to its record."""

    NEW = "new"  # no record yet: add one
    REOPEN = "reopen"  # rejected or timed out before (a resume): ask again
    KEEP = "keep"  # already pending: leave it


@dataclass(frozen=True)
class OpenGate:
    """Stop at the stage's gate: the run waits for an operator."""

    stage: int
    record: GateRecord


@dataclass(frozen=True)
class NextStage:
    """The stage is over: move the run from ``stage`` to the one after it."""

    stage: int


@dataclass(frozen=True)
class Finish:
    """Every stage is done and nothing failed that stops the run: it succeeded."""


@dataclass(frozen=True)
class Fail:
    """The run fails with ``error`` (resume re-runs what failed)."""

    error: str


@dataclass(frozen=True)
class ResendStage:
    """Recovery: the stage was committed but never recorded as sent (its sender died)."""

    stage: int


@dataclass(frozen=True)
class AdvanceLostCallback:
    """Recovery: every unit of the sent stage finished, but its chord callback never came."""

    stage: int


@dataclass(frozen=True)
class TakeOver:
    """Recovery: a running step's worker stopped beating.

    ``rerun``: hand its unit to a fresh delivery; otherwise (a script) fail the step for an
    operator to check, since running it again could do its work twice.
    """

    stage: int
    step: str
    unit: str
    rerun: bool


@dataclass(frozen=True)
class ResendUnits:
    """Recovery: the stage went quiet for a lease while these units waited to start."""

    stage: int
    units: tuple[str, ...]


Entry = PassStage | SendStage | OpenGate
Ending = Finish | Fail
StageMove = Stale | Wait | NextStage | Fail
Recovery = ResendStage | AdvanceLostCallback | TakeOver | ResendUnits
Decision = Entry | Ending | StageMove | Recovery


class FollowUp(enum.Enum):
    """What follows a finished run."""

    NOTHING = "nothing"
    CLOSE_PARENT = "close_parent"  # a compensation run ended: settle the run it undid
    COMPENSATE = "compensate"  # a failed test run: undo it at once


class StepVerdict(enum.Enum):
    """What a unit's delivery makes of one of its steps."""

    START = "start"  # run it now (this delivery holds it)
    SUCCEEDED = "succeeded"  # done (before, or just now): never do it twice
    FAILED = "failed"
    CANCELLED = "cancelled"  # the step or its run was cancelled
    STALE = "stale"  # the run is no longer running
    DUPLICATE = "duplicate"  # another delivery holds the step (the stage was sent twice)
    INTERRUPTED = "interrupted"  # a script this delivery started when its worker died


class UnitMove(enum.Enum):
    """What a unit does after one of its steps."""

    CONTINUE = "continue"  # on to the unit's next step
    STOP = "stop"  # stop here (failed, or another delivery carries on)
    CANCEL_REST = "cancel_rest"  # stop and cancel the unit's pending steps


# -- helpers over records


def blocking(step: StepFacts) -> bool:
    """A failed step that fails its stage (not one allowed to fail)."""
    return step.status == StepStatus.FAILED and step.on_error != CONTINUE


def by_unit(steps: Iterable[StepFacts]) -> dict[str, list[StepFacts]]:
    """A stage's steps grouped by unit, each unit's in compiled order."""
    units: dict[str, list[StepFacts]] = {}
    for step in sorted(steps, key=lambda s: s.seq):
        units.setdefault(step.unit, []).append(step)
    return units


def stage_settled(steps: Iterable[StepFacts]) -> bool:
    """Every unit of the stage has finished: all its steps settled, or it stopped at a failure.

    Steps after a unit's failed step stay pending (resume runs them), so pending alone does
    not mean "still running".
    """
    for unit_steps in by_unit(steps).values():
        for step in unit_steps:
            if blocking(step) or step.status == StepStatus.CANCELLED:
                break  # the unit stopped here
            if StepStatus(step.status) not in SETTLED_STEP:
                return False
    return True


def waiting_units(steps: Iterable[StepFacts]) -> list[str]:
    """Units whose next step is pending, with none of theirs running (see ``stage_settled``)."""
    waiting = []
    for key, unit_steps in by_unit(steps).items():
        for step in unit_steps:
            status = StepStatus(step.status)
            if blocking(step) or status in (StepStatus.CANCELLED, StepStatus.RUNNING):
                break  # stopped, or in a delivery's hands (a lost one is taken over)
            if status is StepStatus.PENDING:
                waiting.append(key)
                break
    return waiting


def last_sign_of_life(step: StepFacts) -> datetime:
    """When the step last showed activity: started, beat or finished (the epoch if never)."""
    moments = [m for m in (step.heartbeat_at, step.started_at, step.finished_at) if m]
    return max(moments, default=EPOCH)


def failure_summary(steps: Sequence[StepFacts]) -> str:
    """One line per failed step (at most five), for the run's error."""
    lines = [f"{step.key}: {step.error or 'failed'}" for step in steps[:5]]
    if len(steps) > 5:
        lines.append(f"... and {len(steps) - 5} more failed step(s)")
    return "\n".join(lines)


def find_spec(stage: Stage, unit_key: str, step_key: str) -> tuple[TaskUnit, StepSpec] | None:
    """The compiled unit and step of a step record (None: not a step of this stage)."""
    for unit in stage.units:
        if unit.key == unit_key:
            for spec in unit.steps:
                if spec.key == step_key:
                    return unit, spec
    return None


# -- the run's stages


def enter_stage(
    stage: Stage, steps: Sequence[StepFacts] = (), gate: GateFacts | None = None
) -> Entry:
    """The run reaches ``stage``: ``steps`` are its records (a units stage), ``gate`` its
    gate's record if one was ever opened (a gate stage).

    Gates already passed and stages whose steps all succeeded are passed over, which is what
    makes resume continue exactly where the run stopped.
    """
    if stage.kind is StageKind.GATE:
        if gate is None:
            return OpenGate(stage.index, GateRecord.NEW)
        status = ApprovalStatus(gate.status)
        if status is ApprovalStatus.APPROVED or (
            status is ApprovalStatus.TIMED_OUT and gate.on_timeout == CONTINUE
        ):
            return PassStage(stage.index)
        record = GateRecord.KEEP if status is ApprovalStatus.PENDING else GateRecord.REOPEN
        return OpenGate(stage.index, record)
    if any(StepStatus(step.status) not in DONE_STEP for step in steps):
        return SendStage(stage.index)
    return PassStage(stage.index)


def finish(steps: Sequence[StepFacts]) -> Ending:
    """No stage is left: the run succeeded, or failed if a stage allowed to continue failed."""
    failed = [step for step in steps if blocking(step)]
    return Fail(failure_summary(failed)) if failed else Finish()


def after_stage(run: RunFacts, stage: Stage, steps: Sequence[StepFacts]) -> StageMove:
    """The callback of ``stage`` came (or the watch found it lost): what now.

    ``steps`` are the stage's records. A callback delivered twice, or after the run moved on,
    finds the run elsewhere and is :class:`Stale`.
    """
    if run.status != RunStatus.RUNNING or run.current_stage != stage.index:
        return Stale()
    if not stage_settled(steps):
        return Wait()
    failed = [step for step in steps if blocking(step)]
    if failed and stage.on_failure != CONTINUE:
        return Fail(failure_summary(failed))
    return NextStage(stage.index)


def after_gate(
    stage: int, status: ApprovalStatus, on_timeout: str, reason: str
) -> NextStage | Fail:
    """A gate was decided (approved, rejected, or timed out with its policy): go on or fail."""
    if status is ApprovalStatus.APPROVED or (
        status is ApprovalStatus.TIMED_OUT and on_timeout == CONTINUE
    ):
        return NextStage(stage)
    return Fail(reason)


def after_finish(
    operation: str, status: RunStatus, *, has_parent: bool, auto_compensate_test: bool
) -> FollowUp:
    """What follows a run that just finished with ``status``."""
    if operation == "compensate" and has_parent:
        return FollowUp.CLOSE_PARENT
    if operation == "test" and status is RunStatus.FAILED and auto_compensate_test:
        # a failed test must not leave test VMs behind; real failovers are never rolled
        # back automatically (that can make a disaster worse)
        return FollowUp.COMPENSATE
    return FollowUp.NOTHING


def resume_from(current_stage: int, steps: Sequence[StepFacts]) -> int:
    """The stage a resumed run enters: the earliest with a failed or cancelled step."""
    stopped = (StepStatus.FAILED, StepStatus.CANCELLED)
    return min([current_stage, *(step.stage for step in steps if step.status in stopped)])


# -- recovery


def recover(
    run: RunFacts,
    stages: Sequence[Stage],
    steps: Sequence[StepFacts],
    now: datetime,
    timing: Timing,
) -> tuple[Recovery, ...]:
    """What the watch should do for a run whose worker or sender may have died.

    ``steps`` are the records of the run's current stage. Nothing is done for a run that is
    not running, or whose current stage is a gate (a gate opens in the transaction that
    enters it). Otherwise, at most one of:

    - the stage was committed but never recorded as sent, longer ago than the recovery wait:
      send it again (units skip succeeded steps, so a double send does each step once);
    - every unit has finished but no callback came within the recovery wait: advance;
    - or, for a stage still running: every running step silent for a lease is taken over,
      and units waiting to start in a stage with no sign of life for a lease are sent again.
    """
    index = run.current_stage
    if run.status != RunStatus.RUNNING or index >= len(stages):
        return ()
    stage = stages[index]
    if stage.kind is not StageKind.UNITS:
        return ()
    wait_before = now - timedelta(seconds=timing.recovery_wait)
    lease_before = now - timedelta(seconds=timing.step_lease)
    entered = run.stage_entered_at or EPOCH
    if run.dispatched_stage != index:
        return (ResendStage(index),) if entered <= wait_before else ()
    if stage_settled(steps):
        last = max([entered, *(last_sign_of_life(step) for step in steps)])
        return (AdvanceLostCallback(index),) if last <= wait_before else ()
    found: list[Recovery] = []
    for step in steps:
        if step.status != StepStatus.RUNNING:
            continue
        if (step.heartbeat_at or step.started_at or EPOCH) > lease_before:
            continue  # its worker beats (or began just now)
        compiled = find_spec(stage, step.unit, step.key)
        if compiled is None:
            continue  # not a step of this compiled run: nothing to send
        found.append(TakeOver(index, step.key, step.unit, reruns_after_a_crash(compiled[1])))
    quiet = entered <= lease_before and all(
        last_sign_of_life(step) < lease_before for step in steps
    )
    waiting = waiting_units(steps) if quiet else []
    if waiting:
        found.append(ResendUnits(index, tuple(waiting)))
    return tuple(found)


# -- a unit's steps


def start_step(
    run_status: RunStatus,
    step_status: StepStatus,
    *,
    holder: str | None,
    delivery: str | None,
    reruns: bool,
) -> StepVerdict:
    """A unit's delivery reaches one of its steps: run it, skip it, or stop.

    ``holder`` is the delivery that set the step running (if any); ``delivery`` this one;
    ``reruns`` whether the step may simply run again after its worker died (see
    :func:`workflows.steps.reruns_after_a_crash`).
    """
    if run_status is RunStatus.CANCELLED:
        return StepVerdict.CANCELLED
    if run_status is not RunStatus.RUNNING:
        return StepVerdict.STALE
    if step_status in DONE_STEP:
        return StepVerdict.SUCCEEDED  # redelivered: done before, never do it twice
    if step_status is StepStatus.FAILED:
        return StepVerdict.FAILED
    if step_status is StepStatus.CANCELLED:
        return StepVerdict.CANCELLED
    if step_status is StepStatus.RUNNING:
        if holder and holder != delivery:
            # the stage was sent twice (a resend after a crash): the other delivery owns the
            # step, and its message comes back if its worker dies
            return StepVerdict.DUPLICATE
        if not reruns:
            return StepVerdict.INTERRUPTED  # an earlier delivery of this message died in it
    return StepVerdict.START


def after_step(verdict: StepVerdict, on_error: str) -> UnitMove:
    """What the unit does once one of its steps came to ``verdict``."""
    if verdict is StepVerdict.DUPLICATE:
        return UnitMove.STOP  # the unit's other delivery carries on
    if verdict in (StepVerdict.CANCELLED, StepVerdict.STALE):
        return UnitMove.CANCEL_REST
    if verdict in (StepVerdict.FAILED, StepVerdict.INTERRUPTED) and on_error != CONTINUE:
        return UnitMove.STOP
    return UnitMove.CONTINUE


# -- retries


class Backoff(Protocol):
    """How long to wait before each retry, and how many (``workflows.settings.RetryPolicy``:
    exponential with jitter; :class:`Poll`: fixed)."""

    @property
    def max_retries(self) -> int: ...

    def delay(self, attempt: int, jitter: float) -> float:
        """The wait before retry number ``attempt`` (0-based); ``jitter`` in [0, 1)."""
        ...


@dataclass(frozen=True)
class Poll:
    """A fixed wait between attempts (a stage's callback asking again until it settles)."""

    interval: float
    max_retries: int

    def delay(self, attempt: int, jitter: float) -> float:
        """Always the interval."""
        return self.interval


@dataclass(frozen=True)
class RetryLater:
    """Try again after ``delay`` seconds; ``attempt`` is the number of the coming attempt."""

    delay: float
    attempt: int


@dataclass(frozen=True)
class GiveUp:
    """Do not try again: ``attempts`` were made; ``exhausted``: the error was worth retrying
    but the policy's retries are spent (otherwise it was not worth retrying at all)."""

    attempts: int
    exhausted: bool


def retryable(error: BaseException, *, rereadable: bool = True) -> bool:
    """Whether ``error``'s type says another attempt may succeed.

    ``retryable`` on the error (``plans.errors.TransientError`` sets it) says the failure may go
    away; ``outcome_unknown`` says the request may have taken effect before it failed, which
    only a step that can read its effect back (``rereadable``) may retry safely.
    """
    if not getattr(error, "retryable", False):
        return False
    return rereadable or not getattr(error, "outcome_unknown", False)


def retry(
    policy: Backoff,
    error: BaseException,
    retries: int,
    jitter: float,
    *,
    rereadable: bool = True,
) -> RetryLater | GiveUp:
    """After ``retries`` retries (0 on a first attempt) failed with ``error``: retry or give up.

    ``jitter`` in [0, 1) spreads an exponential backoff (``RetryPolicy.delay``).
    """
    if not retryable(error, rereadable=rereadable):
        return GiveUp(retries + 1, exhausted=False)
    if retries >= policy.max_retries:
        return GiveUp(retries + 1, exhausted=True)
    return RetryLater(policy.delay(retries, jitter), retries + 2)
