"""plan check reads replication health and age: Critical fails a planned failover; a copy older
than its RPO warns a test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from plans import load_bundle
from workers.hyperv.models import ReplicationInfo
from workers.hyperv.states import ReplicationHealth, ReplicationMode, ReplicationState
from workers.powershell import PSResult
from workflows.compiler import compile_run
from workflows.readiness import Verdict, replication_checks

PLAN = Path(__file__).resolve().parents[2] / "plans" / "examples" / "three-tier.yaml"


# The replica host's clock: two hours ahead of this machine's (a skewed clock, or the lab's
# scaled one). Ages are measured on it.
HOST_NOW = datetime.now(UTC) + timedelta(hours=2)


def info(vm: str, health: ReplicationHealth, age: float) -> ReplicationInfo:
    return ReplicationInfo(
        vm_name=vm,
        state=ReplicationState.REPLICATING,
        health=health,
        mode=ReplicationMode.REPLICA,
        primary_server="hv-sto-1",
        replica_server="hv-got-1",
        frequency=300,
        last_replication_time=HOST_NOW - timedelta(seconds=age),
    )


class Host:
    """Answers Get-VMReplication from ``infos`` (what the replica host would report), and
    Get-Date -Format o with its clock."""

    def __init__(self, infos: dict[str, ReplicationInfo]) -> None:
        self.infos = infos

    def _call(self, cmdlet: str, params: dict[str, Any]) -> PSResult:
        assert (cmdlet, params) == ("Get-Date", {"Format": "o"})
        return PSResult(output=[{"Value": HOST_NOW.isoformat()}])

    def get_replication(self, vm: str) -> ReplicationInfo:
        return self.infos[vm]

    def get_vm(self, name: str) -> Any:
        from workers.errors import CmdletFailed

        raise CmdletFailed(f"no VM {name}", host="hv-got-1", cmdlet="Get-VM")


class Context:
    def __init__(self, infos: dict[str, ReplicationInfo]) -> None:
        self.host = Host(infos)

    def hyperv(self, host: str) -> Host:
        return self.host


def _verdicts(kind: str, infos: dict[str, ReplicationInfo]) -> dict[str, Any]:
    bundle = load_bundle([PLAN])
    compiled = compile_run(bundle.fabric, "three-tier", bundle.plan("three-tier"), kind)
    checks = replication_checks(compiled, kind, lambda: Context(infos))
    return {c.subject: c for c in checks if c.check.startswith("replication")}


def test_a_copy_older_than_its_rpo_warns_a_test_and_critical_fails_a_planned() -> None:
    vms = load_bundle([PLAN]).plan("three-tier").vm_names()
    infos = {vm: info(vm, ReplicationHealth.NORMAL, 60) for vm in vms}
    # an hour old on the host's clock, though this machine's would put it an hour ahead
    infos["sql-02"] = info("sql-02", ReplicationHealth.NORMAL, 3600)
    infos["web-01"] = info("web-01", ReplicationHealth.CRITICAL, 60)
    test = _verdicts("test", infos)
    assert test["sql-01"].verdict is Verdict.PASS
    assert test["sql-02"].verdict is Verdict.WARN and "past its RPO" in test["sql-02"].detail
    assert "last replication 3600 s ago" in test["sql-02"].detail
    planned = _verdicts("planned", infos)
    assert planned["web-01"].verdict is Verdict.FAIL
    # A planned failover replicates the last changes itself: an old copy does not matter.
    assert planned["sql-02"].verdict is Verdict.PASS
