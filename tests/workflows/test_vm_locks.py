"""A VM is held by one run (with its follow-ups) at a time, enforced by the database.

The lock row is written in the transaction that creates the run: a refused start creates
nothing and names the holder; follow-ups (cleanup, commit, reverse, compensation) inherit the
lock; it is released when the run and the follow-ups it awaits end.
"""

from __future__ import annotations

import contextlib
import gc
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

# Imported now, not by its pytest plugin's end-of-session hook: that late import parses
# source while garbage collection may run result finalisers (see workers/compat.py).
import hypothesis  # noqa: F401
import pytest
from sqlmodel import func, select

from plans import Bundle
from tests.workflows.fakes import FakeExecutor
from tests.workflows.test_engine import settle, without_gate
from tests.workflows.test_orphaned_steps import Recording
from workers.embedded import Runtime
from workflows.compensation import compensate
from workflows.compiler import RunOperation
from workflows.engine import Engine
from workflows.followups import start_followup
from workflows.settings import Settings
from workflows.statuses import TERMINAL_RUN, RunStatus
from workflows.store import Database, Run, repository
from workflows.store.repository import VmLocked
from workflows.store.tables import AuditEvent, Step, VmLock

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "plans" / "examples" / "three-tier.yaml"
PLAN_VMS = {"sql-01", "sql-02", "app-01", "app-02", "app-03", "web-01", "web-02"}
KEY = "stockholm/sto-gold/{}"  # the example pairing's primary cloud


def held(db: Database) -> dict[str, str]:
    """Every held VM's key -> its holding run."""
    with db.session() as session:
        return {lock.vm: lock.run_id for lock in session.exec(select(VmLock)).all()}


def counts(db: Database) -> tuple[int, int, int]:
    """Rows of runs, steps and audit events: a refused start adds none."""
    with db.session() as session:
        return tuple(  # type: ignore[return-value]
            session.exec(select(func.count()).select_from(table)).one()
            for table in (Run, Step, AuditEvent)
        )


def with_plan_b(bundle: Bundle) -> Bundle:
    """The example bundle plus plan ``databases-only``, which shares sql-01 with three-tier."""
    three_tier = bundle.plan("three-tier")
    databases = three_tier.groups[0].model_copy(update={"post": []})
    plan_b = three_tier.model_copy(update={"groups": [databases]})
    return Bundle(fabric=bundle.fabric, plans={"three-tier": three_tier, "databases-only": plan_b})


# -- the store alone (SQLite and PostgreSQL), runs created but never sent -------------------


@pytest.fixture
def engine(db: Database, tmp_path: Path) -> Engine:
    return Engine(db, Recording(), Settings(database_url=f"sqlite:///{tmp_path}/unused.db"))


def test_a_second_test_run_of_one_plan_is_refused_and_creates_nothing(
    engine: Engine, bundle: Bundle
) -> None:
    first = engine.start(bundle, "three-tier", "test")
    assert held(engine.db) == {KEY.format(vm): first.id for vm in PLAN_VMS}
    before = counts(engine.db)
    with pytest.raises(VmLocked) as refused:
        engine.start(bundle, "three-tier", "test", direction="failback")
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("test of plan three-tier not started: VMs stockholm/sto-gold/")
    assert f"held by run {first.id} (test of plan three-tier, running;" in message
    assert refused.value.holders == {KEY.format(vm): first.id for vm in PLAN_VMS}
    assert counts(engine.db) == before  # no run, no step, no event
    assert len(engine.dispatcher.sent) == 1  # type: ignore[attr-defined]  # the first run's stage


def test_a_planned_run_of_another_plan_sharing_a_vm_is_refused(
    engine: Engine, bundle: Bundle
) -> None:
    both = with_plan_b(bundle)
    test = engine.start(both, "three-tier", "test")
    before = counts(engine.db)
    with pytest.raises(VmLocked, match=f"VMs .*sql-01.* are held by run {test.id}") as refused:
        engine.start(both, "databases-only", "planned")
    assert set(refused.value.holders) == {KEY.format("sql-01"), KEY.format("sql-02")}
    assert counts(engine.db) == before
    assert set(held(engine.db).values()) == {test.id}  # the refused run took nothing


def test_cancelling_a_run_that_acted_on_nothing_releases_its_vms(
    engine: Engine, bundle: Bundle
) -> None:
    run = engine.start(bundle, "three-tier", "planned")
    engine.cancel(run.id, by="ops", reason="wrong plan")
    assert held(engine.db) == {}
    engine.start(bundle, "three-tier", "test")  # the VMs are free again


# -- whole runs with the fake executor (the module's runtime, SQLite) ----------------------


def test_a_test_run_holds_its_vms_until_its_cleanup_ends(runtime: Runtime, bundle: Bundle) -> None:
    plain = without_gate(bundle)
    test = runtime.engine.start(plain, "three-tier", "test")
    assert settle(runtime, test.id, [*TERMINAL_RUN]).status == RunStatus.SUCCEEDED
    assert set(held(runtime.db).values()) == {test.id}  # succeeded, not cleaned up: held
    with pytest.raises(VmLocked, match=f"clean it up: 'ferryman runs cleanup {test.id}'"):
        runtime.engine.start(plain, "three-tier", "test")
    cleanup = start_followup(runtime.engine, test.id, RunOperation.CLEANUP, by="ops")
    assert settle(runtime, cleanup.id, [*TERMINAL_RUN]).status == RunStatus.SUCCEEDED
    assert held(runtime.db) == {}
    again = runtime.engine.start(plain, "three-tier", "test")
    assert set(held(runtime.db).values()) == {again.id}


def test_an_unplanned_failover_holds_its_vms_through_commit_and_reverse(
    runtime: Runtime, bundle: Bundle
) -> None:
    plain = without_gate(bundle)
    failover = runtime.engine.start(plain, "three-tier", "unplanned")
    assert settle(runtime, failover.id, [*TERMINAL_RUN]).status == RunStatus.SUCCEEDED
    with pytest.raises(VmLocked, match=f"commit it \\('ferryman runs commit {failover.id}'"):
        runtime.engine.start(plain, "three-tier", "planned", direction="failback")
    commit = start_followup(runtime.engine, failover.id, RunOperation.COMMIT, by="ops")
    assert settle(runtime, commit.id, [*TERMINAL_RUN]).status == RunStatus.SUCCEEDED
    assert set(held(runtime.db).values()) == {failover.id}
    with pytest.raises(VmLocked, match=f"'ferryman runs reverse {failover.id}'"):
        runtime.engine.start(plain, "three-tier", "test", direction="failback")
    reverse = start_followup(runtime.engine, failover.id, RunOperation.REVERSE, by="ops")
    assert settle(runtime, reverse.id, [*TERMINAL_RUN]).status == RunStatus.SUCCEEDED
    assert held(runtime.db) == {}


def test_a_cancelled_unplanned_failover_releases_its_vms(runtime: Runtime, bundle: Bundle) -> None:
    plain = without_gate(bundle)
    failover = runtime.engine.start(plain, "three-tier", "unplanned")
    assert settle(runtime, failover.id, [*TERMINAL_RUN]).status == RunStatus.SUCCEEDED
    cancel = start_followup(runtime.engine, failover.id, RunOperation.CANCEL_FAILOVER, by="ops")
    assert settle(runtime, cancel.id, [*TERMINAL_RUN]).status == RunStatus.SUCCEEDED
    assert held(runtime.db) == {}


def test_a_planned_failover_releases_its_vms_when_it_succeeds(
    runtime: Runtime, bundle: Bundle
) -> None:
    planned = runtime.engine.start(without_gate(bundle), "three-tier", "planned")
    assert settle(runtime, planned.id, [*TERMINAL_RUN]).status == RunStatus.SUCCEEDED
    assert held(runtime.db) == {}


def test_a_failed_test_is_compensated_under_its_own_lock_then_released(
    runtime: Runtime, bundle: Bundle, executor: FakeExecutor
) -> None:
    executor.permanent.add(("test_failover", "app-02"))
    test = runtime.engine.start(without_gate(bundle), "three-tier", "test")
    # failed, then compensated automatically: the compensation inherits the lock
    assert settle(runtime, test.id, [RunStatus.COMPENSATED]).status == RunStatus.COMPENSATED
    assert held(runtime.db) == {}


def test_resume_takes_the_vms_again_or_is_refused_naming_the_holder(
    runtime: Runtime, bundle: Bundle, executor: FakeExecutor
) -> None:
    plain = without_gate(bundle)
    executor.permanent.add(("failover", "web-01"))
    planned = runtime.engine.start(plain, "three-tier", "planned")
    assert settle(runtime, planned.id, [*TERMINAL_RUN]).status == RunStatus.FAILED
    assert held(runtime.db) == {}  # a failed real failover is final until someone acts
    other = runtime.engine.start(with_plan_b(plain), "databases-only", "test")
    assert settle(runtime, other.id, [*TERMINAL_RUN]).status == RunStatus.SUCCEEDED
    with pytest.raises(VmLocked, match=f"held by run {other.id}"):
        runtime.engine.resume(planned.id, by="ops")
    with runtime.db.session() as session:
        assert repository.get_run(session, run_id=planned.id).status == RunStatus.FAILED
    cleanup = start_followup(runtime.engine, other.id, RunOperation.CLEANUP, by="ops")
    assert settle(runtime, cleanup.id, [*TERMINAL_RUN]).status == RunStatus.SUCCEEDED
    executor.permanent.clear()
    runtime.engine.resume(planned.id, by="ops")
    assert set(held(runtime.db).values()) == {planned.id}
    assert settle(runtime, planned.id, [*TERMINAL_RUN]).status == RunStatus.SUCCEEDED
    assert held(runtime.db) == {}


def test_compensating_a_failed_planned_run_takes_its_vms_again(
    runtime: Runtime, bundle: Bundle, executor: FakeExecutor
) -> None:
    executor.permanent.add(("start_vm", "sql-01"))
    planned = runtime.engine.start(without_gate(bundle), "three-tier", "planned")
    assert settle(runtime, planned.id, [*TERMINAL_RUN]).status == RunStatus.FAILED
    assert held(runtime.db) == {}
    child = compensate(runtime.engine, planned.id, by="ops")
    assert child is not None
    with runtime.db.session() as session:
        parent = repository.get_run(session, run_id=planned.id)
        holders = repository.vm_holders(session, keys=[KEY.format("sql-01")])
    assert parent.status == RunStatus.COMPENSATING
    assert holders == {KEY.format("sql-01"): planned.id}
    assert settle(runtime, planned.id, [RunStatus.COMPENSATED, RunStatus.FAILED]).status == (
        RunStatus.COMPENSATED
    )
    assert held(runtime.db) == {}


# -- the command line ------------------------------------------------------------------------


def test_the_cli_refuses_in_one_line_and_exits_non_zero(tmp_path: Path, bundle: Bundle) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    db = Database(url)
    first = Engine(db, Recording(), Settings(database_url=url)).start(bundle, "three-tier", "test")
    before = counts(db)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRYMAN_")}
    env |= {"FERRYMAN_DATABASE_URL": url, "FERRYMAN_LAB_PASSWORD": "unused"}
    done = subprocess.run(
        [sys.executable, "-m", "workflows", "run", str(EXAMPLE), "--plan", "three-tier",
         "--type", "planned"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: planned of plan three-tier not started: VMs ")
    assert lines[0].endswith(f"'ferryman runs cancel {first.id}')")
    assert f"held by run {first.id} (test of plan three-tier" in lines[0]
    assert counts(db) == before
    db.dispose()


def test_a_cancelled_test_run_keeps_its_test_vms_held_until_cleanup(
    runtime: Runtime, bundle: Bundle, executor: FakeExecutor
) -> None:
    test = runtime.engine.start(bundle, "three-tier", "test")
    assert settle(runtime, test.id).status == RunStatus.WAITING  # group 1 has its test VMs
    runtime.engine.cancel(test.id, by="ops", reason="drill postponed")
    assert set(held(runtime.db).values()) == {test.id}
    cleanup = start_followup(runtime.engine, test.id, RunOperation.CLEANUP, by="ops")
    assert settle(runtime, cleanup.id, [*TERMINAL_RUN]).status == RunStatus.SUCCEEDED
    assert held(runtime.db) == {}


# -- concurrent starts from separate processes on PostgreSQL, against the lab ---------------

RACERS = 3
ROUNDS = 10
RACE_VMS = {"sql-01", "sql-02"}


def lab_plan(bundle: Bundle) -> Bundle:
    """The example plan's first group without its gate and DNS records (the lab alone runs
    it, and a round stays short)."""
    plan = without_gate(bundle).plan("three-tier")
    first = plan.groups[0]
    groups = [
        first.model_copy(update={"vms": [vm.model_copy(update={"dns": []}) for vm in first.vms]})
    ]
    return Bundle(
        fabric=bundle.fabric, plans={"three-tier": plan.model_copy(update={"groups": groups})}
    )


def racer(
    index: int, settings: dict[str, str], snapshot: dict[str, Any], barrier: Any, results: Any
) -> None:
    """One process: at each round's barrier, start a test failover of the plan."""
    from workflows.runtime import build_runtime

    runtime = build_runtime(Settings(**settings), client=True)  # type: ignore[arg-type]
    bundle = Bundle.from_snapshot(snapshot)
    try:
        for _ in range(ROUNDS):
            barrier.wait(timeout=300)
            try:
                run = runtime.engine.start(
                    bundle, "three-tier", "test", requested_by=f"racer-{index}"
                )
                results.put((index, "won", run.id, {}))
            except VmLocked as exc:
                results.put((index, "refused", str(exc), exc.holders))
            except Exception as exc:  # reported to the test, which fails with it
                results.put((index, "error", f"{type(exc).__name__}: {exc}", {}))
    finally:
        runtime.db.dispose()


@pytest.mark.integration
def test_concurrent_starts_from_processes_one_wins_and_the_loser_does_nothing(
    tmp_path: Path, bundle: Bundle
) -> None:
    import multiprocessing
    from collections import Counter

    from lab.testing import running_lab
    from tests.support.servers import redis_server
    from tests.workflows.conftest import _postgres_database
    from workers.embedded import worker
    from workers.hyperv.psrp import shared_cache
    from workflows.demo import PASSWORD_VARIABLE, lab_topology, point_at_lab
    from workflows.migrations import upgrade
    from workflows.progress import wait_for
    from workflows.runtime import build_runtime, executor_for

    stack = contextlib.ExitStack()
    redis = stack.enter_context(redis_server(tmp_path / "redis"))
    databases = _postgres_database()
    database_url = next(databases)
    context = multiprocessing.get_context("spawn")
    try:
        with running_lab(lab_topology(), auth="ntlm") as lab:
            os.environ[PASSWORD_VARIABLE] = lab.password
            urls = {name: endpoint.url for name, endpoint in lab.endpoints.items()}
            plan = lab_plan(point_at_lab(bundle, urls))
            values = {
                "database_url": database_url,
                "broker_url": redis.url(0),
                "result_backend": redis.url(1),
            }
            settings = Settings(**values)  # type: ignore[arg-type]
            upgrade(database_url)  # as a deployment does before its workers start
            runtime = build_runtime(settings, executor_for(settings))
            # results Celery still tracks at the end try Redis once, not for minutes
            options = dict(runtime.app.conf.result_backend_transport_options or {})
            options["retry_policy"] = {"max_retries": 1, "interval_start": 0, "interval_step": 0.1}
            runtime.app.conf.result_backend_transport_options = options
            barrier = context.Barrier(RACERS + 1)
            results = context.Queue()
            racers = [
                context.Process(
                    target=racer, args=(i, values, plan.snapshot(), barrier, results), daemon=True
                )
                for i in range(RACERS)
            ]
            for process in racers:
                process.start()
            try:
                with worker(runtime, ["stockholm", "gothenburg"], concurrency=8, gate_interval=0.5):
                    for round_ in range(1, ROUNDS + 1):
                        barrier.wait(timeout=300)  # every racer starts at once
                        outcomes = [results.get(timeout=120) for _ in range(RACERS)]
                        won = [o for o in outcomes if o[1] == "won"]
                        assert len(won) == 1, outcomes
                        winner = won[0][2]
                        for _index, verdict, message, holders in outcomes:
                            if verdict == "refused":
                                assert f"held by run {winner} (test of plan three-tier" in message
                                assert set(holders.values()) == {winner}
                            else:
                                assert verdict == "won", message
                        with runtime.db.session() as session:
                            runs = repository.list_runs(session, limit=1000)
                        assert Counter(r.operation for r in runs)["test"] == round_
                        done = wait_for(runtime.db, winner, [*TERMINAL_RUN], timeout=120)
                        assert done.status == RunStatus.SUCCEEDED, done.error
                        status, body = lab.admin("GET", "/audit?cmdlet=Start-VMFailover")
                        assert status == 200
                        # one test failover per VM per round, none refused: the losers did nothing
                        per_vm = Counter(
                            str(e["vm"])
                            for e in body["entries"]
                            if e["cmdlet"] == "Start-VMFailover"
                        )
                        assert per_vm == Counter({vm: round_ for vm in RACE_VMS}), body["entries"]
                        assert {e["outcome"] for e in body["entries"]} == {"ok"}
                        cleanup = start_followup(
                            runtime.engine, winner, RunOperation.CLEANUP, by="t"
                        )
                        done = wait_for(runtime.db, cleanup.id, [*TERMINAL_RUN], timeout=120)
                        assert done.status == RunStatus.SUCCEEDED, done.error
                        assert held(runtime.db) == {}
            finally:
                for process in racers:
                    process.join(timeout=30)
                    if process.is_alive():
                        process.kill()
                runtime.db.dispose()
                shared_cache().close()
                os.environ.pop(PASSWORD_VARIABLE, None)
                gc.collect()  # result finalisers talk to Redis: run them while it is there
    finally:
        stack.close()
        next(databases, None)
