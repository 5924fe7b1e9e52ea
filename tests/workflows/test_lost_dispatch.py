"""A stage committed but never sent (its process died in between) is sent again, once.

The redelivered trigger (same idempotency key) sends it at once; the workers' watch sends any
other after ``dispatch_grace``. Sending a stage twice runs each step once.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from celery import group
from rich.console import Console
from sqlalchemy import update
from sqlmodel import col

from plans import Bundle
from tests.workflows.conftest import fast_settings
from tests.workflows.fakes import FakeExecutor
from tests.workflows.test_engine import without_gate
from workers.embedded import build_runtime, worker
from workflows import report
from workflows.compiler import Stage
from workflows.dispatch import CeleryDispatcher, unit_kwargs
from workflows.engine import Engine
from workflows.events import EventKind
from workflows.progress import wait_for
from workflows.recovery import Recovery
from workflows.settings import Settings
from workflows.statuses import RunStatus, StepStatus
from workflows.store import Database, Run, Step, repository, utcnow


class Killed(BaseException):
    """Stands in for SIGKILL between the commit and the send."""


class CrashingDispatcher:
    def dispatch(self, run_id: str, stage: Stage) -> None:
        raise Killed(run_id)


class Recording:
    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []

    def dispatch(self, run_id: str, stage: Stage) -> None:
        self.sent.append((run_id, stage.index))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path}/t.db")


def crashed_run(db: Database, settings: Settings, bundle: Bundle, key: str | None) -> Run:
    with pytest.raises(Killed):
        Engine(db, CrashingDispatcher(), settings).start(
            bundle, "three-tier", "test", idempotency_key=key
        )
    with db.session() as session:
        runs = repository.list_runs(session)
    assert len(runs) == 1 and runs[0].status == RunStatus.RUNNING
    assert runs[0].dispatched_stage is None
    return runs[0]


def test_a_redelivered_trigger_sends_the_lost_stage_once(
    settings: Settings, bundle: Bundle
) -> None:
    db = Database(settings.database_url)
    run = crashed_run(db, settings, bundle, "incident-9")
    recorder = Recording()
    engine = Engine(db, recorder, settings)
    again = engine.start(bundle, "three-tier", "test", idempotency_key="incident-9")
    assert again.id == run.id
    assert recorder.sent == [(run.id, 0)]
    engine.start(bundle, "three-tier", "test", idempotency_key="incident-9")
    assert recorder.sent == [(run.id, 0)], "a stage recorded as sent is not sent again"
    with db.session() as session:
        assert repository.get_run(session, run_id=run.id).dispatched_stage == 0
        events = [e.event for e in repository.events_of(session, run_id=run.id)]
    assert EventKind.STAGE_RESENT.value in events
    db.dispose()


def test_the_sweep_waits_for_the_grace_then_sends(settings: Settings, bundle: Bundle) -> None:
    db = Database(settings.database_url)
    run = crashed_run(db, settings, bundle, None)
    recorder = Recording()
    patient = Engine(db, recorder, settings)  # default grace: 30 s
    assert Recovery(patient).resend_lost_stages() == []
    assert recorder.sent == []
    eager = Engine(db, recorder, settings.model_copy(update={"dispatch_grace": 0.0}))
    assert Recovery(eager).resend_lost_stages() == [run.id]
    assert Recovery(eager).resend_lost_stages() == []  # sent and recorded: nothing left
    assert recorder.sent == [(run.id, 0)]
    db.dispose()


def test_a_normal_start_records_its_dispatch(settings: Settings, bundle: Bundle) -> None:
    db = Database(settings.database_url)
    recorder = Recording()
    engine = Engine(db, recorder, settings.model_copy(update={"dispatch_grace": 0.0}))
    run = engine.start(bundle, "three-tier", "test")
    with db.session() as session:
        assert repository.get_run(session, run_id=run.id).dispatched_stage == 0
    assert Recovery(engine).resend_lost_stages() == []
    assert recorder.sent == [(run.id, 0)]
    db.dispose()


def test_the_workers_watch_finishes_a_run_whose_stages_were_sent_twice(
    tmp_path: Path, bundle: Bundle
) -> None:
    # steps take a moment, so each stage outlasts a few rounds of the watch and its resend
    executor = FakeExecutor(delay=0.05)
    settings = fast_settings(tmp_path, dispatch_grace=0.01)
    runtime = build_runtime(settings, executor)
    plan = without_gate(bundle)
    try:
        # the creating process died before sending: the watch must send stage 0
        run = crashed_run(runtime.db, settings, plan, None)
        with worker(runtime, ["stockholm", "gothenburg"], concurrency=4, gate_interval=0.05):
            # and every later stage is sent once more, as if each sender died after its send
            # but before recording it: the units of the duplicate must not run steps again
            forgotten: set[int] = set()

            def resent_everything() -> None:
                with runtime.db.session() as session:
                    current = repository.get_run(session, run_id=run.id)
                    stage = current.dispatched_stage
                    if stage is None or stage in forgotten:
                        return
                    forgotten.add(stage)
                    session.execute(
                        update(Run)
                        .where(col(Run.id) == run.id, col(Run.dispatched_stage) == stage)
                        .values(dispatched_stage=None)
                    )

            done = wait_for(
                runtime.db,
                run.id,
                [RunStatus.SUCCEEDED, RunStatus.FAILED],
                timeout=60,
                interval=0.02,
                on_tick=resent_everything,
            )
        assert done.status == RunStatus.SUCCEEDED, done.error
        assert executor.calls and set(executor.calls.values()) == {1}, executor.calls
        with runtime.db.session() as session:
            resent = [
                e
                for e in repository.events_of(session, run_id=run.id)
                if e.event == EventKind.STAGE_RESENT
            ]
        assert len(resent) >= 2
    finally:
        runtime.db.dispose()


def test_a_settled_stage_whose_callback_was_lost_is_advanced(
    settings: Settings, bundle: Bundle
) -> None:
    db = Database(settings.database_url)
    recorder = Recording()
    patient = Engine(db, recorder, settings)
    eager = Engine(db, recorder, settings.model_copy(update={"dispatch_grace": 0.0}))
    run = patient.start(bundle, "three-tier", "test")
    assert Recovery(eager).advance_settled_stages() == []  # stage 0's steps have not run yet
    with db.session() as session:
        for step in repository.steps_of(session, run_id=run.id, stage=0):
            repository.set_step_status(session, step=step, status=StepStatus.RUNNING)
            repository.set_step_status(session, step=step, status=StepStatus.SUCCEEDED)
    # every unit reported, but no ferryman.engine.advance came
    # within the grace: the callback may come
    assert Recovery(patient).advance_settled_stages() == []
    assert Recovery(eager).advance_settled_stages() == [run.id]
    assert Recovery(eager).advance_settled_stages() == []
    with db.session() as session:
        moved = repository.get_run(session, run_id=run.id)
    # stage 1 of the example is the databases gate: the run now waits for an operator there
    assert (moved.current_stage, moved.status) == (1, RunStatus.WAITING)
    assert patient.advance(run.id, 0) == "stale"  # the late real callback does nothing
    db.dispose()


def quiet_for(db: Database, run_id: str, seconds: float) -> None:
    """Date the run's current stage, and everything its steps did, that long ago."""
    then = utcnow() - timedelta(seconds=seconds)
    with db.session() as session:
        session.execute(update(Run).where(col(Run.id) == run_id).values(stage_entered_at=then))
        session.execute(
            update(Step)
            .where(col(Step.run_id) == run_id, col(Step.finished_at).is_not(None))
            .values(started_at=then, heartbeat_at=then, finished_at=then)
        )


def rendered_report(db: Database, run_id: str) -> str:
    console = Console(record=True, width=200)
    with db.session() as session:
        console.print(report.render(report.build(session, run_id)))
    return console.export_text()


@pytest.fixture
def short_lease(settings: Settings) -> Settings:
    """A 5 s lease under the default 30 s dispatch grace."""
    return settings.model_copy(update={"step_lease": 5.0, "step_heartbeat": 1.0})


def test_a_lost_callback_is_recovered_within_the_lease_and_reported(
    settings: Settings, short_lease: Settings, bundle: Bundle
) -> None:
    db = Database(settings.database_url)
    recorder = Recording()
    run = Engine(db, recorder, settings).start(bundle, "three-tier", "test")
    with db.session() as session:
        for step in repository.steps_of(session, run_id=run.id, stage=0):
            repository.set_step_status(session, step=step, status=StepStatus.RUNNING)
            repository.set_step_status(session, step=step, status=StepStatus.SUCCEEDED)
    quiet_for(db, run.id, 6)  # settled 6 s ago; its callback never came
    assert Recovery(Engine(db, recorder, settings)).advance_settled_stages() == []  # 6 < 30 s
    assert Recovery(Engine(db, recorder, short_lease)).advance_settled_stages() == [run.id]
    with db.session() as session:
        moved = repository.get_run(session, run_id=run.id)
        [event] = [
            e
            for e in repository.events_of(session, run_id=run.id)
            if e.event == EventKind.CALLBACK_RECOVERED
        ]
    assert (moved.current_stage, moved.status) == (1, RunStatus.WAITING)
    assert "callback never came" in event.message
    text = rendered_report(db, run.id)
    assert "recovered after a crash" in text and "callback_recovered" in text
    db.dispose()


def test_an_unsent_stage_is_sent_within_the_lease_and_reported(
    settings: Settings, short_lease: Settings, bundle: Bundle
) -> None:
    db = Database(settings.database_url)
    run = crashed_run(db, settings, bundle, None)
    quiet_for(db, run.id, 6)
    recorder = Recording()
    assert Recovery(Engine(db, recorder, settings)).resend_lost_stages() == []  # 6 < 30 s
    assert Recovery(Engine(db, recorder, short_lease)).resend_lost_stages() == [run.id]
    assert recorder.sent == [(run.id, 0)]
    text = rendered_report(db, run.id)
    assert "recovered after a crash" in text and "stage_resent" in text
    db.dispose()


class WithoutCallbacks(CeleryDispatcher):
    """Sends each stage's units but never its callback: every chord callback is lost."""

    def dispatch(self, run_id: str, stage: Stage) -> None:
        header = [
            self.app.signature(unit.task, kwargs=unit_kwargs(run_id, stage, unit), queue=unit.queue)
            for unit in stage.units
        ]
        if header:
            group(header).apply_async()


def test_the_watch_finishes_a_run_whose_callbacks_are_all_lost_within_the_lease(
    tmp_path: Path, bundle: Bundle
) -> None:
    # a dispatch grace far beyond the test's bound: only the lease can move the run on
    settings = fast_settings(tmp_path, dispatch_grace=600.0, step_heartbeat=0.2, step_lease=1.0)
    runtime = build_runtime(settings, FakeExecutor())
    runtime.engine.dispatcher = WithoutCallbacks(runtime.app)
    try:
        with worker(runtime, ["stockholm", "gothenburg"], concurrency=4, gate_interval=0.1):
            run = runtime.engine.start(without_gate(bundle), "three-tier", "test")
            done = wait_for(
                runtime.db, run.id, [RunStatus.SUCCEEDED, RunStatus.FAILED], timeout=120
            )
        assert done.status == RunStatus.SUCCEEDED, done.error
        with runtime.db.session() as session:
            recovered = [
                e.data["stage"]
                for e in repository.events_of(session, run_id=run.id)
                if e.event == EventKind.CALLBACK_RECOVERED and e.data
            ]
            compiled = runtime.engine.compiled_runs.get(session, run.id)
        # every stage's callback was lost, and every stage was moved on by the watch, once
        assert recovered == [stage.index for stage in compiled.stages]
    finally:
        runtime.db.dispose()
