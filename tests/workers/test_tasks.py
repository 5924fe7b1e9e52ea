"""The unit task: redelivery, retry policy, failure recording; and the Celery app's settings."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from celery.exceptions import Retry

from plans import load_bundle
from tests.workflows.fakes import FakeExecutor
from workers.app import create_app, transport_options
from workers.errors import CmdletFailed, RemoteTransientError
from workers.tasks import UnitRunner, describe_failure, register
from workflows.compiler import CompiledRun
from workflows.dispatch import unit_kwargs
from workflows.engine import Engine
from workflows.settings import RetryPolicy, Settings
from workflows.statuses import RunStatus, StepStatus
from workflows.steps import TASK_ADVANCE, TASK_SCRIPT, TASK_VM, StepKind, StepSpec
from workflows.store import Database, repository

EXAMPLE = Path(__file__).resolve().parents[2] / "plans" / "examples" / "three-tier.yaml"


@dataclass
class Request:
    retries: int = 0


@dataclass
class FakeTask:
    """Stands in for a bound Celery task: records retry() calls."""

    request: Request = field(default_factory=Request)
    retried: list[dict[str, Any]] = field(default_factory=list)

    def retry(self, **kwargs: Any) -> Retry:
        self.retried.append(kwargs)
        return Retry("retry", when=kwargs.get("countdown"))


class Recording:
    """A dispatcher that only remembers what it was asked to send."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    def dispatch(self, run_id: str, stage: Any) -> None:
        self.sent.append((run_id, stage))


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/t.db",
        retry=RetryPolicy(max_retries=2, base_delay=1.0, max_delay=4.0),
    )
    return Engine(Database(settings.database_url), Recording(), settings)


def first_unit(engine: Engine) -> tuple[str, dict[str, Any]]:
    run = engine.start(load_bundle([EXAMPLE]), "three-tier", "test")
    dispatched = engine.dispatcher.sent[0][1]  # type: ignore[attr-defined]
    return run.id, dispatched.units[0].to_json()


def statuses(engine: Engine, run_id: str, unit: dict[str, Any]) -> list[str]:
    with engine.db.session() as session:
        return [
            repository.get_step(session, run_id=run_id, key=s["key"]).status for s in unit["steps"]
        ]


def test_a_redelivered_unit_does_nothing_twice(engine: Engine) -> None:
    executor = FakeExecutor()
    runner = UnitRunner(engine, executor)
    run_id, unit = first_unit(engine)
    assert runner.run(FakeTask(), run_id=run_id, unit=unit)["status"] == "succeeded"
    assert runner.run(FakeTask(), run_id=run_id, unit=unit)["status"] == "succeeded"
    assert set(executor.calls.values()) == {1}
    assert statuses(engine, run_id, unit) == ["succeeded"] * 5


def test_a_step_left_running_by_a_dead_worker_runs_again(engine: Engine) -> None:
    executor = FakeExecutor()
    run_id, unit = first_unit(engine)
    with engine.db.session() as session:
        step = repository.get_step(session, run_id=run_id, key=unit["steps"][0]["key"])
        repository.set_step_status(session, step=step, status=StepStatus.RUNNING)
    UnitRunner(engine, executor).run(FakeTask(), run_id=run_id, unit=unit)
    with engine.db.session() as session:
        step = repository.get_step(session, run_id=run_id, key=unit["steps"][0]["key"])
    assert (step.status, step.attempts) == ("succeeded", 2)


def test_transient_error_asks_celery_to_retry_with_bounded_backoff(engine: Engine) -> None:
    executor = FakeExecutor(transient={("test_failover", "sql-01"): 5})
    runner = UnitRunner(engine, executor)
    run_id, unit = first_unit(engine)
    task = FakeTask(Request(retries=1))
    with pytest.raises(Retry):
        runner.run(task, run_id=run_id, unit=unit)
    countdown = task.retried[0]["countdown"]
    assert 1.0 <= countdown <= 2.0  # attempt 1: ceiling 2 s, half of it fixed, half jitter
    assert task.retried[0]["max_retries"] == 2
    assert statuses(engine, run_id, unit)[0] == "pending"  # waiting for its retry
    # the last allowed attempt fails for good and reports instead of raising
    summary = runner.run(FakeTask(Request(retries=2)), run_id=run_id, unit=unit)
    assert summary == {
        "run_id": run_id,
        "unit": unit["key"],
        "status": "failed",
        "step": unit["steps"][0]["key"],
    }
    with engine.db.session() as session:
        step = repository.get_step(session, run_id=run_id, key=unit["steps"][0]["key"])
    assert step.error.endswith("gave up after 3 attempts")
    assert statuses(engine, run_id, unit)[1:] == ["pending"] * 4


def test_a_cancelled_run_stops_its_units(engine: Engine) -> None:
    executor = FakeExecutor()
    run_id, unit = first_unit(engine)
    engine.cancel(run_id, by="ops")
    summary = UnitRunner(engine, executor).run(FakeTask(), run_id=run_id, unit=unit)
    assert summary["status"] == "cancelled" and not executor.calls


def test_failure_message_names_vm_host_and_cmdlet() -> None:
    spec = StepSpec("k", StepKind.FAILOVER, "sql-01", "hv-got-1")
    exc = CmdletFailed(
        "state is Error; run Resume-VMReplication first",
        host="hv-got-1",
        cmdlet="Start-VMFailover",
        fully_qualified_error_id="InvalidState,Microsoft.HyperV",
    )
    assert describe_failure(spec, exc) == (
        "failover of VM sql-01 on hv-got-1 [Start-VMFailover: InvalidState,Microsoft.HyperV] "
        "failed (permanent): state is Error; run Resume-VMReplication first"
    )


def test_app_conventions_and_registered_tasks(engine: Engine) -> None:
    app = create_app(engine.settings)
    register(app, engine, FakeExecutor())
    conf = app.conf
    assert (conf.task_serializer, conf.accept_content) == ("json", ["json"])
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1 and conf.worker_send_task_events
    assert not conf.task_track_started  # Flower has the task-started event; no extra write
    assert {TASK_VM, TASK_SCRIPT, TASK_ADVANCE} <= set(app.tasks)
    redis = Settings(broker_url="redis://127.0.0.1:1/0", visibility_timeout=9000)
    assert transport_options(redis)["visibility_timeout"] == 9000
    assert transport_options(Settings())["polling_interval"] == 0.005


def test_task_messages_carry_ids_and_references_only(engine: Engine) -> None:
    run = engine.start(load_bundle([EXAMPLE]), "three-tier", "planned")
    with engine.db.session() as session:
        compiled = CompiledRun.from_json(repository.get_run(session, run_id=run.id).compiled)
    for stage in compiled.stages:
        for unit in stage.units:
            kwargs = unit_kwargs(run.id, stage, unit)
            assert list(kwargs)[:5] == ["run_id", "stage", "group", "vm", "unit_key"]
            text = json.dumps(kwargs)
            assert "FERRYMAN_LAB_PASSWORD" not in text  # not even the reference travels
    assert run.status == RunStatus.RUNNING


def test_the_executor_is_told_which_start_of_a_step_it_runs(engine: Engine) -> None:
    """A step's first start and its retry get attempt 1 and 2: a test failover that finds its
    test VM on the retry adopts it, while on a first start it is an earlier test's leftover."""
    executor = FakeExecutor(transient={("test_failover", "sql-01"): 1})
    runner = UnitRunner(engine, executor)
    run_id, unit = first_unit(engine)
    with pytest.raises(Retry):
        runner.run(FakeTask(Request(retries=0)), run_id=run_id, unit=unit)
    summary = runner.run(FakeTask(Request(retries=1)), run_id=run_id, unit=unit)
    assert summary["status"] == "succeeded"
    steps = len(unit["steps"])
    assert unit["steps"][0]["kind"] == "test_failover"
    # the first step twice (its start and its retry), then each later step once
    assert [ctx.attempt for ctx in executor.contexts] == [1, 2] + [1] * (steps - 1)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """The engine on SQLite, and on a throwaway PostgreSQL database."""
    if request.param == "sqlite":
        yield request.getfixturevalue("engine")
        return
    from contextlib import contextmanager

    from tests.workflows.conftest import _postgres_database

    with contextmanager(_postgres_database)() as url:
        settings = Settings(database_url=url)
        engine = Engine(Database(settings.database_url), Recording(), settings)
        try:
            yield engine
        finally:
            engine.db.dispose()


def test_a_unit_writes_each_step_on_its_own_and_reads_once(any_store: Engine) -> None:
    """Each step's success is written with the next step's start (on PostgreSQL in one
    statement, as the first step's read and start are), each write taking effect on its own
    (another connection sees it while the next step runs), and only the first step reads."""
    from sqlalchemy import event

    engine = any_store
    run_id, unit = first_unit(engine)
    steps = len(unit["steps"])
    assert steps >= 3
    seen_while_running: list[list[str]] = []
    watching = [False]

    class Watching(FakeExecutor):
        def run_step(self, ctx: Any, spec: StepSpec) -> Any:
            watching[0] = True
            try:  # another connection, another session: what anyone else would read
                seen_while_running.append(statuses(engine, run_id, unit))
            finally:
                watching[0] = False
            return super().run_step(ctx, spec)

    runner = UnitRunner(engine, Watching())
    with engine.db.session() as session:
        engine.compiled_runs.get(session, run_id)  # decoded before: not counted
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if not watching[0]:
            sent.append(statement.lstrip().upper().split(None, 1)[0])

    event.listen(engine.db.engine, "before_cursor_execute", record)
    try:
        summary = runner.run(FakeTask(), run_id=run_id, unit=unit)
    finally:
        event.remove(engine.db.engine, "before_cursor_execute", record)
    # the first step reads the VM's steps and starts; then each success with the next start
    # (PostgreSQL: the read and the first start one statement, each success and the next
    # start one), and the last success alone
    if engine.db.engine.dialect.name == "postgresql":
        assert sent == ["WITH"] * steps + ["UPDATE"], sent
    else:
        assert sent == ["SELECT"] + ["UPDATE"] * (2 * steps), sent
    assert summary["status"] == "succeeded"
    assert statuses(engine, run_id, unit) == ["succeeded"] * steps
    assert seen_while_running == [
        ["succeeded"] * index + ["running"] + ["pending"] * (steps - index - 1)
        for index in range(steps)
    ]
    with engine.db.session() as session:
        recorded = [
            repository.get_step(session, run_id=run_id, key=s["key"]) for s in unit["steps"]
        ]
    # every step kept its own result, and the next step's context saw the earlier ones
    assert all(step.result for step in recorded)
    assert recorded[-1].result and len(recorded[-1].result["prior"]) == steps - 1


def test_a_unit_that_breaks_fails_its_steps_instead_of_leaving_them_pending(
    engine: Engine,
) -> None:
    class Broken(FakeExecutor):
        def context(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError()  # a defect outside the executors' error handling

    run_id, unit = first_unit(engine)
    runner = UnitRunner(engine, FakeExecutor())
    runner.executor = Broken()
    # context() is inside the step's error handling: that is a step failure, not a break
    assert runner.execute(FakeTask(), run_id=run_id, unit=unit)["status"] == "failed"
    with engine.db.session() as session:  # free the plan's VMs for the next run of it
        repository.release_vms(session, run=repository.get_run(session, run_id=run_id))

    run_id, unit = first_unit(engine)
    runner = UnitRunner(engine, FakeExecutor())
    runner._start = None  # type: ignore[assignment,method-assign]  # breaks the unit itself
    summary = runner.execute(FakeTask(), run_id=run_id, unit=unit)
    assert summary["status"] == "failed"
    assert "the unit broke: TypeError" in summary["error"]
    assert f"ferryman runs resume {run_id}" in summary["error"]
    assert statuses(engine, run_id, unit) == ["failed"] * len(unit["steps"])
    with engine.db.session() as session:
        step = repository.get_step(session, run_id=run_id, key=unit["steps"][0]["key"])
    assert "the unit broke" in step.error


class SentThenLost(RemoteTransientError):
    """A failure after the request was sent (HTTP 500 after Command): its effect is unknown."""

    outcome_unknown = True


class LosesEveryAnswer(FakeExecutor):
    def run_step(self, ctx: Any, spec: StepSpec) -> Any:
        with self.lock:
            self.calls[(spec.kind.value, spec.vm)] += 1
        raise SentThenLost(f"{spec.key}: the connection reset after the command was sent")


def test_an_outcome_unknown_script_fails_at_once_instead_of_running_twice(
    engine: Engine,
) -> None:
    run = engine.start(load_bundle([EXAMPLE]), "three-tier", "planned")
    unit = engine.dispatcher.sent[-1][1].units[0].to_json()  # type: ignore[attr-defined]
    assert unit["steps"][0]["kind"] == StepKind.SCRIPT
    executor = LosesEveryAnswer()
    task = FakeTask()
    summary = UnitRunner(engine, executor).run(task, run_id=run.id, unit=unit)
    assert task.retried == []  # not sent to Celery's retry
    assert summary["status"] == "failed"
    assert sum(executor.calls.values()) == 1
    with engine.db.session() as session:
        step = repository.get_step(session, run_id=run.id, key=unit["steps"][0]["key"])
    assert (step.status, step.attempts) == ("failed", 1)
    assert "gave up" not in step.error  # never retried: not a spent retry budget


def test_an_outcome_unknown_vm_step_is_retried_as_it_reads_its_effect_back(
    engine: Engine,
) -> None:
    run_id, unit = first_unit(engine)
    assert unit["steps"][0]["kind"] == StepKind.TEST_FAILOVER
    task = FakeTask()
    with pytest.raises(Retry):
        UnitRunner(engine, LosesEveryAnswer()).run(task, run_id=run_id, unit=unit)
    assert len(task.retried) == 1
    assert statuses(engine, run_id, unit)[0] == "pending"  # waiting for its retry


def test_a_stage_not_settled_is_asked_again_at_the_poll_interval(engine: Engine) -> None:
    settings = engine.settings.model_copy(update={"advance_poll": 0.25})
    app = create_app(settings)
    polled = Engine(engine.db, Recording(), settings)
    register(app, polled, FakeExecutor())
    run = polled.start(load_bundle([EXAMPLE]), "three-tier", "test")
    advance = app.tasks[TASK_ADVANCE]
    # the stage's steps have not run: the callback is retried by the one policy, at the poll
    # (as a worker delivers it: the request carries the delivery; the retry goes to memory://)
    kwargs = {"run_id": run.id, "stage": 0}
    advance.push_request(
        id="callback-1", retries=3, args=(), kwargs=kwargs, called_directly=False, is_eager=False
    )
    try:
        with pytest.raises(Retry) as retried:
            advance(**kwargs)
    finally:
        advance.pop_request()
    assert retried.value.when == 0.25
