"""Database restarts: the engine rides out a PostgreSQL restart in the middle of a run.

The cluster is the test's own (initdb in a temporary directory, run as user postgres on a
free loopback port): the machine's shared PostgreSQL is never touched. The run must end
succeeded, its rows must be whole (every step settled with its result, one "created" and one
"finished" event, the stage pointer past the last stage), and the lab's audit log must show
each mutating cmdlet exactly once per VM.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.testing import running_lab
from tests.reliability.drill import (
    PLAN,
    Stack,
    WorkerProcess,
    approve_until,
    audit_calls,
    drive,
    example_bundle,
    expected_planned_calls,
    topology,
)
from tests.support.bind import BindServers
from tests.support.servers import PostgresCluster, RedisServer, wait_for
from workers.embedded import Runtime
from workflows.compiler import CompiledRun
from workflows.statuses import RunStatus
from workflows.store import repository


@pytest.fixture
def postgres() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster in a directory of its own (pytest's tmp_path is private
    to root, and PostgreSQL runs as user postgres)."""
    directory = Path(tempfile.mkdtemp(prefix="ferryman-pg-"))
    directory.chmod(0o755)  # user postgres must reach the cluster directory inside
    cluster = PostgresCluster(directory / "cluster")
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        if cluster.running():
            cluster.stop("immediate")
        shutil.rmtree(directory, ignore_errors=True)


def check_whole(runtime: Runtime, run_id: str) -> None:
    """The run's rows tell one consistent story."""
    with runtime.db.session() as session:
        run = repository.get_run(session, run_id=run_id)
        steps = repository.steps_of(session, run_id=run_id)
        events = [e.event for e in repository.events_of(session, run_id=run_id)]
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert {s.status for s in steps} == {"succeeded"}
    assert all(s.finished_at is not None for s in steps)
    assert events.count("created") == 1 and events.count("finished") == 1, events
    assert run.current_stage >= len(CompiledRun.from_json(run.compiled).stages) - 1


# A recovered run finishes its remaining work in ~15 s; a stuck one is given a minute.
RECOVERY_TIMEOUT = 60


@pytest.mark.parametrize("mode", ["fast"])
def test_run_rides_out_a_postgres_restart(
    postgres: PostgresCluster,
    redis_server: RedisServer,
    bind: BindServers,
    lab_password: str,
    tmp_path: Path,
    mode: str,
) -> None:
    stack = Stack(redis_server, postgres.url(), lab_password, tmp_path)
    workers = [WorkerProcess(stack, "a").start()]

    def supervise() -> None:  # systemd's Restart=always
        if workers[-1].exited:
            workers.append(WorkerProcess(stack, f"restart-{len(workers)}").start())

    try:
        with stack.runtime() as runtime, running_lab(topology(), auth="ntlm") as lab:
            bundle = example_bundle({n: e.url for n, e in lab.endpoints.items()}, bind)
            run = runtime.engine.start(bundle, PLAN, "planned", requested_by="reliability")
            approve_until(
                runtime,
                run.id,
                lambda: len(lab.lab.audit.entries()) >= 16,
                timeout=90,
                what="16 mutating calls",
            )
            postgres.stop(mode)
            calls_at_stop = len(lab.lab.audit.entries())
            # keep it down until a worker has met the outage (or the run's work ran dry)
            wait_for(
                lambda: (
                    "OperationalError" in workers[-1].log()
                    or len(lab.lab.audit.entries()) > calls_at_stop + 2
                ),
                timeout=30,
                what="a worker to meet the database outage",
            )
            postgres.start()
            final = drive(runtime, run.id, timeout=RECOVERY_TIMEOUT, supervise=supervise)
            _status, audit = lab.admin("GET", "/audit")
            assert final.status == RunStatus.SUCCEEDED, final.error
            check_whole(runtime, run.id)
    finally:
        for worker in workers:
            worker.kill()
    calls = audit_calls(audit["entries"])
    assert set(calls) == expected_planned_calls(bundle)
    assert set(calls.values()) == {1}, {c: n for c, n in calls.items() if n != 1}
    print(f"\npostgres stop -m {mode}: worker restarts {len(workers) - 1}")


def test_run_waiting_at_a_gate_survives_a_postgres_restart(
    postgres: PostgresCluster,
    redis_server: RedisServer,
    bind: BindServers,
    lab_password: str,
    tmp_path: Path,
) -> None:
    """The database restarts while the run waits for an operator; the approval then works."""
    stack = Stack(redis_server, postgres.url(), lab_password, tmp_path)
    worker = WorkerProcess(stack, "a").start()
    try:
        with stack.runtime() as runtime, running_lab(topology(), auth="ntlm") as lab:
            bundle = example_bundle({n: e.url for n, e in lab.endpoints.items()}, bind)
            run = runtime.engine.start(bundle, PLAN, "planned", requested_by="reliability")

            def waiting() -> bool:
                with runtime.db.session() as session:
                    return repository.get_run(session, run_id=run.id).status == "waiting"

            wait_for(waiting, timeout=90, what="the run to wait at its gate")
            postgres.stop("fast")
            postgres.start()
            final = drive(runtime, run.id, timeout=RECOVERY_TIMEOUT)
            _status, audit = lab.admin("GET", "/audit")
            assert final.status == RunStatus.SUCCEEDED, final.error
            check_whole(runtime, run.id)
        assert not worker.exited
    finally:
        worker.kill()
    calls = audit_calls(audit["entries"])
    assert set(calls) == expected_planned_calls(bundle)
    assert set(calls.values()) == {1}
