"""Per-VM step sequences against the lab over the real pypsrp client, every step run twice.

Each scenario runs the steps a compiled run gives one VM (test failover + cleanup, planned
failover + failback, unplanned + commit + reverse). Every step runs twice, as a redelivered
task would; the lab's audit log (``GET /audit``) must show that the second run made no
mutating call at all, and that each mutating cmdlet reached each VM exactly once. The lab's
``GET /state`` shows where the VMs ended up.
"""

from __future__ import annotations

from typing import Any

import pytest

from lab.testing import LabHandle, running_lab
from workers.executors import compensate
from workers.executors.dnsops import WindowsZone
from workers.hyperv.pool import RunspacePoolCache
from workflows.inputs import RestoreDns, StopTestFailover, ZoneTarget
from workflows.steps import StepKind

from .labdriver import PASSWORD_ENV, Driver, lab_topology, once_each

pytestmark = pytest.mark.integration

K = StepKind


def test_test_failover_and_cleanup(lab: LabHandle, pools: RunspacePoolCache) -> None:
    run = Driver(lab, pools, "test")
    # The test zone lives on gothenburg's Windows DNS (the lab's VMM server answers its cmdlets).
    zone: dict[str, Any] = {
        "kind": "windows",
        "site": "gothenburg",
        "vmm": "vmm-got",
        "verify_timeout": 10,
    }
    for vm, host, address in (
        ("sql-01", "hv-got-1", "10.99.1.11"),
        ("web-02", "hv-got-2", "10.99.3.32"),
    ):
        undo = run.twice(K.TEST_FAILOVER, host, vm).undo
        run.twice(K.CONNECT_NETWORK, host, vm, switch="test-got")
        run.twice(K.START_VM, host, vm, start_delay=0)
        ip = run.twice(K.WAIT_IP, host, vm, subnets=["10.99.0.0/16"], source="hyperv", timeout=30)
        assert ip.result["addresses"] == [address]
        records = [{"zone": "test.corp.example", "name": vm, "ttl": 60, "ptr": False}]
        dns = run.twice(K.UPDATE_DNS, host, vm, records=records, zones={"test.corp.example": zone})
        assert dns.result["records"][0]["servers"] == ["vmm-got"]
        run.twice(K.HEALTH_CHECK, host, vm, timeout=10)

        test_vm = run.vm_state(f"{vm} - Test", host)
        assert (test_vm["state"], test_vm["ips"], test_vm["switches"]) == (
            "Running",
            [address],
            ["test-got"],
        )
        assert run.vm_state(vm, host)["replication_state"] == "Replicating"  # replication goes on

        assert isinstance(dns.undo, RestoreDns) and undo == StopTestFailover(host=host, vm=vm)
        test_zone = run.ctx(vm).dns(ZoneTarget(**zone, zone="test.corp.example"))
        assert isinstance(test_zone, WindowsZone)
        assert test_zone.dns.capture([vm]).addresses(vm) == [address]
        run.twice(K.RESTORE_DNS, host, vm, snapshots=dns.undo.snapshots)
        assert test_zone.dns.capture([vm]).addresses(vm) == []  # the test zone was empty
        run.twice(K.TEST_CLEANUP, host, vm)
        assert run.vm_state(vm, host)["test_vm"] is None

    once_each(run.audit())
    # Calls one after another reuse one session per host for every task of the run: a
    # session is opened only when every open one is busy, never once per call.
    assert pools.opened == {"hv-got-1": 1, "hv-got-2": 1, "vmm-got": 1}


def test_planned_failover_and_failback(lab: LabHandle, pools: RunspacePoolCache) -> None:
    run = Driver(lab, pools, "planned")
    vm = "sql-01"
    for source, target, switch, subnet, address in (
        ("hv-sto-1", "hv-got-1", "corp-got", "10.20.0.0/16", "10.20.1.11"),
        ("hv-got-1", "hv-sto-1", "corp-sto", "10.10.0.0/16", "10.10.1.11"),
    ):
        run.twice(K.SHUTDOWN_PRIMARY, source, vm)
        run.twice(K.PREPARE_FAILOVER, source, vm)
        run.twice(K.FAILOVER, target, vm)
        run.twice(K.REVERSE, target, vm, replica_server=source)
        run.twice(K.CONNECT_NETWORK, target, vm, switch=switch)
        run.twice(K.START_VM, target, vm)
        ip = run.twice(K.WAIT_IP, target, vm, subnets=[subnet], source="vmm", timeout=30)
        assert ip.result["addresses"] == [address]
        run.twice(K.HEALTH_CHECK, target, vm, timeout=10)

        new_primary, old_primary = run.vm_state(vm, target), run.vm_state(vm, source)
        assert (new_primary["mode"], new_primary["state"]) == ("Primary", "Running")
        assert new_primary["replication_state"] == "Replicating"
        assert (old_primary["mode"], old_primary["state"]) == ("Replica", "Off")

    once_each(run.audit())


def test_unplanned_failover_commit_and_reverse(lab: LabHandle, pools: RunspacePoolCache) -> None:
    run = Driver(lab, pools, "unplanned")
    vm = "web-02"
    assert lab.admin("POST", "/hosts/hv-sto-2/down")[0] == 200  # the primary site is lost
    shutdown = run.twice(K.SHUTDOWN_PRIMARY, "hv-sto-2", vm, best_effort=True)
    assert shutdown.changed is False and "hv-sto-2" in shutdown.result["warning"]
    run.twice(K.FAILOVER, "hv-got-2", vm)
    run.twice(K.CONNECT_NETWORK, "hv-got-2", vm, switch="corp-got")
    run.twice(K.START_VM, "hv-got-2", vm)
    ip = run.twice(K.WAIT_IP, "hv-got-2", vm, subnets=["10.20.0.0/16"], timeout=30)
    assert ip.result["addresses"] == ["10.20.3.32"]
    run.twice(K.COMMIT, "hv-got-2", vm)
    assert run.vm_state(vm, "hv-got-2")["replication_state"] == "FailedOver"

    assert lab.admin("POST", "/hosts/hv-sto-2/up")[0] == 200  # the old site is back
    assert run.vm_state(vm, "hv-sto-2")["state"] == "Running"  # it came back up running
    as_replica = run.twice(K.SET_AS_REPLICA, "hv-sto-2", vm)
    assert as_replica.result == {"mode": "Replica", "shut_down": True}
    run.twice(K.REVERSE_TO, "hv-got-2", vm, replica_server="hv-sto-2")
    run.twice(K.START_INITIAL_REPLICATION, "hv-got-2", vm)
    assert lab.admin("POST", "/time/advance", {"seconds": 120})[0] == 200

    new_primary, old_primary = run.vm_state(vm, "hv-got-2"), run.vm_state(vm, "hv-sto-2")
    assert (new_primary["mode"], new_primary["replication_state"]) == ("Primary", "Replicating")
    assert (old_primary["mode"], old_primary["replication_state"]) == ("Replica", "Replicating")
    once_each(run.audit())


def test_compensating_a_planned_failover_restores_the_primary(
    lab: LabHandle, pools: RunspacePoolCache
) -> None:
    run = Driver(lab, pools, "planned")
    vm = "app-01"
    undos = [
        run.twice(K.SHUTDOWN_PRIMARY, "hv-sto-1", vm).undo,
        run.twice(K.PREPARE_FAILOVER, "hv-sto-1", vm).undo,
        run.twice(K.FAILOVER, "hv-got-1", vm).undo,
        run.twice(K.CONNECT_NETWORK, "hv-got-1", vm, switch="corp-got").undo,
        run.twice(K.START_VM, "hv-got-1", vm).undo,
    ]
    for undo in reversed(undos):
        assert undo is not None
        compensate(run.ctx(vm), undo)
        before = len(run.audit())
        compensate(run.ctx(vm), undo)
        assert len(run.audit()) == before
    primary, replica = run.vm_state(vm, "hv-sto-1"), run.vm_state(vm, "hv-got-1")
    assert (primary["state"], primary["mode"], primary["replication_state"]) == (
        "Running",
        "Primary",
        "Replicating",
    )
    assert (replica["state"], replica["replication_state"]) == ("Off", "Replicating")
    once_each(run.audit())


def test_unplanned_failover_to_an_older_recovery_point(
    monkeypatch: pytest.MonkeyPatch, pools: RunspacePoolCache
) -> None:
    topology = lab_topology()
    for vm in topology["vms"]:
        if vm["name"] == "sql-02":
            vm["replication"]["recovery_history"] = 4  # hourly recovery points
    with running_lab(topology, auth="ntlm") as handle:
        monkeypatch.setenv(PASSWORD_ENV, handle.password)
        assert handle.admin("POST", "/time/advance", {"seconds": 3 * 3600 + 60})[0] == 200
        run = Driver(handle, pools, "unplanned")
        points = run.ctx("sql-02").hyperv("hv-got-2").get_recovery_points("sql-02")
        assert len(points) >= 3
        oldest = points[0].name
        out = run.twice(K.FAILOVER, "hv-got-2", "sql-02", recovery_point=oldest)
        assert out.result["recovery_point"] == oldest
        assert run.vm_state("sql-02", "hv-got-2")["replication_state"] == (
            "FailedOverWaitingCompletion"
        )
        once_each(run.audit())
