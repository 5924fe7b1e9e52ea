"""Readiness checks: static problems and replication states, with a fake Hyper-V reader."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from plans import Bundle
from workers.hyperv.states import ReplicationHealth, ReplicationState
from workflows.compiler import compile_run
from workflows.readiness import Verdict, replication_checks, static_checks


@dataclass
class Info:
    state: ReplicationState
    health: ReplicationHealth
    last_replication_time: datetime | None


class FakeHost:
    def __init__(self, infos: dict[str, Info]) -> None:
        self.infos = infos

    def get_replication(self, vm: str) -> Info:
        return self.infos[vm]


class FakeContext:
    def __init__(self, infos: dict[str, Info]) -> None:
        self.host = FakeHost(infos)

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
            c.subject: c for c in replication_checks(compiled, kind, lambda: FakeContext(infos))
        }
        assert checks["sql-01"].verdict is Verdict.PASS
        assert checks["sql-02"].verdict is expected, checks["sql-02"].detail
        assert checks["web-01"].verdict is Verdict.FAIL
        assert "resolve the replication error" in checks["web-01"].detail
