"""Readiness checks: static problems and replication states, with a fake Hyper-V reader."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from plans import Bundle
from workers.errors import CmdletFailed
from workers.hyperv.states import ReplicationHealth, ReplicationState
from workflows.compiler import compile_run
from workflows.readiness import Verdict, replication_checks, static_checks


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
