"""A running step whose worker went silent is taken over by a fresh delivery, once.

The worker running a step refreshes its heartbeat; the workers' watch hands a step whose
heartbeat is older than ``step_lease`` to a new delivery of its unit (a script fails for an
operator instead). The old delivery, should it come back, finds the step no longer its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlmodel import col

from plans import Bundle
from tests.workflows.conftest import fast_settings
from tests.workflows.fakes import FakeExecutor
from tests.workflows.test_engine import without_gate
from workers.embedded import build_runtime, worker
from workers.heartbeat import Heartbeat
from workers.tasks import UnitRunner
from workflows.compiler import Stage
from workflows.engine import Engine
from workflows.events import EventKind
from workflows.progress import wait_for
from workflows.recovery import Recovery
from workflows.settings import Settings
from workflows.statuses import RunStatus, StepStatus
from workflows.steps import StepKind
from workflows.store import Database, Run, Step, repository, utcnow

LOST = "a-delivery-that-never-comes-back"


class Recording:
    def __init__(self) -> None:
        self.sent: list[tuple[str, int, list[str]]] = []

    def dispatch(self, run_id: str, stage: Stage) -> None:
        self.sent.append((run_id, stage.index, [unit.key for unit in stage.units]))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path}/t.db")


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = Database(settings.database_url)
    yield database
    database.dispose()


@pytest.fixture
def recorder() -> Recording:
    return Recording()


@pytest.fixture
def patient(db: Database, recorder: Recording, settings: Settings) -> Engine:
    """The default lease: 120 s."""
    return Engine(db, recorder, settings)


@pytest.fixture
def eager(db: Database, recorder: Recording, settings: Settings) -> Engine:
    """A lease of 30 s."""
    return Engine(db, recorder, settings.model_copy(update={"step_lease": 30.0}))


def silent_since(db: Database, run_id: str, key: str, seconds_ago: float) -> Step:
    """Set the step running for ``LOST`` with its last heartbeat that long ago."""
    with db.session() as session:
        step = repository.get_step(session, run_id=run_id, key=key)
        repository.set_step_status(session, step=step, status=StepStatus.RUNNING, task_id=LOST)
        session.execute(
            update(Step)
            .where(col(Step.id) == step.id)
            .values(heartbeat_at=utcnow() - timedelta(seconds=seconds_ago))
        )
    with db.session() as session:
        return repository.get_step(session, run_id=run_id, key=key)


def events(db: Database, run_id: str, kind: EventKind) -> list[str]:
    with db.session() as session:
        return [e.message for e in repository.events_of(session, run_id=run_id) if e.event == kind]


def first_vm_step(db: Database, run_id: str) -> Step:
    with db.session() as session:
        return next(s for s in repository.steps_of(session, run_id=run_id, stage=0) if s.vm)


def test_a_silent_step_is_sent_again_once_its_lease_has_passed(
    db: Database, recorder: Recording, patient: Engine, eager: Engine, bundle: Bundle
) -> None:
    run = patient.start(bundle, "three-tier", "test")
    recorder.sent.clear()
    step = silent_since(db, run.id, first_vm_step(db, run.id).key, seconds_ago=60)

    assert Recovery(patient).take_over_orphaned_steps() == []  # 60 s of silence is within 120 s
    assert Recovery(eager).take_over_orphaned_steps() == [run.id]
    assert Recovery(eager).take_over_orphaned_steps() == []  # taken once

    # only the silent step's unit is sent again, as a stage of its own (it advances the run)
    assert recorder.sent == [(run.id, 0, [step.unit])]
    with db.session() as session:
        taken = repository.get_step(session, run_id=run.id, key=step.key)
    assert (taken.status, taken.task_id, taken.attempts) == (StepStatus.PENDING, None, 1)
    [message] = events(db, run.id, EventKind.STEP_TAKEN_OVER)
    assert step.key in message and "sent again" in message


def test_a_step_whose_worker_beats_is_left_alone(
    db: Database, recorder: Recording, eager: Engine, bundle: Bundle
) -> None:
    engine = eager
    run = engine.start(bundle, "three-tier", "test")
    recorder.sent.clear()
    step = silent_since(db, run.id, first_vm_step(db, run.id).key, seconds_ago=60)
    # the worker holding it beats once: the step is alive again
    with db.session() as session:
        assert repository.beat(session, owners={step.id or 0: LOST}) == 1
        # a beat from another delivery does not refresh it
        assert repository.beat(session, owners={step.id or 0: "someone-else"}) == 0
    assert Recovery(engine).take_over_orphaned_steps() == []
    assert recorder.sent == []


def test_a_silent_script_fails_for_an_operator_instead_of_running_again(
    db: Database, recorder: Recording, eager: Engine, bundle: Bundle
) -> None:
    engine = eager
    run = engine.start(bundle, "three-tier", "planned")  # stage 0 is a script
    recorder.sent.clear()
    with db.session() as session:
        [script] = repository.steps_of(session, run_id=run.id, stage=0)
    assert script.kind == StepKind.SCRIPT
    silent_since(db, run.id, script.key, seconds_ago=60)

    assert Recovery(engine).take_over_orphaned_steps() == [run.id]
    assert recorder.sent == []  # not run again
    with db.session() as session:
        failed = repository.get_step(session, run_id=run.id, key=script.key)
        current = repository.get_run(session, run_id=run.id)
    assert failed.status == StepStatus.FAILED
    assert "the worker died while script" in failed.error
    assert f"ferryman runs resume {run.id}" in failed.error
    assert current.status == RunStatus.FAILED  # the settled stage was advanced at once
    # the key is said once: the step's error leaves it to the run's error and the event
    assert not failed.error.startswith(script.key)
    assert current.error.startswith(f"{script.key}: its worker ")
    assert current.error.count(script.key) == 1
    [taken] = events(db, run.id, EventKind.STEP_TAKEN_OVER)
    assert taken.startswith(f"{script.key}: its worker ") and taken.count(script.key) == 1


class TakenOverMidStep(FakeExecutor):
    """Another watch takes the step over while this delivery is still executing it."""

    def __init__(self, db: Database, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.db = db

    def run_step(self, ctx: Any, spec: Any) -> Any:
        outcome = super().run_step(ctx, spec)
        with self.db.session() as session:
            session.execute(
                update(Step)
                .where(col(Step.run_id) == ctx.run_id, col(Step.key) == spec.key)
                .values(task_id="the-new-delivery")
            )
        return outcome


class FakeRequest:
    id = "the-old-delivery"
    retries = 0


class FakeTask:
    request = FakeRequest()


def test_a_delivery_whose_step_was_taken_over_leaves_it_to_the_new_one(
    db: Database, patient: Engine, bundle: Bundle
) -> None:
    engine = patient
    run = engine.start(bundle, "three-tier", "test")
    with db.session() as session:
        stage = engine.compiled_runs.get(session, run.id).stages[0]
    unit = stage.units[0]
    runner = UnitRunner(engine, TakenOverMidStep(db))
    summary = runner.run(FakeTask(), run_id=run.id, unit=unit.to_json())
    assert summary["status"] == "duplicate"
    with db.session() as session:
        step = repository.get_step(session, run_id=run.id, key=unit.steps[0].key)
    # still running, held by the new delivery: the old one did not record its outcome
    assert (step.status, step.task_id) == (StepStatus.RUNNING, "the-new-delivery")


def test_the_heartbeat_refreshes_held_steps_and_stops_when_idle(
    db: Database, patient: Engine, bundle: Bundle
) -> None:
    engine = patient
    run = engine.start(bundle, "three-tier", "test")
    step = silent_since(db, run.id, first_vm_step(db, run.id).key, seconds_ago=600)
    heartbeat = Heartbeat(db, interval=0.05)
    with heartbeat.holding(step.id or 0, LOST):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with db.session() as session:
                fresh = repository.get_step(session, run_id=run.id, key=step.key)
            if fresh.heartbeat_at and fresh.heartbeat_at > utcnow() - timedelta(seconds=5):
                break
            time.sleep(0.02)
        else:
            pytest.fail("the heartbeat thread never refreshed the held step")
    assert heartbeat.held() == {}
    deadline = time.monotonic() + 10
    while heartbeat._thread is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert heartbeat._thread is None, "the heartbeat thread kept running with nothing held"


def test_a_run_whose_delivery_vanished_mid_step_completes(tmp_path: Path, bundle: Bundle) -> None:
    """Stage 0 ran except one step, left running by a delivery whose message is gone."""
    executor = FakeExecutor()
    settings = fast_settings(tmp_path, step_heartbeat=0.1, step_lease=0.5)
    runtime = build_runtime(settings, executor)
    plan = without_gate(bundle)
    try:
        run = Engine(runtime.db, Recording(), settings).start(plan, "three-tier", "test")
        with runtime.db.session() as session:
            steps = repository.steps_of(session, run_id=run.id, stage=0)
            unit = [s for s in steps if s.unit == steps[0].unit]
            # the unit's first step is done, its second was running when the worker died;
            # every other unit of the stage finished
            orphan, rest = unit[1], unit[2:]
            for step in [unit[0], *(s for s in steps if s.unit != orphan.unit)]:
                repository.set_step_status(session, step=step, status=StepStatus.RUNNING)
                repository.set_step_status(session, step=step, status=StepStatus.SUCCEEDED)
        silent_since(runtime.db, run.id, orphan.key, seconds_ago=5)
        with worker(runtime, ["stockholm", "gothenburg"], concurrency=4, gate_interval=0.05):
            done = wait_for(runtime.db, run.id, [RunStatus.SUCCEEDED, RunStatus.FAILED], timeout=60)
        assert done.status == RunStatus.SUCCEEDED, done.error
        # the orphan and the rest of its unit ran once, in the new delivery; nothing else of
        # stage 0 ran again
        stage0 = {(s.kind, s.vm) for s in steps}
        again = {call for call in executor.calls if call in stage0}
        assert again == {(s.kind, s.vm) for s in [orphan, *rest]}, again
        assert set(executor.calls.values()) == {1}, executor.calls
        assert len(events(runtime.db, run.id, EventKind.STEP_TAKEN_OVER)) == 1
    finally:
        runtime.db.dispose()


def entered_ago(db: Database, run_id: str, seconds: float) -> None:
    with db.session() as session:
        session.execute(
            update(Run)
            .where(col(Run.id) == run_id)
            .values(stage_entered_at=utcnow() - timedelta(seconds=seconds))
        )


def test_units_of_a_quiet_stage_that_never_started_are_sent_again(
    db: Database, recorder: Recording, patient: Engine, eager: Engine, bundle: Bundle
) -> None:
    run = patient.start(bundle, "three-tier", "test")
    [(_, _, units)] = recorder.sent  # stage 0 was sent, and its messages were lost
    recorder.sent.clear()
    assert Recovery(eager).resend_idle_units() == []  # entered just now

    entered_ago(db, run.id, 60)
    assert Recovery(patient).resend_idle_units() == []  # 60 s of quiet is within 120 s
    assert Recovery(eager).resend_idle_units() == [run.id]
    assert Recovery(eager).resend_idle_units() == []  # once per lease: the stage's entry moved on
    assert recorder.sent == [(run.id, 0, units)]
    [message] = events(db, run.id, EventKind.UNITS_RESENT)
    assert "sent again" in message and units[0] in message


def test_a_stage_with_a_sign_of_life_keeps_its_waiting_units(
    db: Database, recorder: Recording, eager: Engine, bundle: Bundle
) -> None:
    engine = eager
    run = engine.start(bundle, "three-tier", "test")
    [(_, _, units)] = recorder.sent
    recorder.sent.clear()
    entered_ago(db, run.id, 60)
    with db.session() as session:
        steps = repository.steps_of(session, run_id=run.id, stage=0)
        # one unit's first step just finished: the stage is alive, its other units queued
        repository.set_step_status(session, step=steps[0], status=StepStatus.RUNNING)
        repository.set_step_status(session, step=steps[0], status=StepStatus.SUCCEEDED)
    assert Recovery(engine).resend_idle_units() == []
    # later, everything quiet for longer than the lease: only units still waiting are sent
    with db.session() as session:
        session.execute(
            update(Step)
            .where(col(Step.run_id) == run.id)
            .values(
                started_at=utcnow() - timedelta(seconds=60),
                heartbeat_at=utcnow() - timedelta(seconds=60),
                finished_at=None,
            )
        )
        # the first unit is mid-step in a delivery (the takeover's business, not this one's)
        step = repository.get_step(session, run_id=run.id, key=steps[1].key)
        repository.set_step_status(session, step=step, status=StepStatus.RUNNING, task_id=LOST)
        session.execute(
            update(Step)
            .where(col(Step.id) == step.id)
            .values(
                started_at=utcnow() - timedelta(seconds=60),
                heartbeat_at=utcnow() - timedelta(seconds=60),
            )
        )
    assert Recovery(engine).resend_idle_units() == [run.id]
    assert recorder.sent == [(run.id, 0, [u for u in units if u != steps[0].unit])]
