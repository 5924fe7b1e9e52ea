"""The run commands on a real Redis broker with a worker in this process (the fake executor):
what they say and the status they exit with when the broker is down, when a command is retried
with an idempotency key, when a followed run fails, and following a run started elsewhere."""

from __future__ import annotations

import gc
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.support.servers import RedisServer
from tests.workflows.conftest import EXAMPLE, fast_settings
from tests.workflows.fakes import FakeExecutor
from workers.embedded import embedded
from workflows.cli import main
from workflows.cli.output import Exit
from workflows.operations import Operations
from workflows.progress import wait_for
from workflows.runtime import Runtime, build_runtime
from workflows.settings import Settings
from workflows.statuses import ApprovalStatus, RunStatus
from workflows.store import Database, repository

SITES = ["stockholm", "gothenburg"]


def release_results(runtime: Runtime) -> None:
    """Let go of Celery's result subscriptions while Redis is still up: results collected
    later would otherwise try to unsubscribe from a server that is gone."""
    gc.collect()
    consumer = getattr(runtime.app.backend, "result_consumer", None)
    if consumer is not None:
        consumer.stop()
        consumer._pubsub = None


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    gc.collect()  # result finalisers unsubscribe from Redis: let them while it is still up
    server.stop()


def broker_settings(tmp_path: Path, redis_server: RedisServer, **overrides: object) -> Settings:
    """Settings on ``redis_server`` and a fresh store migrated as `ferryman db upgrade` does."""
    from workflows.migrations import upgrade

    settings = fast_settings(
        tmp_path,
        broker_url=redis_server.url(0),
        result_backend=redis_server.url(1),
        dispatch_grace=0.5,
        **overrides,
    )
    upgrade(settings.database_url)
    return settings


@pytest.fixture(scope="module")
def shared_executor() -> FakeExecutor:
    return FakeExecutor()


@pytest.fixture(scope="module")
def worker(
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: RedisServer,
    shared_executor: FakeExecutor,
) -> Iterator[Runtime]:
    """A worker on the test's Redis, as a site worker would be, with the fake executor."""
    settings = broker_settings(tmp_path_factory.mktemp("store"), redis_server)
    with embedded(settings, SITES, executor=shared_executor, concurrency=4) as runtime:
        # results Celery still tracks when Redis stops try to reach it once, not for minutes
        options = dict(runtime.app.conf.result_backend_transport_options or {})
        options["retry_policy"] = {"max_retries": 0}
        runtime.app.conf.result_backend_transport_options = options
        yield runtime
    release_results(runtime)


@pytest.fixture
def environment(
    worker: Runtime, shared_executor: FakeExecutor, monkeypatch: pytest.MonkeyPatch
) -> Runtime:
    """The command's environment points at the worker's broker and store."""
    monkeypatch.setenv("FERRYMAN_DATABASE_URL", worker.settings.database_url)
    monkeypatch.setenv("FERRYMAN_BROKER_URL", worker.settings.broker_url)
    monkeypatch.setenv("FERRYMAN_RESULT_BACKEND", str(worker.settings.result_backend))
    shared_executor.reset()
    return worker


def own_cloud(plan: Path) -> Path:
    """The plan beside ``plan`` on a primary cloud named after its folder: its VMs are held by
    no run of another test (a VM is held by one run at a time, and a cancelled test run keeps
    its VMs until cleaned up)."""
    fabric = plan.parent / "fabric.yaml"
    if not fabric.exists():
        fabric.write_text((EXAMPLE.parent / "fabric.yaml").read_text(encoding="utf-8"))
    if not plan.exists():
        plan.write_text(EXAMPLE.read_text(encoding="utf-8"))
    text = fabric.read_text(encoding="utf-8")
    fabric.write_text(text.replace("sto-gold", f"sto-gold-{plan.parent.name[-12:]}"))
    return plan


def two_gates(directory: Path) -> Path:
    """The example plan with a second manual gate after the application tier."""
    own_cloud(directory / EXAMPLE.name)
    text = EXAMPLE.read_text(encoding="utf-8")
    marker = "            name: application-up\n"
    assert marker in text
    text = text.replace(
        marker,
        marker + "          - kind: manual\n            name: confirm-application\n"
        "            instructions: Check the application, then approve.\n",
        1,
    )
    path = directory / EXAMPLE.name
    path.write_text(text, encoding="utf-8")
    return path


def run_id_of(result: Result) -> str:
    first = result.output.splitlines()[0]
    assert first.startswith("run ") and " started " in first, result.output
    return first.split()[1]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def start(plan: Path, *extra: str) -> Result:
    return invoke("run", str(plan), "--plan", "three-tier", "--type", "test", *extra)


def test_broker_down_records_the_run_and_the_workers_send_it_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis_server = RedisServer(tmp_path / "redis")  # its port: nothing listens there yet
    settings = broker_settings(tmp_path, redis_server)
    monkeypatch.setenv("FERRYMAN_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("FERRYMAN_BROKER_URL", settings.broker_url)
    monkeypatch.setenv("FERRYMAN_RESULT_BACKEND", str(settings.result_backend))

    result = start(EXAMPLE)
    assert result.exit_code == Exit.NOT_DISPATCHED, result.output
    run_id = run_id_of(result)  # printed first, as soon as the run was committed
    assert "recorded but the broker cannot be reached" in result.output
    assert "Traceback" not in result.output and len(result.output.splitlines()) <= 3
    db = Database(settings.database_url)
    with db.session() as session:
        recorded = repository.get_run(session, run_id=run_id)
    assert recorded.status == RunStatus.RUNNING and recorded.dispatched_stage is None

    redis_server.start()
    try:
        with embedded(settings, SITES, executor=FakeExecutor(), concurrency=4) as first:
            waiting = wait_for(db, run_id, [RunStatus.WAITING, RunStatus.FAILED], timeout=90)
        release_results(first)
        assert waiting.status == RunStatus.WAITING  # the watch sent it once Redis was back

        redis_server.stop()
        approved = invoke("runs", "approve", run_id, "--by", "alice")
        assert approved.exit_code == Exit.NOT_DISPATCHED, approved.output
        assert "broker cannot be reached" in approved.output
        with db.session() as session:
            gates = repository.approvals_of(session, run_id=run_id)
        assert [g.status for g in gates] == [ApprovalStatus.APPROVED]  # recorded

        redis_server.start()
        with embedded(settings, SITES, executor=FakeExecutor(), concurrency=4) as second:
            done = wait_for(db, run_id, [RunStatus.SUCCEEDED, RunStatus.FAILED], timeout=120)
        release_results(second)
        assert done.status == RunStatus.SUCCEEDED
    finally:
        redis_server.stop()
        db.dispose()


def test_a_retried_run_with_a_key_returns_the_same_run(
    environment: Runtime, tmp_path: Path
) -> None:
    plan = own_cloud(tmp_path / EXAMPLE.name)
    first = start(plan, "--idempotency-key", "drill-42")
    assert first.exit_code == 0, first.output
    again = start(plan, "--idempotency-key", "drill-42")
    assert again.exit_code == 0, again.output
    run_id = run_id_of(first)
    assert again.output.startswith(f"run {run_id} was already started with this idempotency key")
    with environment.db.session() as session:
        keyed = [r for r in repository.list_runs(session, limit=100) if r.idempotency_key]
    assert [r.id for r in keyed if r.idempotency_key == "drill-42"] == [run_id]
    other = invoke(
        "run", str(plan), "--plan", "three-tier", "--type", "planned",
        "--idempotency-key", "drill-42",
    )  # fmt: skip
    assert other.exit_code == 1 and f"was used by run {run_id}" in other.output


def test_a_retried_approval_with_a_key_decides_once(environment: Runtime, tmp_path: Path) -> None:
    plan = two_gates(tmp_path)
    started = start(plan, "--wait", "--timeout", "120")
    assert started.exit_code == 0, started.output
    run_id = run_id_of(started)
    assert f"run {run_id}: waiting" in started.output

    first = invoke("runs", "approve", run_id, "--by", "alice", "--idempotency-key", "k1", "--wait")
    assert first.exit_code == 0, first.output
    run = wait_for(environment.db, run_id, [RunStatus.WAITING, RunStatus.FAILED], timeout=120)
    assert run.status == RunStatus.WAITING  # at the second gate now
    retried = invoke("runs", "approve", run_id, "--by", "alice", "--idempotency-key", "k1")
    assert retried.exit_code == 0, retried.output
    assert "already done with this idempotency key" in retried.output
    with environment.db.session() as session:
        gates = repository.approvals_of(session, run_id=run_id)
    # the retry did not approve the second gate
    assert [g.status for g in gates] == [ApprovalStatus.APPROVED, ApprovalStatus.PENDING]
    wrong = invoke("runs", "reject", run_id, "--by", "alice", "--idempotency-key", "k1")
    assert wrong.exit_code == 1 and "different decision" in wrong.output
    second = invoke("runs", "approve", run_id, "--by", "bob", "--idempotency-key", "k2", "--wait")
    assert second.exit_code == 0, second.output
    assert f"run {run_id}: succeeded" in second.output


def test_wait_exits_non_zero_for_a_compensated_run(
    environment: Runtime, shared_executor: FakeExecutor, tmp_path: Path
) -> None:
    shared_executor.permanent.add(("test_failover", "sql-01"))
    result = start(own_cloud(tmp_path / EXAMPLE.name), "--wait", "--timeout", "120")
    assert result.exit_code == Exit.FAILED, result.output
    run_id = run_id_of(result)
    assert "Start-VMFailover refused" in result.output
    done = wait_for(environment.db, run_id, [RunStatus.COMPENSATED, RunStatus.FAILED], timeout=120)
    followed = invoke("runs", "follow", run_id)
    assert followed.exit_code == Exit.FAILED, followed.output
    assert f"run {run_id}: {done.status}" in followed.output


def test_follow_a_run_started_elsewhere(environment: Runtime, tmp_path: Path) -> None:
    from plans import load_bundle

    elsewhere = build_runtime(environment.settings, client=True)  # as another process would
    ops = Operations(elsewhere.engine)
    bundle = load_bundle([own_cloud(tmp_path / EXAMPLE.name)])
    started = ops.start(bundle, "three-tier", "test", by="elsewhere")

    def approve_when_waiting() -> None:
        wait_for(environment.db, started.run.id, [RunStatus.WAITING], timeout=120)
        ops.approve(started.run.id, by="carol", comment="[/] looks :smile: fine")

    approver = threading.Thread(target=approve_when_waiting)
    approver.start()
    try:
        followed = invoke("runs", "follow", started.run.id, "--json", "--interval", "0.1")
    finally:
        approver.join()
    elsewhere.db.dispose()
    assert followed.exit_code == 0, followed.output
    events = [json.loads(line) for line in followed.output.splitlines()]
    kinds = [e.get("event") for e in events]
    assert kinds[0] == "created" and "gate_approved" in kinds
    assert events[-1] == {"run": started.run.id, "status": "succeeded", "error": ""}
    approval = next(e for e in events if e.get("event") == "gate_approved")
    assert approval["actor"] == "carol" and "[/] looks :smile: fine" in approval["message"]
    text = invoke("runs", "follow", started.run.id)
    assert text.exit_code == 0 and "[/] looks :smile: fine" in text.output
    listed = invoke("runs", "list", "--json")
    assert started.run.id in [r["id"] for r in json.loads(listed.output)]


@pytest.mark.parametrize("vm", ["x[/bold]", "[/]", ":smile:"])
def test_a_run_prints_names_as_written(environment: Runtime, tmp_path: Path, vm: str) -> None:
    from tests.workflows.test_cli import hostile_plan

    result = start(own_cloud(hostile_plan(tmp_path, vm)), "--wait", "--timeout", "120")
    assert result.exit_code == 0, result.output
    assert "waiting" in result.output
    assert vm in result.output  # the progress table's row for the VM, as written
