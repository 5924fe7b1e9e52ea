"""Each failover type of the example plan, end to end: Redis, worker, pypsrp, the lab, BIND."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.e2e.conftest import World
from workflows.compiler import RunOperation
from workflows.followups import start_followup
from workflows.statuses import RunStatus

pytestmark = pytest.mark.integration

PLAN_VMS = ["sql-01", "sql-02", "app-01", "app-02", "app-03", "web-01", "web-02"]
LAST_OCTETS = {
    "sql-01": "1.11",
    "sql-02": "1.12",
    "app-01": "2.21",
    "app-02": "2.22",
    "app-03": "2.23",
    "web-01": "3.31",
    "web-02": "3.32",
}


def per_vm(entries: list[dict], cmdlet: str) -> Counter[str]:
    return Counter(str(e["vm"]).removesuffix(" - Test") for e in entries if e["cmdlet"] == cmdlet)


def once_each(entries: list[dict], cmdlet: str) -> None:
    assert per_vm(entries, cmdlet) == Counter(PLAN_VMS), cmdlet


def run_through_gate(world: World, kind: str, direction: str = "failover") -> str:
    engine = world.runtime.engine
    run = engine.start(world.bundle, "three-tier", kind, direction, requested_by="e2e")
    waiting = world.settle(run.id)
    assert waiting.status == RunStatus.WAITING, waiting.error
    engine.approve(run.id, by="e2e", comment="databases healthy")
    done = world.settle(run.id)
    assert done.status == RunStatus.SUCCEEDED, done.error
    return run.id


def test_test_failover_and_cleanup(world: World) -> None:
    run_id = run_through_gate(world, "test")
    state = world.state()
    for vm in PLAN_VMS:
        test_vm = state[f"{vm} - Test@gothenburg"]
        assert test_vm["running"] and test_vm["switches"] == ["test-got"]
        assert test_vm["ips"] == [f"10.99.{LAST_OCTETS[vm]}"]
        assert state[f"{vm}@stockholm"]["running"]  # the primary is untouched
        assert state[f"{vm}@gothenburg"]["replication_state"] == "Replicating"
    audit = world.audit()
    for cmdlet in ("Start-VMFailover", "Connect-VMNetworkAdapter", "Start-VM"):
        once_each(audit, cmdlet)
    assert not [e for e in audit if e["cmdlet"] in ("Stop-VM", "Set-VMReplication")]
    cleanup = start_followup(
        world.runtime.engine,
        run_id,
        RunOperation.CLEANUP,
        by="e2e",
        notes="checked by the application team",
    )
    assert world.settle(cleanup.id).status == RunStatus.SUCCEEDED
    assert not [k for k in world.state() if " - Test" in k]
    once_each(world.audit(), "Stop-VMFailover")


def test_planned_failover(world: World) -> None:
    run_through_gate(world, "planned")
    state = world.state()
    for vm in PLAN_VMS:
        new, old = state[f"{vm}@gothenburg"], state[f"{vm}@stockholm"]
        assert new["running"] and new["mode"] == "Primary", new
        assert new["ips"] == [f"10.20.{LAST_OCTETS[vm]}"]
        assert not old["running"] and old["mode"] == "Replica"
    audit = world.audit()
    once_each(audit, "Stop-VM")
    once_each(audit, "Set-VMReplication")
    once_each(audit, "Start-VM")
    assert per_vm(audit, "Start-VMFailover") == Counter({vm: 2 for vm in PLAN_VMS})  # prepare
    assert world.dns.primary.addresses("sql-01") == {"10.20.1.11"}
    world.dns.wait_in_sync()
    assert world.dns.secondary.addresses("www") == {"10.20.3.31"}


def test_unplanned_failover_commit_and_reverse(world: World) -> None:
    engine = world.runtime.engine
    run_id = run_through_gate(world, "unplanned")
    commit = start_followup(engine, run_id, RunOperation.COMMIT, by="e2e")
    assert world.settle(commit.id).status == RunStatus.SUCCEEDED
    reverse = start_followup(engine, run_id, RunOperation.REVERSE, by="e2e")
    done = world.settle(reverse.id)
    assert done.status == RunStatus.SUCCEEDED, done.error
    state = world.state()
    for vm in PLAN_VMS:
        new, old = state[f"{vm}@gothenburg"], state[f"{vm}@stockholm"]
        assert new["running"] and new["mode"] == "Primary"
        assert old["mode"] == "Replica"
    audit = world.audit()
    for cmdlet in ("Complete-VMFailover", "Start-VMInitialReplication", "Stop-VM"):
        once_each(audit, cmdlet)
    assert per_vm(audit, "Set-VMReplication") == Counter({vm: 2 for vm in PLAN_VMS})


def test_transient_fault_is_retried(world: World) -> None:
    status, _ = world.lab.admin(
        "POST",
        "/faults",
        {"cmdlet": "Start-VM", "vm": "app-02 - Test", "fail": "http500", "count": 2},
    )
    assert status in (200, 201)
    run_id = run_through_gate(world, "test")
    with world.runtime.db.session() as session:
        from workflows.store import repository

        step = repository.get_step(session, run_id=run_id, key="g2.application/app-02/start_vm")
    assert step.status == "succeeded" and step.attempts == 3, (step.attempts, step.error)
    _status, body = world.lab.admin("GET", "/audit?cmdlet=Start-VM")
    outcomes = [e["outcome"] for e in body["entries"] if e["vm"] == "app-02 - Test"]
    assert outcomes == ["fault:http500", "fault:http500", "ok"]
    once_each(world.audit(), "Start-VM")


def test_permanent_fault_fails_then_resume_finishes(world: World) -> None:
    engine = world.runtime.engine
    world.lab.admin(
        "POST",
        "/faults",
        {
            "cmdlet": "Start-VMFailover",
            "vm": "web-02",
            "fail": "error",
            "count": 1,
            "error_id": "VirtualizationException",
            "message": "The operation failed: disk is locked",
        },
    )
    run = engine.start(world.bundle, "three-tier", "planned", requested_by="e2e")
    # the first Start-VMFailover of web-02 is its -Prepare, in the shutdown phase
    failed = world.settle(run.id)
    assert failed.status == RunStatus.FAILED
    assert failed.error.startswith(
        "g3.web.shutdown/web-02/prepare_failover: prepare_failover of VM web-02 on hv-sto-2"
    )
    assert "disk is locked" in failed.error
    assert world.state()["sql-01@stockholm"]["running"] is not False  # group 1 not shut down
    engine.resume(run.id, by="e2e")
    assert world.settle(run.id).status == RunStatus.WAITING
    engine.approve(run.id, by="e2e")
    done = world.settle(run.id)
    assert done.status == RunStatus.SUCCEEDED, done.error
    assert world.state()["web-02@gothenburg"]["mode"] == "Primary"
    once_each(world.audit(), "Start-VM")


def test_failback_after_planned_failover(world: World) -> None:
    run_through_gate(world, "planned")
    # let the reversed replication complete a cycle (gothenburg -> stockholm) in lab time
    status, _ = world.lab.admin("POST", "/time/advance", {"seconds": 900})
    assert status == 200
    run_through_gate(world, "planned", "failback")
    state = world.state()
    for vm in PLAN_VMS:
        home, away = state[f"{vm}@stockholm"], state[f"{vm}@gothenburg"]
        assert home["running"] and home["mode"] == "Primary", home
        assert home["ips"] == [f"10.10.{LAST_OCTETS[vm]}"]
        assert not away["running"] and away["mode"] == "Replica"
    audit = world.audit()
    assert per_vm(audit, "Stop-VM") == Counter({vm: 2 for vm in PLAN_VMS})
    assert per_vm(audit, "Set-VMReplication") == Counter({vm: 2 for vm in PLAN_VMS})
    assert world.dns.primary.addresses("sql-01") == {"10.10.1.11"}


def test_failed_test_run_is_compensated_in_the_lab(world: World) -> None:
    engine = world.runtime.engine
    world.lab.admin(
        "POST",
        "/faults",
        {
            "cmdlet": "Start-VM",
            "vm": "app-02 - Test",
            "fail": "error",
            "count": 1,
            "error_id": "VirtualizationException",
            "message": "not enough memory to start the VM",
        },
    )
    run = engine.start(world.bundle, "three-tier", "test", requested_by="e2e")
    assert world.settle(run.id).status == RunStatus.WAITING
    engine.approve(run.id, by="e2e")
    # the run fails, then its automatic compensation starts: wait past that first "failed"
    world.settle(run.id, [RunStatus.COMPENSATING, RunStatus.COMPENSATED])
    done = world.settle(run.id, [RunStatus.COMPENSATED, RunStatus.FAILED])
    assert done.status == RunStatus.COMPENSATED, done.error
    assert "not enough memory" in done.error
    # every test VM created (groups 1 and 2) is gone again; the primaries never noticed
    assert not [k for k in world.state() if " - Test" in k]
    audit = world.audit()
    created = per_vm(audit, "Start-VMFailover")
    assert set(created) == {"sql-01", "sql-02", "app-01", "app-02", "app-03"}
    assert per_vm(audit, "Stop-VMFailover") == created
    # DNS records added in the test zone were removed again
    added = len([e for e in audit if e["cmdlet"] == "Add-DnsServerResourceRecordA"])
    assert len([e for e in audit if e["cmdlet"] == "Remove-DnsServerResourceRecord"]) == added
