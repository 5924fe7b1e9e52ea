"""Readiness checks: static problems and replication states, with a fake Hyper-V reader."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from plans import Bundle
from workers.errors import CmdletFailed
from workers.hyperv.states import ReplicationHealth, ReplicationState
from workflows.compiler import compile_run
from workflows.readiness import (
    Check,
    Verdict,
    dns_checks,
    lock_checks,
    replication_checks,
    static_checks,
    zones_used,
)
from workflows.waiting import wait_until

PLAN_VMS = {"sql-01", "sql-02", "app-01", "app-02", "app-03", "web-01", "web-02"}


@dataclass
class Info:
    state: ReplicationState
    health: ReplicationHealth
    last_replication_time: datetime | None


class FakeHost:
    def __init__(self, infos: dict[str, Info], test_vms: set[str] | None = None) -> None:
        self.infos = infos
        self.test_vms = test_vms or set()

    def get_replication(self, vm: str) -> Info:
        return self.infos[vm]

    def get_vm(self, name: str) -> Any:
        if name not in self.test_vms:
            raise CmdletFailed(
                f"Get-VM failed: Hyper-V was unable to find a virtual machine with name {name}",
                host="hv-got-1",
                cmdlet="Get-VM",
                fully_qualified_error_id=(
                    "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM"
                ),
                category="InvalidArgument",
            )
        return SimpleNamespace(name=name)


class FakeContext:
    def __init__(self, infos: dict[str, Info], test_vms: set[str] | None = None) -> None:
        self.host = FakeHost(infos, test_vms)

    def hyperv(self, host: str) -> Any:
        return self.host


def test_static_checks_pass_for_the_example(bundle: Bundle) -> None:
    checks = static_checks(bundle.fabric, bundle.plan("three-tier"))
    assert {c.verdict for c in checks} == {Verdict.PASS}
    assert len(checks) == 7


def test_replication_state_decides_per_type(bundle: Bundle) -> None:
    now = datetime.now(UTC)
    ok = Info(ReplicationState.REPLICATING, ReplicationHealth.NORMAL, now)
    infos = {vm: ok for vm in bundle.plan("three-tier").vm_names()}
    infos["sql-02"] = Info(ReplicationState.SUSPENDED, ReplicationHealth.WARNING, now)
    infos["web-01"] = Info(ReplicationState.REPLICATING, ReplicationHealth.CRITICAL, now)
    for kind, expected in (("test", Verdict.FAIL), ("unplanned", Verdict.WARN)):
        compiled = compile_run(bundle.fabric, "three-tier", bundle.plan("three-tier"), kind)
        checks = {
            c.subject: c
            for c in replication_checks(compiled, kind, lambda: FakeContext(infos))
            if c.check.startswith("replication")
        }
        assert checks["sql-01"].verdict is Verdict.PASS
        assert checks["sql-02"].verdict is expected, checks["sql-02"].detail
        assert checks["web-01"].verdict is Verdict.FAIL
        assert "resolve the replication error" in checks["web-01"].detail


def test_a_test_failover_is_not_ready_while_an_earlier_tests_vm_is_left(bundle: Bundle) -> None:
    now = datetime.now(UTC)
    ok = Info(ReplicationState.REPLICATING, ReplicationHealth.NORMAL, now)
    plan = bundle.plan("three-tier")
    infos = {vm: ok for vm in plan.vm_names()}
    left = {"app-02 - Test"}
    compiled = compile_run(bundle.fabric, "three-tier", plan, "test")
    checks = [
        c
        for c in replication_checks(compiled, "test", lambda: FakeContext(infos, left))
        if c.check.startswith("no test VM left")
    ]
    assert len(checks) == len(plan.vm_names())  # every VM is checked
    verdicts = {c.subject: c.verdict for c in checks}
    assert verdicts.pop("app-02") is Verdict.FAIL
    assert set(verdicts.values()) == {Verdict.PASS}
    [failed] = [c for c in checks if c.subject == "app-02"]
    assert "'app-02 - Test' exists" in failed.detail and "ferryman runs cleanup" in failed.detail
    # a planned failover does not look for test VMs
    planned = compile_run(bundle.fabric, "three-tier", plan, "planned")
    other = replication_checks(planned, "planned", lambda: FakeContext(infos, left))
    assert not [c for c in other if c.check.startswith("no test VM left")]


# -- against the lab: what the chosen type and direction use, and the state's next command ---


def _no_gate_no_dns(bundle: Bundle) -> Bundle:
    plan = bundle.plan("three-tier")
    groups = [
        g.model_copy(
            update={
                "post": [a for a in g.post if a.kind != "manual"],
                "vms": [vm.model_copy(update={"dns": []}) for vm in g.vms],
            }
        )
        for g in plan.groups
    ]
    return Bundle(
        fabric=bundle.fabric, plans={"three-tier": plan.model_copy(update={"groups": groups})}
    )


def test_a_test_failover_checks_only_the_dns_zones_it_updates(bundle: Bundle) -> None:
    from tests.support.servers import free_port

    snapshot = bundle.snapshot()
    # production's RFC 2136 server does not answer; a test failover updates only its test zone
    zone = snapshot["fabric"]["dns_zones"]["corp.example"]
    zone.update(primary=f"127.0.0.1:{free_port()}", timeout=0.3)
    broken = Bundle.from_snapshot(snapshot)
    plan = broken.plan("three-tier")
    test = compile_run(broken.fabric, "three-tier", plan, "test")
    planned = compile_run(broken.fabric, "three-tier", plan, "planned")
    assert set(zones_used(test)) == {"test.corp.example"}
    assert {c.verdict for c in dns_checks(zones_used(test))} == {Verdict.PASS}
    [failed] = [c for c in dns_checks(zones_used(planned)) if c.subject == "corp.example"]
    assert failed.verdict is Verdict.FAIL and zone["primary"] in failed.detail


def test_after_commit_and_reverse_the_next_failover_is_a_failback(
    bundle: Bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lab.testing import running_lab
    from workers.embedded import embedded
    from workers.hyperv.psrp import shared_cache
    from workflows.compiler import RunOperation
    from workflows.demo import PASSWORD_VARIABLE, lab_topology, point_at_lab
    from workflows.followups import start_followup
    from workflows.progress import wait_for
    from workflows.runtime import executor_for
    from workflows.settings import Settings
    from workflows.statuses import TERMINAL_RUN, RunStatus

    settings = Settings(database_url=f"sqlite:///{tmp_path}/ferryman.db")
    with running_lab(lab_topology(), auth="ntlm") as lab:
        monkeypatch.setenv(PASSWORD_VARIABLE, lab.password)
        urls = {name: endpoint.url for name, endpoint in lab.endpoints.items()}
        ready = _no_gate_no_dns(point_at_lab(bundle, urls))
        plan = ready.plan("three-tier")
        executor = executor_for(settings)

        def check(kind: str, direction: str, holders: dict[str, str]) -> dict[str, Check]:
            compiled = compile_run(ready.fabric, "three-tier", plan, kind, direction)
            context = lambda: executor.context("readiness", kind, direction, compiled.hosts, {})  # noqa: E731
            return {
                c.subject: c
                for c in replication_checks(compiled, kind, context, holders)
                if c.check.startswith("replication")
            }

        def finish(runtime: Any, run_id: str) -> None:
            done = wait_for(runtime.db, run_id, [*TERMINAL_RUN], timeout=120, interval=0.05)
            assert done.status == RunStatus.SUCCEEDED, done.error

        try:
            with embedded(settings, ["stockholm", "gothenburg"], executor=executor) as runtime:
                failover = runtime.engine.start(ready, "three-tier", "unplanned")
                finish(runtime, failover.id)
                # failed over, not committed: the advice names the run and its commands
                held, holders = lock_checks(
                    compile_run(ready.fabric, "three-tier", plan, "test"),
                    ready.snapshot(),
                    settings.database_url,
                )
                assert {c.verdict for c in held} == {Verdict.FAIL}
                assert f"held by run {failover.id} (unplanned of plan three-tier" in held[0].detail
                waiting = check("test", "failover", holders)["sql-01"]
                assert waiting.verdict is Verdict.FAIL
                assert "FailedOverWaitingCompletion" in waiting.detail
                assert f"`ferryman runs commit {failover.id}`" in waiting.detail
                commit = start_followup(runtime.engine, failover.id, RunOperation.COMMIT, by="t")
                finish(runtime, commit.id)
                reverse = start_followup(runtime.engine, failover.id, RunOperation.REVERSE, by="t")
                finish(runtime, reverse.id)
            again = check("test", "failover", {})
            assert set(again) == PLAN_VMS
            for vm, found in again.items():
                assert found.verdict is Verdict.FAIL, found
                assert f"{vm} is the primary on hv-got-" in found.detail
                assert "the next failover of it is `--direction failback`" in found.detail
            # the reverse started the initial replication back; a test failback needs it done
            # (until then the check says so: InitialReplicationInProgress / WaitingFor...)
            def failback_ready() -> dict[str, Check] | None:
                found = check("test", "failback", {})
                verdicts = {c.verdict for c in found.values()}
                return found if verdicts <= {Verdict.PASS, Verdict.WARN} else None

            back = wait_until(failback_ready, timeout=60, interval=0.2)
            assert back is not None, check("test", "failback", {})
            assert set(back) == PLAN_VMS
            held, _ = lock_checks(
                compile_run(ready.fabric, "three-tier", plan, "test", "failback"),
                ready.snapshot(),
                settings.database_url,
            )
            assert {c.verdict for c in held} == {Verdict.PASS}  # reverse ended: VMs free
        finally:
            shared_cache().close()
