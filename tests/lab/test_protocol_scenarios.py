"""Every row of the Hyper-V Replica state table (workflows/ARCHITECTURE.md) and every failover
sequence, driven through real pypsrp against the lab, checking both ends after each step.

sql-01 replicates hv-sto-1 -> hv-got-1 in the example world; the clock is frozen and moved
with the admin API, so nothing changes between a step and its checks.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import requests
from pypsrp.powershell import PowerShell, PSInvocationState

from lab.testing import LabHandle, running_lab
from tests.lab.scenario import Sites, scenario_topology

STO, GOT, VM = "hv-sto-1", "hv-got-1", "sql-01"
TEST_VM = "sql-01 - Test"


def both(sites: Sites, vm: str = VM) -> tuple[tuple[str, str, str], tuple[str, str, str]]:
    """(State, Mode, Health) on the stockholm host and on the gothenburg host."""
    return sites.replication(STO, vm), sites.replication(GOT, vm)


def test_starting_point_is_replicating_primary_running_replica_off(sites: Sites) -> None:
    assert both(sites) == (
        ("Replicating", "Primary", "Normal"),
        ("Replicating", "Replica", "Normal"),
    )
    assert sites.vm(STO, VM)["State"] == "Running"  # type: ignore[index]
    assert sites.vm(GOT, VM)["State"] == "Off"  # type: ignore[index]


def enable_new_01(sites: Sites) -> None:
    sites.ok(
        STO,
        "Enable-VMReplication",
        VMName="new-01",
        ReplicaServerName=GOT,
        ReplicaServerPort=8083,
        AuthenticationType="Kerberos",
    )


def test_enable_and_initial_replication_rows(sites: Sites) -> None:
    assert sites.replication_or_none(STO, "new-01") is None
    enable_new_01(sites)
    sto, got = both(sites, "new-01")
    assert sto[:2] == ("ReadyForInitialReplication", "Primary")
    assert got[:2] == ("WaitingForInitialReplication", "Replica")
    sites.ok(STO, "Start-VMInitialReplication", VMName="new-01")
    assert sites.replication(STO, "new-01")[0] == "InitialReplicationInProgress"
    sites.advance(600)
    assert both(sites, "new-01") == (
        ("Replicating", "Primary", "Normal"),
        ("Replicating", "Replica", "Normal"),
    )


def test_enable_rejects_a_frequency_hyper_v_does_not_offer(sites: Sites) -> None:
    ps = sites.run(
        STO,
        "Enable-VMReplication",
        VMName="new-01",
        ReplicaServerName=GOT,
        ReplicaServerPort=8083,
        AuthenticationType="Kerberos",
        ReplicationFrequencySec=60,
    )
    assert ps.had_errors or ps.streams.error
    assert sites.replication_or_none(STO, "new-01") is None


def test_test_failover_then_cleanup(sites: Sites) -> None:
    sites.ok(GOT, "Start-VMFailover", VMName=VM, AsTest=True)
    test_vm = sites.vm(GOT, TEST_VM)
    assert test_vm is not None and test_vm["State"] == "Off"
    # Replication carries on at both ends while the test VM exists.
    assert both(sites)[0][:2] == ("Replicating", "Primary")
    assert both(sites)[1][:2] == ("Replicating", "Replica")
    # A second test failover of the same VM is refused while the first one exists.
    first = sites.error_id(GOT, "Start-VMFailover", VMName=VM, AsTest=True)
    assert first == sites.error_id(GOT, "Start-VMFailover", VMName=VM, AsTest=True)

    sites.ok(GOT, "Connect-VMNetworkAdapter", VMName=TEST_VM, SwitchName="test-got")
    sites.ok(GOT, "Start-VM", Name=TEST_VM)
    sites.advance(120)
    (adapter,) = sites.ok(GOT, "Get-VMNetworkAdapter", VMName=TEST_VM)
    assert "10.99.1.11" in list(adapter.adapted_properties["IPAddresses"])

    sites.ok(GOT, "Stop-VMFailover", VMName=VM)
    assert sites.vm(GOT, TEST_VM) is None
    assert both(sites) == (
        ("Replicating", "Primary", "Normal"),
        ("Replicating", "Replica", "Normal"),
    )
    assert sites.vm(STO, VM)["State"] == "Running"  # type: ignore[index]


def planned_failover(sites: Sites, source: str, target: str) -> None:
    """Planned failover of sql-01 from ``source`` to ``target``, checking each step."""
    sites.ok(source, "Stop-VM", Name=VM)
    sites.ok(source, "Start-VMFailover", VMName=VM, Prepare=True)
    assert sites.replication(source, VM)[:2] == ("PreparedForFailover", "Primary")
    assert sites.replication(target, VM)[:2] == ("Replicating", "Replica")

    sites.ok(target, "Start-VMFailover", VMName=VM)
    assert sites.replication(target, VM)[:2] == ("FailedOverWaitingCompletion", "Replica")
    assert sites.replication(source, VM)[:2] == ("PreparedForFailover", "Primary")

    sites.ok(target, "Set-VMReplication", VMName=VM, Reverse=True)
    assert sites.replication(target, VM)[:2] == ("Replicating", "Primary")
    assert sites.replication(source, VM)[:2] == ("Replicating", "Replica")

    sites.ok(target, "Start-VM", Name=VM)
    assert sites.vm(target, VM)["State"] == "Running"  # type: ignore[index]
    assert sites.vm(source, VM)["State"] == "Off"  # type: ignore[index]


def test_planned_failover_with_reverse_then_failback(sites: Sites) -> None:
    planned_failover(sites, STO, GOT)
    sites.advance(600)  # a replication cycle in the new direction
    planned_failover(sites, GOT, STO)  # failback = planned failover the other way
    assert both(sites) == (
        ("Replicating", "Primary", "Normal"),
        ("Replicating", "Replica", "Normal"),
    )


def test_prepare_cancelled_by_stop_failover(sites: Sites) -> None:
    sites.ok(STO, "Stop-VM", Name=VM)
    sites.ok(STO, "Start-VMFailover", VMName=VM, Prepare=True)
    sites.ok(STO, "Stop-VMFailover", VMName=VM)
    assert both(sites)[0][:2] == ("Replicating", "Primary")


def test_unplanned_failover_commit_and_reverse(sites: Sites, lab_handle: LabHandle) -> None:
    status, _ = lab_handle.admin("POST", f"/hosts/{STO}/down")
    assert status == 200
    with pytest.raises(requests.exceptions.ConnectionError):
        sites.run(STO, "Get-VM")

    sites.ok(GOT, "Start-VMFailover", VMName=VM)
    assert sites.replication(GOT, VM)[:2] == ("FailedOverWaitingCompletion", "Replica")
    sites.ok(GOT, "Start-VM", Name=VM)
    sites.ok(GOT, "Complete-VMFailover", VMName=VM)
    state, _mode, health = sites.replication(GOT, VM)
    assert (state, health) == ("FailedOver", "Warning")
    assert sites.vm(GOT, VM)["State"] == "Running"  # type: ignore[index]

    # The old primary comes back: make it the replica, reverse from the new primary.
    lab_handle.admin("POST", f"/hosts/{STO}/up")
    sites._pools.pop(STO, None)  # its old pool died with the host
    sites.run(STO, "Stop-VM", Name=VM, TurnOff=True)
    sites.ok(STO, "Set-VMReplication", VMName=VM, AsReplica=True)
    assert sites.replication(STO, VM)[:2] == ("WaitingForInitialReplication", "Replica")
    sites.ok(GOT, "Set-VMReplication", VMName=VM, Reverse=True, ReplicaServerName=STO)
    assert sites.replication(GOT, VM)[:2] == ("ReadyForInitialReplication", "Primary")
    sites.ok(GOT, "Start-VMInitialReplication", VMName=VM)
    sites.advance(600)
    assert both(sites) == (
        ("Replicating", "Replica", "Normal"),
        ("Replicating", "Primary", "Normal"),
    )


def test_unplanned_failover_cancelled(sites: Sites) -> None:
    sites.ok(STO, "Stop-VM", Name=VM)
    sites.ok(GOT, "Start-VMFailover", VMName=VM)
    sites.ok(GOT, "Stop-VMFailover", VMName=VM)
    assert both(sites)[1][:2] == ("Replicating", "Replica")


@pytest.mark.parametrize(
    ("host", "cmdlet", "params"),
    [
        (STO, "Set-VMReplication", {"VMName": VM, "Reverse": True}),  # on the primary
        (STO, "Start-VMFailover", {"VMName": VM, "Prepare": True}),  # VM still running
        (GOT, "Complete-VMFailover", {"VMName": VM}),  # nothing failed over
        (GOT, "Set-VMReplication", {"VMName": VM, "Reverse": True}),  # not failed over
        (STO, "Start-VMInitialReplication", {"VMName": VM}),  # already replicating
        (GOT, "Get-VM", {"Name": "no-such-vm"}),
    ],
)
def test_invalid_transitions_give_the_same_error_id_every_time(
    sites: Sites, host: str, cmdlet: str, params: dict[str, object]
) -> None:
    before = both(sites)
    first = sites.error_id(host, cmdlet, **params)
    second = sites.error_id(host, cmdlet, **params)
    assert first == second
    assert first.endswith(cmdlet.replace("-", "")) or "," in first
    assert both(sites) == before


def test_terminating_error_with_error_action_stop(sites: Sites) -> None:
    ps = sites.run(STO, "Set-VMReplication", VMName=VM, Reverse=True, ErrorAction="Stop")
    assert ps.state == PSInvocationState.FAILED
    assert ps.had_errors
    assert str(ps.streams.error[0].fq_error).startswith("InvalidState,")


@pytest.mark.parametrize("auth", ["ntlm", "https"])
def test_planned_failover_over_encrypted_transports(auth: str) -> None:
    with running_lab(scenario_topology(), auth=auth, time_scale=0) as handle:
        sites = Sites(handle)
        try:
            planned_failover(sites, STO, GOT)
            entries = handle.admin("GET", f"/audit?vm={VM}")[1]["entries"]
            assert {e["user"].lower().split("\\")[-1] for e in entries} == {"ferryman"}
        finally:
            sites.close()


def test_offline_initial_replication_waits_for_the_import(sites: Sites) -> None:
    enable_new_01(sites)
    sites.ok(STO, "Start-VMInitialReplication", VMName="new-01", DestinationPath="D:\\export")
    sites.advance(600)
    sto, got = both(sites, "new-01")
    assert sto[0] == "InitialReplicationInProgress"
    assert got[0] == "WaitingForInitialReplication"
    sites.ok(GOT, "Import-VMInitialReplication", VMName="new-01", Path="D:\\export")
    assert both(sites, "new-01") == (
        ("Replicating", "Primary", "Normal"),
        ("Replicating", "Replica", "Normal"),
    )


def test_scheduled_initial_replication_starts_at_its_time(
    sites: Sites, lab_handle: LabHandle
) -> None:
    enable_new_01(sites)
    now = datetime.fromisoformat(lab_handle.admin("GET", "/state")[1]["time"])
    # pypsrp cannot serialise a datetime parameter; workers send ISO 8601 text.
    start = (now + timedelta(hours=1)).isoformat()
    sites.ok(STO, "Start-VMInitialReplication", VMName="new-01", InitialReplicationStartTime=start)
    sites.advance(1800)
    assert sites.replication(STO, "new-01")[0] == "ReadyForInitialReplication"
    sites.advance(3600)
    assert both(sites, "new-01")[0][:2] == ("Replicating", "Primary")
    assert both(sites, "new-01")[1][:2] == ("Replicating", "Replica")


def test_failover_from_suspended_to_a_recovery_point(sites: Sites) -> None:
    sites.ok(STO, "Suspend-VMReplication", VMName=VM)
    assert both(sites)[0][0] == both(sites)[1][0] == "Suspended"
    points = sites.ok(GOT, "Get-VMSnapshot", VMName=VM, SnapshotType="Replica")
    assert points and str(points[0].adapted_properties["SnapshotType"]) == "Replica"
    sites.ok(STO, "Stop-VM", Name=VM)
    # A deserialised snapshot sent back cannot bind to the typed parameter, as in PowerShell
    # remoting; the recovery point is piped on the host instead.
    refused = sites.error_id(GOT, "Start-VMFailover", VMRecoverySnapshot=points[0])
    assert refused.startswith("CannotConvertArgument")
    ps = PowerShell(sites.pool(GOT))
    ps.add_cmdlet("Get-VMSnapshot").add_parameter("VMName", VM)
    ps.add_parameter("SnapshotType", "Replica")
    ps.add_cmdlet("Start-VMFailover")
    ps.invoke()
    assert ps.state == PSInvocationState.COMPLETED and not ps.streams.error
    assert sites.replication(GOT, VM)[:2] == ("FailedOverWaitingCompletion", "Replica")
    sites.ok(GOT, "Stop-VMFailover", VMName=VM)
    assert sites.replication(GOT, VM)[0] == "Replicating"
