"""Deliveries of a unit: a redelivery (same task id) resumes its step; a duplicate dispatch of
the stage (another task id) leaves a step that another delivery runs alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from plans import load_bundle
from tests.workers.test_tasks import EXAMPLE, FakeTask, Recording, Request
from tests.workflows.fakes import FakeExecutor
from workers.tasks import UnitRunner
from workflows.engine import Engine
from workflows.settings import Settings
from workflows.statuses import StepStatus
from workflows.steps import TASK_SCRIPT, StepKind
from workflows.store import Database, repository


class Delivery(Request):
    """A task request with a Celery id."""

    def __init__(self, task_id: str, retries: int = 0) -> None:
        super().__init__(retries)
        self.id = task_id


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/t.db")
    return Engine(Database(settings.database_url), Recording(), settings)


def first_unit(engine: Engine) -> tuple[str, dict[str, Any]]:
    run = engine.start(load_bundle([EXAMPLE]), "three-tier", "test")
    return run.id, engine.dispatcher.sent[0][1].units[0].to_json()  # type: ignore[attr-defined]


def running(engine: Engine, run_id: str, key: str, task_id: str) -> None:
    with engine.db.session() as session:
        step = repository.get_step(session, run_id=run_id, key=key)
        repository.set_step_status(session, step=step, status=StepStatus.RUNNING, task_id=task_id)


def test_a_duplicate_delivery_leaves_a_running_step_to_its_owner(engine: Engine) -> None:
    executor = FakeExecutor()
    run_id, unit = first_unit(engine)
    first = unit["steps"][0]["key"]
    running(engine, run_id, first, "delivery-a")
    task = FakeTask(Delivery("delivery-b"))
    summary = UnitRunner(engine, executor).run(task, run_id=run_id, unit=unit)
    assert summary["status"] == "duplicate"
    assert not executor.calls
    with engine.db.session() as session:
        step = repository.get_step(session, run_id=run_id, key=first)
        rest = [repository.get_step(session, run_id=run_id, key=s["key"]) for s in unit["steps"]]
    assert (step.status, step.task_id, step.attempts) == ("running", "delivery-a", 1)
    assert [s.status for s in rest[1:]] == ["pending"] * (len(rest) - 1)


def test_the_owners_redelivery_resumes_the_step(engine: Engine) -> None:
    executor = FakeExecutor()
    run_id, unit = first_unit(engine)
    first = unit["steps"][0]["key"]
    running(engine, run_id, first, "delivery-a")
    task = FakeTask(Delivery("delivery-a"))
    assert UnitRunner(engine, executor).run(task, run_id=run_id, unit=unit)["status"] == (
        "succeeded"
    )
    with engine.db.session() as session:
        step = repository.get_step(session, run_id=run_id, key=first)
    assert (step.status, step.attempts) == ("succeeded", 2)
    assert set(executor.calls.values()) == {1}


def script_unit(engine: Engine, *, rerun: bool = False) -> tuple[str, dict[str, Any]]:
    """A planned failover's first stage: the primary site's pre-script."""
    run = engine.start(load_bundle([EXAMPLE]), "three-tier", "planned")
    unit = engine.dispatcher.sent[0][1].units[0].to_json()  # type: ignore[attr-defined]
    assert unit["task"] == TASK_SCRIPT
    unit["steps"][0]["params"]["rerun_on_redelivery"] = rerun
    return run.id, unit


def test_a_script_interrupted_by_a_dead_worker_is_not_run_again(engine: Engine) -> None:
    executor = FakeExecutor()
    run_id, unit = script_unit(engine)
    key = unit["steps"][0]["key"]
    runner = UnitRunner(engine, executor)
    # the first delivery records the step running, then its worker is killed mid-script
    running(engine, run_id, key, "delivery-a")
    summary = runner.run(FakeTask(Delivery("delivery-a")), run_id=run_id, unit=unit)
    assert summary["status"] == "failed"
    assert not executor.calls, "the script ran again after its worker died"
    with engine.db.session() as session:
        step = repository.get_step(session, run_id=run_id, key=key)
        events = [e.message for e in repository.events_of(session, run_id=run_id)]
    assert step.status == "failed"
    assert "the worker died while script 'quiesce-order-intake' ran on vmm-sto" in step.error
    assert "may or may not have completed" in step.error
    assert f"ferryman runs resume {run_id}" in step.error
    assert any("worker died" in message for message in events)
    # the operator checked and resumes: the script runs again, once
    assert engine.advance(run_id, 0) == "failed"
    engine.resume(run_id, by="ops")
    summary = runner.run(FakeTask(Delivery("delivery-c")), run_id=run_id, unit=unit)
    assert summary["status"] == "succeeded"
    assert executor.count(StepKind.SCRIPT) == 1


def test_a_script_that_opts_in_runs_again_after_a_dead_worker(engine: Engine) -> None:
    executor = FakeExecutor()
    run_id, unit = script_unit(engine, rerun=True)
    key = unit["steps"][0]["key"]
    running(engine, run_id, key, "delivery-a")
    summary = UnitRunner(engine, executor).run(
        FakeTask(Delivery("delivery-a")), run_id=run_id, unit=unit
    )
    assert summary["status"] == "succeeded"
    assert executor.count(StepKind.SCRIPT) == 1
    with engine.db.session() as session:
        assert repository.get_step(session, run_id=run_id, key=key).attempts == 2


def test_a_script_runs_normally_on_its_first_delivery(engine: Engine) -> None:
    executor = FakeExecutor()
    run_id, unit = script_unit(engine)
    summary = UnitRunner(engine, executor).run(
        FakeTask(Delivery("delivery-a")), run_id=run_id, unit=unit
    )
    assert summary["status"] == "succeeded" and executor.count(StepKind.SCRIPT) == 1
