"""The decision core as data: records and a time in, a typed decision out (no store, no broker).

Each table row names the situation it stands for; the records are plain frozen dataclasses
with the attributes of the store's rows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from plans.errors import PermanentError, TransientError
from plans.model import OnError
from workflows import decide
from workflows.compiler import Gate, Stage, StageKind
from workflows.decide import (
    AdvanceLostCallback,
    Fail,
    Finish,
    FollowUp,
    GateRecord,
    GiveUp,
    NextStage,
    OpenGate,
    PassStage,
    ResendStage,
    ResendUnits,
    RetryLater,
    SendStage,
    Stale,
    StepVerdict,
    TakeOver,
    Timing,
    UnitMove,
    Wait,
)
from workflows.settings import RetryPolicy
from workflows.statuses import ApprovalStatus, RunStatus, StepStatus
from workflows.steps import StepKind, StepSpec, TaskUnit

NOW = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)
TIMING = Timing(dispatch_grace=30.0, step_lease=120.0)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


@dataclass(frozen=True)
class StepRec:
    key: str
    unit: str
    seq: int
    status: str = StepStatus.PENDING.value
    stage: int = 0
    on_error: str = "stop"
    error: str = ""
    task_id: str | None = None
    started_at: datetime | None = None
    heartbeat_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True)
class RunRec:
    status: str = RunStatus.RUNNING.value
    current_stage: int = 0
    dispatched_stage: int | None = 0
    stage_entered_at: datetime | None = None


@dataclass(frozen=True)
class GateRec:
    status: str
    on_timeout: str = "fail"


def unit(key: str, *kinds: StepKind, params: dict[str, object] | None = None) -> TaskUnit:
    steps = tuple(
        StepSpec(key=f"{key}/{kind.value}", kind=kind, params=dict(params or {})) for kind in kinds
    )
    return TaskUnit(key=key, task="ferryman.vm.steps", queue="ferryman.site.x", steps=steps)


VMS = Stage(
    index=0,
    name="g1.vms",
    kind=StageKind.UNITS,
    units=(
        unit("web", StepKind.FAILOVER, StepKind.START_VM),
        unit("db", StepKind.FAILOVER, StepKind.START_VM),
    ),
)
SCRIPTS = Stage(
    index=0,
    name="g1.scripts",
    kind=StageKind.UNITS,
    units=(
        unit("quiesce", StepKind.SCRIPT),
        unit("warm", StepKind.SCRIPT, params={"rerun_on_redelivery": True}),
    ),
)
GATE = Stage(index=1, name="g1.confirm", kind=StageKind.GATE, gate=Gate("confirm", "check"))
STAGES = (VMS, GATE)


def step(unit_key: str, kind: StepKind, status: StepStatus, seq: int, **kw: object) -> StepRec:
    return StepRec(key=f"{unit_key}/{kind.value}", unit=unit_key, seq=seq, status=status, **kw)  # type: ignore[arg-type]


S, R, F, P = StepStatus.SUCCEEDED, StepStatus.RUNNING, StepStatus.FAILED, StepStatus.PENDING
FO, SV = StepKind.FAILOVER, StepKind.START_VM


def vm_steps(
    web: tuple[StepStatus, StepStatus], db: tuple[StepStatus, StepStatus]
) -> list[StepRec]:
    return [
        step("web", FO, web[0], 0, finished_at=ago(60) if web[0] in (S, F) else None),
        step("web", SV, web[1], 1, finished_at=ago(60) if web[1] in (S, F) else None),
        step("db", FO, db[0], 2, finished_at=ago(60) if db[0] in (S, F) else None),
        step("db", SV, db[1], 3, finished_at=ago(60) if db[1] in (S, F) else None),
    ]


# -- entering a stage


@pytest.mark.parametrize(
    ("situation", "stage", "steps", "gate", "expected"),
    [
        ("work left: send", VMS, vm_steps((S, P), (S, S)), None, SendStage(0)),
        ("never started: send", VMS, vm_steps((P, P), (P, P)), None, SendStage(0)),
        ("all done before (resume): pass", VMS, vm_steps((S, S), (S, S)), None, PassStage(0)),
        ("first time at a gate: new record", GATE, [], None, OpenGate(1, GateRecord.NEW)),
        ("approved before: pass", GATE, [], GateRec("approved"), PassStage(1)),
        ("timed out, continue: pass", GATE, [], GateRec("timed_out", "continue"), PassStage(1)),
        (
            "timed out, fail: ask again",
            GATE,
            [],
            GateRec("timed_out"),
            OpenGate(1, GateRecord.REOPEN),
        ),
        (
            "rejected before: ask again",
            GATE,
            [],
            GateRec("rejected"),
            OpenGate(1, GateRecord.REOPEN),
        ),
        ("already open: keep it", GATE, [], GateRec("pending"), OpenGate(1, GateRecord.KEEP)),
    ],
)
def test_entering_a_stage(
    situation: str,
    stage: Stage,
    steps: list[StepRec],
    gate: GateRec | None,
    expected: decide.Entry,
) -> None:
    assert decide.enter_stage(stage, steps, gate) == expected, situation


@pytest.mark.parametrize(
    ("situation", "steps", "expected"),
    [
        ("everything succeeded", vm_steps((S, S), (S, S)), Finish()),
        (
            "a failure allowed to continue",
            [replace(s, on_error="continue") for s in vm_steps((F, P), (S, S))],
            Finish(),
        ),
        (
            "a stage that continued past a failure",
            vm_steps((F, P), (S, S)),
            Fail("web/failover: failed"),
        ),
    ],
)
def test_finishing(situation: str, steps: list[StepRec], expected: decide.Ending) -> None:
    assert decide.finish(steps) == expected, situation


def test_a_failure_summary_names_five_steps_and_counts_the_rest() -> None:
    steps = [
        StepRec(key=f"s{i}", unit=f"u{i}", seq=i, status="failed", error="boom") for i in range(7)
    ]
    summary = decide.finish(steps)
    assert isinstance(summary, Fail)
    assert summary.error.splitlines() == [
        *(f"s{i}: boom" for i in range(5)),
        "... and 2 more failed step(s)",
    ]


# -- a stage's callback


@pytest.mark.parametrize(
    ("situation", "run", "stage", "steps", "expected"),
    [
        ("all units finished", RunRec(), VMS, vm_steps((S, S), (S, S)), NextStage(0)),
        ("a step still runs", RunRec(), VMS, vm_steps((S, R), (S, S)), Wait()),
        ("a unit not started yet", RunRec(), VMS, vm_steps((S, S), (P, P)), Wait()),
        (
            "a unit stopped at its failure (its next step stays pending)",
            RunRec(),
            VMS,
            vm_steps((F, P), (S, S)),
            Fail("web/failover: failed"),
        ),
        (
            "a failed unit in a stage that continues",
            RunRec(),
            replace(VMS, on_failure=OnError.CONTINUE),
            vm_steps((F, P), (S, S)),
            NextStage(0),
        ),
        (
            "a failure allowed by the step's on_error",
            RunRec(),
            VMS,
            [
                replace(s, on_error="continue") if s.key == "web/failover" else s
                for s in vm_steps((F, S), (S, S))
            ],
            NextStage(0),
        ),
        (
            "a callback delivered twice",
            RunRec(current_stage=1),
            VMS,
            vm_steps((S, S), (S, S)),
            Stale(),
        ),
        (
            "the run was cancelled",
            RunRec(status="cancelled"),
            VMS,
            vm_steps((S, S), (S, S)),
            Stale(),
        ),
        (
            "the run waits at a gate",
            RunRec(status="waiting"),
            VMS,
            vm_steps((S, S), (S, S)),
            Stale(),
        ),
    ],
)
def test_after_a_stage(
    situation: str, run: RunRec, stage: Stage, steps: list[StepRec], expected: decide.StageMove
) -> None:
    assert decide.after_stage(run, stage, steps) == expected, situation


@pytest.mark.parametrize(
    ("situation", "status", "on_timeout", "expected"),
    [
        ("approved", ApprovalStatus.APPROVED, "fail", NextStage(1)),
        ("rejected", ApprovalStatus.REJECTED, "fail", Fail("why")),
        ("timed out, policy fail", ApprovalStatus.TIMED_OUT, "fail", Fail("why")),
        ("timed out, policy continue", ApprovalStatus.TIMED_OUT, "continue", NextStage(1)),
    ],
)
def test_after_a_gate(
    situation: str, status: ApprovalStatus, on_timeout: str, expected: object
) -> None:
    assert decide.after_gate(1, status, on_timeout, "why") == expected, situation


@pytest.mark.parametrize(
    ("operation", "status", "parent", "auto", "expected"),
    [
        ("test", RunStatus.FAILED, False, True, FollowUp.COMPENSATE),
        ("test", RunStatus.FAILED, False, False, FollowUp.NOTHING),
        ("test", RunStatus.SUCCEEDED, False, True, FollowUp.NOTHING),
        ("planned", RunStatus.FAILED, False, True, FollowUp.NOTHING),  # never automatically
        ("compensate", RunStatus.SUCCEEDED, True, True, FollowUp.CLOSE_PARENT),
        ("compensate", RunStatus.FAILED, True, True, FollowUp.CLOSE_PARENT),
    ],
)
def test_after_a_run_finished(
    operation: str, status: RunStatus, parent: bool, auto: bool, expected: FollowUp
) -> None:
    assert (
        decide.after_finish(operation, status, has_parent=parent, auto_compensate_test=auto)
        is expected
    )


def test_resume_starts_at_the_earliest_stopped_step() -> None:
    steps = [
        StepRec(key="a", unit="a", seq=0, stage=0, status="succeeded"),
        StepRec(key="b", unit="b", seq=1, stage=2, status="failed"),
        StepRec(key="c", unit="c", seq=2, stage=3, status="cancelled"),
    ]
    assert decide.resume_from(4, steps) == 2
    assert decide.resume_from(1, steps) == 1  # stopped at a gate before them


# -- recovery


def running(unit_key: str, kind: StepKind, seq: int, beat: float, task: str = "t1") -> StepRec:
    return step(
        unit_key, kind, R, seq, task_id=task, started_at=ago(beat + 5), heartbeat_at=ago(beat)
    )


SENT_LONG_AGO = RunRec(stage_entered_at=ago(600))


@pytest.mark.parametrize(
    ("situation", "run", "stages", "steps", "timing", "expected"),
    [
        (
            "committed, never sent, past the wait",
            RunRec(dispatched_stage=None, stage_entered_at=ago(31)),
            STAGES,
            vm_steps((P, P), (P, P)),
            TIMING,
            (ResendStage(0),),
        ),
        (
            "committed, never sent, its sender may still send",
            RunRec(dispatched_stage=None, stage_entered_at=ago(10)),
            STAGES,
            vm_steps((P, P), (P, P)),
            TIMING,
            (),
        ),
        (
            "never sent: a short lease shortens the wait (not the 30 s grace)",
            RunRec(dispatched_stage=None, stage_entered_at=ago(6)),
            STAGES,
            vm_steps((P, P), (P, P)),
            Timing(dispatch_grace=30.0, step_lease=5.0),
            (ResendStage(0),),
        ),
        (
            "an earlier stage was sent, this one not",
            RunRec(current_stage=0, dispatched_stage=None, stage_entered_at=None),
            STAGES,
            [],
            TIMING,
            (ResendStage(0),),
        ),
        (
            "settled, callback lost, quiet past the wait",
            SENT_LONG_AGO,
            STAGES,
            vm_steps((S, S), (S, S)),
            TIMING,
            (AdvanceLostCallback(0),),
        ),
        (
            "settled just now: the callback may still come",
            SENT_LONG_AGO,
            STAGES,
            [replace(s, finished_at=ago(2)) for s in vm_steps((S, S), (S, S))],
            TIMING,
            (),
        ),
        (
            "settled 6 s ago with a 5 s lease: the lost callback is recovered",
            SENT_LONG_AGO,
            STAGES,
            [replace(s, finished_at=ago(6)) for s in vm_steps((S, S), (S, S))],
            Timing(dispatch_grace=30.0, step_lease=5.0),
            (AdvanceLostCallback(0),),
        ),
        (
            "a failed stage whose callback was lost",
            SENT_LONG_AGO,
            STAGES,
            vm_steps((F, P), (S, S)),
            TIMING,
            (AdvanceLostCallback(0),),
        ),
        (
            "a step whose worker went silent: its unit is sent again",
            SENT_LONG_AGO,
            STAGES,
            [*vm_steps((S, S), (S, S))[:2], running("db", FO, 2, beat=121), step("db", SV, P, 3)],
            TIMING,
            (TakeOver(0, "db/failover", "db", rerun=True),),
        ),
        (
            "a step whose worker beats: left alone",
            SENT_LONG_AGO,
            STAGES,
            [*vm_steps((S, S), (S, S))[:2], running("db", FO, 2, beat=3), step("db", SV, P, 3)],
            TIMING,
            (),
        ),
        (
            "a script whose worker went silent: failed for an operator, not run again",
            SENT_LONG_AGO,
            (SCRIPTS,),
            [
                running("quiesce", StepKind.SCRIPT, 0, beat=200),
                step("warm", StepKind.SCRIPT, S, 1, finished_at=ago(300)),
            ],
            TIMING,
            (TakeOver(0, "quiesce/script", "quiesce", rerun=False),),
        ),
        (
            "a script safe to rerun whose worker went silent: sent again",
            SENT_LONG_AGO,
            (SCRIPTS,),
            [
                step("quiesce", StepKind.SCRIPT, S, 0, finished_at=ago(300)),
                running("warm", StepKind.SCRIPT, 1, beat=200),
            ],
            TIMING,
            (TakeOver(0, "warm/script", "warm", rerun=True),),
        ),
        (
            "units that started nothing for a lease, after others finished",
            SENT_LONG_AGO,
            STAGES,
            vm_steps((S, S), (P, P)),  # web finished 60 s ago: the stage is not quiet yet
            TIMING,
            (),
        ),
        (
            "units that never started in a stage quiet for a lease",
            SENT_LONG_AGO,
            STAGES,
            [replace(s, finished_at=ago(300)) for s in vm_steps((S, S), (P, P))],
            TIMING,
            (ResendUnits(0, ("db",)),),
        ),
        (
            "units waiting while another unit beats: not lost",
            SENT_LONG_AGO,
            STAGES,
            [
                running("web", FO, 0, beat=3),
                step("web", SV, P, 1),
                step("db", FO, P, 2),
                step("db", SV, P, 3),
            ],
            TIMING,
            (),
        ),
        (
            "a silent step and a waiting unit: both recovered",
            SENT_LONG_AGO,
            STAGES,
            [
                running("web", FO, 0, beat=300),
                step("web", SV, P, 1),
                step("db", FO, P, 2),
                step("db", SV, P, 3),
            ],
            TIMING,
            (TakeOver(0, "web/failover", "web", rerun=True), ResendUnits(0, ("db",))),
        ),
        (
            "a stage entered within the lease: its units may just be slow",
            RunRec(stage_entered_at=ago(60)),
            STAGES,
            vm_steps((P, P), (P, P)),
            TIMING,
            (),
        ),
        (
            "a run waiting at a gate",
            RunRec(status="waiting", current_stage=1, dispatched_stage=None),
            STAGES,
            [],
            TIMING,
            (),
        ),
        (
            "a gate stage is never sent",
            RunRec(current_stage=1, dispatched_stage=None, stage_entered_at=ago(600)),
            STAGES,
            [],
            TIMING,
            (),
        ),
        (
            "a finished run",
            RunRec(status="succeeded", stage_entered_at=ago(600)),
            STAGES,
            vm_steps((S, S), (S, S)),
            TIMING,
            (),
        ),
        (
            "a step not of this compiled run",
            SENT_LONG_AGO,
            STAGES,
            [StepRec(key="ghost", unit="ghost", seq=0, status="running", heartbeat_at=ago(600))],
            TIMING,
            (),
        ),
    ],
)
def test_recovery(
    situation: str,
    run: RunRec,
    stages: tuple[Stage, ...],
    steps: list[StepRec],
    timing: Timing,
    expected: tuple[decide.Recovery, ...],
) -> None:
    assert decide.recover(run, stages, steps, NOW, timing) == expected, situation


def test_the_recovery_wait_is_the_shorter_of_grace_and_lease() -> None:
    assert Timing(dispatch_grace=30.0, step_lease=120.0).recovery_wait == 30.0
    assert Timing(dispatch_grace=30.0, step_lease=5.0).recovery_wait == 5.0


# -- a unit's steps


@pytest.mark.parametrize(
    ("situation", "run", "status", "holder", "reruns", "expected"),
    [
        ("a pending step", RunStatus.RUNNING, StepStatus.PENDING, None, True, StepVerdict.START),
        (
            "done before (a redelivery)",
            RunStatus.RUNNING,
            StepStatus.SUCCEEDED,
            "t1",
            True,
            StepVerdict.SUCCEEDED,
        ),
        (
            "skipped before",
            RunStatus.RUNNING,
            StepStatus.SKIPPED,
            None,
            True,
            StepVerdict.SUCCEEDED,
        ),
        ("failed before", RunStatus.RUNNING, StepStatus.FAILED, "t1", True, StepVerdict.FAILED),
        (
            "cancelled step",
            RunStatus.RUNNING,
            StepStatus.CANCELLED,
            None,
            True,
            StepVerdict.CANCELLED,
        ),
        (
            "held by another delivery",
            RunStatus.RUNNING,
            StepStatus.RUNNING,
            "t2",
            True,
            StepVerdict.DUPLICATE,
        ),
        (
            "this delivery's, its worker died",
            RunStatus.RUNNING,
            StepStatus.RUNNING,
            "t1",
            True,
            StepVerdict.START,
        ),
        (
            "this delivery's script, its worker died",
            RunStatus.RUNNING,
            StepStatus.RUNNING,
            "t1",
            False,
            StepVerdict.INTERRUPTED,
        ),
        (
            "a script held by another delivery",
            RunStatus.RUNNING,
            StepStatus.RUNNING,
            "t2",
            False,
            StepVerdict.DUPLICATE,
        ),
        (
            "a cancelled run",
            RunStatus.CANCELLED,
            StepStatus.PENDING,
            None,
            True,
            StepVerdict.CANCELLED,
        ),
        ("a failed run", RunStatus.FAILED, StepStatus.PENDING, None, True, StepVerdict.STALE),
        ("a run at a gate", RunStatus.WAITING, StepStatus.PENDING, None, True, StepVerdict.STALE),
    ],
)
def test_starting_a_step(
    situation: str,
    run: RunStatus,
    status: StepStatus,
    holder: str | None,
    reruns: bool,
    expected: StepVerdict,
) -> None:
    verdict = decide.start_step(run, status, holder=holder, delivery="t1", reruns=reruns)
    assert verdict is expected, situation


@pytest.mark.parametrize(
    ("verdict", "on_error", "expected"),
    [
        (StepVerdict.SUCCEEDED, "stop", UnitMove.CONTINUE),
        (StepVerdict.FAILED, "stop", UnitMove.STOP),
        (StepVerdict.FAILED, "continue", UnitMove.CONTINUE),
        (StepVerdict.INTERRUPTED, "stop", UnitMove.STOP),
        (StepVerdict.DUPLICATE, "continue", UnitMove.STOP),
        (StepVerdict.CANCELLED, "stop", UnitMove.CANCEL_REST),
        (StepVerdict.STALE, "continue", UnitMove.CANCEL_REST),
    ],
)
def test_after_a_step(verdict: StepVerdict, on_error: str, expected: UnitMove) -> None:
    assert decide.after_step(verdict, on_error) is expected


# -- retries


class Lost(TransientError):
    """A transient error raised after the request was sent: its effect is unknown."""

    outcome_unknown = True


POLICY = RetryPolicy(max_retries=3, base_delay=1.0, max_delay=4.0)


@pytest.mark.parametrize(
    ("situation", "error", "retries", "rereadable", "expected"),
    [
        ("transient, first failure", TransientError("reset"), 0, True, RetryLater(0.75, 2)),
        ("transient, second failure", TransientError("reset"), 1, True, RetryLater(1.5, 3)),
        ("transient, retries spent", TransientError("reset"), 3, True, GiveUp(4, exhausted=True)),
        ("permanent", PermanentError("no such VM"), 0, True, GiveUp(1, exhausted=False)),
        ("not Ferryman's (a defect)", KeyError("x"), 0, True, GiveUp(1, exhausted=False)),
        (
            "outcome unknown, effect readable back",
            Lost("500 after Command"),
            0,
            True,
            RetryLater(0.75, 2),
        ),
        (
            "outcome unknown, a script",
            Lost("500 after Command"),
            0,
            False,
            GiveUp(1, exhausted=False),
        ),
        (
            "plain transient in a script (nothing was sent)",
            TransientError("refused"),
            0,
            False,
            RetryLater(0.75, 2),
        ),
    ],
)
def test_retry_reads_the_error_type_and_the_policy(
    situation: str, error: Exception, retries: int, rereadable: bool, expected: object
) -> None:
    verdict = decide.retry(POLICY, error, retries, 0.5, rereadable=rereadable)
    assert verdict == expected, situation


def test_a_poll_waits_the_same_each_time_up_to_its_count() -> None:
    poll = decide.Poll(interval=0.5, max_retries=2)
    assert decide.retry(poll, TransientError("not yet"), 0, 0.9) == RetryLater(0.5, 2)
    assert decide.retry(poll, TransientError("not yet"), 1, 0.1) == RetryLater(0.5, 3)
    assert decide.retry(poll, TransientError("not yet"), 2, 0.1) == GiveUp(3, exhausted=True)
