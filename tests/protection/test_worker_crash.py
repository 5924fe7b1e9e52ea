"""A worker killed (SIGKILL) while an initial replication copies: the step comes back to a new
worker, which waits for the copy under way instead of starting a second one."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lab.testing import running_lab
from plans import load_bundle
from tests.protection.conftest import FABRIC
from tests.reliability.drill import Stack, WorkerProcess, drive, topology
from tests.support.servers import RedisServer, wait_for
from workers.executors.protection import HostProtectionReader
from workers.tasks import default_executor
from workflows.compiler import _all_hosts
from workflows.demo import PASSWORD_VARIABLE, point_at_lab
from workflows.protection import assess, compile_protection, desired_protection, observe
from workflows.statuses import RunStatus
from workflows.store import repository

pytestmark = pytest.mark.integration
# crm-01's 60 GB at 10 Gbit/s take 51.5 lab seconds: 15 s real, time to kill a worker mid-copy.
TIME_SCALE = 0.3


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    """A Redis of this test's own, a SQLite store and the lab password (as the drills have)."""
    import secrets

    password = secrets.token_urlsafe(18)
    monkeypatch.setenv(PASSWORD_VARIABLE, password)
    redis = RedisServer(tmp_path / "redis", appendonly=True)
    redis.start()
    try:
        yield Stack(redis, f"sqlite:///{tmp_path}/ferryman.db", password, tmp_path)
    finally:
        redis.stop(kill=True)


def test_a_worker_killed_during_initial_replication_does_not_start_a_second(
    stack: Stack,
) -> None:
    first = WorkerProcess(stack, "first").start()
    second: WorkerProcess | None = None
    try:
        with (
            stack.runtime() as runtime,
            running_lab(topology(), auth="ntlm", time_scale=TIME_SCALE) as lab,
        ):
            bundle = point_at_lab(
                load_bundle([FABRIC]), {n: e.url for n, e in lab.endpoints.items()}
            )
            fabric = bundle.fabric
            hosts = _all_hosts(fabric, list(fabric.sites))
            reader = HostProtectionReader(default_executor().context("t", "protect", "x", hosts))
            observed = observe(fabric, reader)
            present = [
                d.vm
                for d in desired_protection(fabric).values()
                if d.vm not in observed and reader.has_vm(d.primary_host, d.vm)
            ]
            reports = assess(fabric, observed, datetime.now(UTC), present=present)
            compiled = compile_protection(fabric, reports, vms=["crm-01"])
            assert compiled is not None
            run = runtime.engine.start_compiled(bundle, compiled, requested_by="drill")

            def copying() -> bool:
                _, body = lab.admin("GET", "/state")
                states = {(v["name"], v["host"]): v["replication_state"] for v in body["vms"]}
                return states[("crm-01", "hv-sto-1")] == "InitialReplicationInProgress"

            wait_for(copying, timeout=60, what="crm-01's initial replication under way")
            first.kill()
            second = WorkerProcess(stack, "second").start()
            final = drive(runtime, run.id, timeout=180)
            assert final.status == RunStatus.SUCCEEDED, final.error
            with runtime.db.session() as session:
                steps = {s.kind: s for s in repository.steps_of(session, run_id=run.id)}
            initial = steps["initial_replication"]
            # Started twice (the killed worker's start, then the new worker's), copied once.
            assert initial.attempts >= 2 and (initial.result or {}).get("resumed") is True
            _, audit = lab.admin("GET", "/audit?vm=crm-01")
            calls = [e["cmdlet"] for e in audit["entries"] if e["outcome"] == "ok"]
            assert calls.count("Enable-VMReplication") == 1
            assert calls.count("Start-VMInitialReplication") == 1
            _, body = lab.admin("GET", "/state")
            crm = {v["host"]: v for v in body["vms"] if v["name"] == "crm-01"}
            assert crm["hv-sto-1"]["replication_state"] == "Replicating"
            assert crm["hv-got-1"]["replication_state"] == "Replicating"
    finally:
        first.kill()
        if second is not None:
            second.stop()
