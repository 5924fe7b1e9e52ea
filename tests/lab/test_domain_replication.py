"""The Hyper-V Replica state machine: every row, every failover sequence, both ends checked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from lab.objects import CmdletError, Command, LabObject
from lab.world import Lab
from tests.lab.test_domain_support import (
    call,
    ends,
    error_of,
    example_dict,
    make_lab,
    ok,
    plain,
    rep,
    vm,
)

STO, GOT = "hv-sto-1", "hv-got-1"
INVALID = "InvalidState,Microsoft.HyperV.PowerShell.Commands."


def ips(lab, host: str, name: str) -> list[str]:
    adapters = ok(lab, host, "Get-VMNetworkAdapter", VMName=name)
    return [ip for a in adapters for ip in a.properties["IPAddresses"] if ":" not in ip]


def planned_failover(lab, name: str, source: str, target: str, network: str) -> None:
    """workflows/ARCHITECTURE.md's planned failover, as the workers run it."""
    ok(lab, source, "Stop-VM", Name=name)
    ok(lab, source, "Start-VMFailover", VMName=name, Prepare=True)
    ok(lab, target, "Start-VMFailover", VMName=name)
    ok(lab, target, "Set-VMReplication", VMName=name, Reverse=True)
    ok(lab, target, "Connect-VMNetworkAdapter", VMName=name, SwitchName=network)
    ok(lab, target, "Start-VM", Name=name)


# ----------------------------------------------------------------------------- test failover
def test_test_failover_creates_test_vm_and_cleanup_deletes_it() -> None:
    lab = make_lab()
    (test_vm,) = ok(lab, GOT, "Start-VMFailover", VMName="sql-01", AsTest=True, Passthru=True)
    assert test_vm.properties["Name"] == "sql-01 - Test"
    assert plain(test_vm)["ReplicationMode"] == "TestReplica"
    # Replication carries on; the primary is untouched.
    assert ends(lab, "sql-01", STO, GOT) == ("Primary", "Replicating", "Replica", "Replicating")
    assert vm(lab, STO, "sql-01")["State"] == "Running"
    # No network until connected; then the isolated test IP after boot.
    ok(lab, GOT, "Start-VM", Name="sql-01 - Test")
    lab.clock.advance(60)
    assert ips(lab, GOT, "sql-01 - Test") == []
    ok(lab, GOT, "Connect-VMNetworkAdapter", VMName="sql-01 - Test", SwitchName="test-got")
    assert ips(lab, GOT, "sql-01 - Test") == ["10.99.1.11"]
    # A second test failover is refused while one runs.
    err = error_of(lab, GOT, "Start-VMFailover", VMName="sql-01", AsTest=True)
    assert err.fully_qualified_error_id == INVALID + "StartVMFailover"
    ok(lab, GOT, "Stop-VMFailover", VMName="sql-01")
    assert error_of(lab, GOT, "Get-VM", Name="sql-01 - Test").fully_qualified_error_id == (
        "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM"
    )
    assert ends(lab, "sql-01", STO, GOT) == ("Primary", "Replicating", "Replica", "Replicating")


def test_test_failover_is_refused_on_the_primary() -> None:
    lab = make_lab()
    err = error_of(lab, STO, "Start-VMFailover", VMName="sql-01", AsTest=True)
    assert err.fully_qualified_error_id == INVALID + "StartVMFailover"
    assert err.category == "InvalidOperation"


# ----------------------------------------------------------------------------- planned
def test_planned_failover_runs_in_gothenburg_and_replicates_back() -> None:
    lab = make_lab()
    planned_failover(lab, "sql-01", STO, GOT, "corp-got")
    assert ends(lab, "sql-01", GOT, STO) == ("Primary", "Replicating", "Replica", "Replicating")
    assert rep(lab, GOT, "sql-01")["ReplicaServer"] == STO
    assert vm(lab, GOT, "sql-01")["State"] == "Running"
    assert ips(lab, GOT, "sql-01") == []  # still booting
    lab.clock.advance(30)
    assert ips(lab, GOT, "sql-01") == ["10.20.1.11"]
    # Replication now runs gothenburg -> stockholm at the configured frequency.
    before = rep(lab, STO, "sql-01")["LastReplicationTime"]
    lab.clock.advance(300)
    after = rep(lab, STO, "sql-01")["LastReplicationTime"]
    assert after is not None and (before is None or after > before)


def test_planned_failover_steps_refuse_the_wrong_order() -> None:
    lab = make_lab()
    # Prepare needs the VM off.
    err = error_of(lab, STO, "Start-VMFailover", VMName="sql-01", Prepare=True)
    assert err.fully_qualified_error_id == INVALID + "StartVMFailover"
    # Failover on the replica needs it off too (it is), but a plain failover on the primary
    # is refused.
    ok(lab, STO, "Stop-VM", Name="sql-01")
    err = error_of(lab, STO, "Start-VMFailover", VMName="sql-01")
    assert err.fully_qualified_error_id == INVALID + "StartVMFailover"
    # A replica cannot be started before failover.
    err = error_of(lab, GOT, "Start-VM", Name="sql-01")
    assert err.fully_qualified_error_id == INVALID + "StartVM"
    # -Reverse on the primary is invalid.
    err = error_of(lab, STO, "Set-VMReplication", VMName="sql-01", Reverse=True)
    assert err.fully_qualified_error_id == INVALID + "SetVMReplication"
    # The same situation gives the same id every time.
    again = error_of(lab, STO, "Set-VMReplication", VMName="sql-01", Reverse=True)
    assert again.fully_qualified_error_id == err.fully_qualified_error_id


def test_prepared_primary_can_be_cancelled_and_cannot_start() -> None:
    lab = make_lab()
    ok(lab, STO, "Stop-VM", Name="sql-01")
    ok(lab, STO, "Start-VMFailover", VMName="sql-01", Prepare=True)
    assert rep(lab, STO, "sql-01")["State"] == "PreparedForFailover"
    assert error_of(lab, STO, "Start-VM", Name="sql-01").fully_qualified_error_id == (
        INVALID + "StartVM"
    )
    ok(lab, STO, "Stop-VMFailover", VMName="sql-01")
    assert ends(lab, "sql-01", STO, GOT) == ("Primary", "Replicating", "Replica", "Replicating")


def test_failback_is_a_planned_failover_the_other_way() -> None:
    lab = make_lab()
    planned_failover(lab, "app-01", STO, GOT, "corp-got")
    planned_failover(lab, "app-01", GOT, STO, "corp-sto")
    assert ends(lab, "app-01", STO, GOT) == ("Primary", "Replicating", "Replica", "Replicating")
    lab.clock.advance(30)
    assert ips(lab, STO, "app-01") == ["10.10.2.21"]
    assert vm(lab, GOT, "app-01")["State"] == "Off"


# ----------------------------------------------------------------------------- unplanned
def test_unplanned_failover_commit_and_cancel() -> None:
    lab = make_lab()
    ok(lab, GOT, "Start-VMFailover", VMName="web-01")
    assert rep(lab, GOT, "web-01")["State"] == "FailedOverWaitingCompletion"
    ok(lab, GOT, "Start-VM", Name="web-01")
    ok(lab, GOT, "Complete-VMFailover", VMName="web-01")
    r = rep(lab, GOT, "web-01")
    assert (r["State"], r["Health"]) == ("FailedOver", "Warning")
    # Irreversible: there is nothing left to cancel.
    err = error_of(lab, GOT, "Stop-VMFailover", VMName="web-01")
    assert err.fully_qualified_error_id == INVALID + "StopVMFailover"
    # The old primary can no longer replicate into it.
    lab.clock.advance(300)
    assert rep(lab, STO, "web-01")["Health"] == "Critical"

    # Cancel instead of commit on another VM: back to Replicating (VM must be off first).
    ok(lab, "hv-got-2", "Start-VMFailover", VMName="web-02")
    ok(lab, "hv-got-2", "Start-VM", Name="web-02")
    err = error_of(lab, "hv-got-2", "Stop-VMFailover", VMName="web-02")
    assert err.fully_qualified_error_id == INVALID + "StopVMFailover"
    ok(lab, "hv-got-2", "Stop-VM", Name="web-02", TurnOff=True)
    ok(lab, "hv-got-2", "Stop-VMFailover", VMName="web-02")
    assert ends(lab, "web-02", "hv-sto-2", "hv-got-2") == (
        "Primary",
        "Replicating",
        "Replica",
        "Replicating",
    )


def test_reverse_after_unplanned_failover() -> None:
    lab = make_lab()
    ok(lab, GOT, "Start-VMFailover", VMName="file-01")
    ok(lab, GOT, "Start-VM", Name="file-01")
    ok(lab, GOT, "Complete-VMFailover", VMName="file-01")
    # Without -ReplicaServerName (old primary not prepared) -Reverse is refused.
    err = error_of(lab, GOT, "Set-VMReplication", VMName="file-01", Reverse=True)
    assert err.fully_qualified_error_id == INVALID + "SetVMReplication"
    # Nor before the old primary was made a replica.
    err = error_of(
        lab, GOT, "Set-VMReplication", VMName="file-01", Reverse=True, ReplicaServerName=STO
    )
    assert err.fully_qualified_error_id == INVALID + "SetVMReplication"
    # Old primary comes back: it must be off to become the replica.
    err = error_of(lab, STO, "Set-VMReplication", VMName="file-01", AsReplica=True)
    assert err.fully_qualified_error_id == INVALID + "SetVMReplication"
    ok(lab, STO, "Stop-VM", Name="file-01", TurnOff=True)
    ok(lab, STO, "Set-VMReplication", VMName="file-01", AsReplica=True)
    r = rep(lab, STO, "file-01")
    assert (r["Mode"], r["State"]) == ("Replica", "WaitingForInitialReplication")
    ok(lab, GOT, "Set-VMReplication", VMName="file-01", Reverse=True, ReplicaServerName=STO)
    assert ends(lab, "file-01", GOT, STO) == (
        "Primary",
        "ReadyForInitialReplication",
        "Replica",
        "WaitingForInitialReplication",
    )
    ok(lab, GOT, "Start-VMInitialReplication", VMName="file-01")
    assert rep(lab, GOT, "file-01")["State"] == "InitialReplicationInProgress"
    lab.clock.advance(60)
    assert ends(lab, "file-01", GOT, STO) == ("Primary", "Replicating", "Replica", "Replicating")
    assert rep(lab, STO, "file-01")["Health"] == "Normal"


def _lab_with_points() -> tuple[Lab, list[LabObject]]:
    """sql-01 with four hourly points and the latest (oldest first) on hv-got-1."""
    data = example_dict()
    data["vms"][0]["replication"] = {
        "frequency": 300,
        "recovery_history": 4,
        "app_consistent_hours": 2,
    }
    lab = make_lab(data)
    lab.clock.advance(5 * 3600)
    return lab, ok(lab, GOT, "Get-VMSnapshot", VMName="sql-01", SnapshotType="Replica")


def _failover_point(lab: Lab, host: str, name: str) -> str | None:
    found = lab.world.find(host, name)
    assert found is not None
    return None if found.failover_point is None else str(found.failover_point.id)


def test_recovery_points_list_by_type() -> None:
    lab, points = _lab_with_points()
    assert len(points) == 5  # four hourly points and the latest
    kinds = [plain(p)["SnapshotType"] for p in points]
    assert "AppConsistentReplica" in kinds and "Replica" in kinds
    assert points[-1].properties["IsLatest"] is True
    app_only = ok(lab, GOT, "Get-VMSnapshot", VMName="sql-01", SnapshotType="AppConsistentReplica")
    assert {plain(p)["SnapshotType"] for p in app_only} == {"AppConsistentReplica"}


def test_failover_to_a_recovery_point_given_as_the_live_snapshot_object() -> None:
    lab, points = _lab_with_points()
    chosen = points[0]
    ok(lab, GOT, "Start-VMFailover", VMRecoverySnapshot=chosen, Confirm=False)
    assert rep(lab, GOT, "sql-01")["State"] == "FailedOverWaitingCompletion"
    assert _failover_point(lab, GOT, "sql-01") == str(chosen.properties["Id"])


def _piped_failover(lab: Lab, name: str, *switches: str) -> list[Any]:
    """Get-VMSnapshot -VMName sql-01 -Name <escaped name> -SnapshotType Replica |
    Start-VMFailover -Confirm:$false -Passthru, the way the Hyper-V adapter sends it."""
    escaped = "".join("`" + ch if ch in "*?[]`" else ch for ch in name)
    read = Command(
        "Get-VMSnapshot",
        [("VMName", "sql-01"), ("Name", escaped), ("SnapshotType", "Replica")],
    )
    failover = Command(
        "Start-VMFailover", [("Confirm", False), *((s, True) for s in (*switches, "Passthru"))]
    )
    result = lab.invoke(GOT, [read, failover])
    assert result.errors == [], [e.message for e in result.errors]
    return result.output


def test_failover_to_a_recovery_point_piped_from_get_vmsnapshot() -> None:
    lab, points = _lab_with_points()
    chosen = points[1]
    (failed_over,) = _piped_failover(lab, str(chosen.properties["Name"]))
    assert failed_over.properties["Name"] == "sql-01"
    assert rep(lab, GOT, "sql-01")["State"] == "FailedOverWaitingCompletion"
    # The piped snapshot's point, not the latest one.
    assert _failover_point(lab, GOT, "sql-01") == str(chosen.properties["Id"])
    ok(lab, GOT, "Stop-VMFailover", VMName="sql-01")
    (test_vm,) = _piped_failover(lab, str(chosen.properties["Name"]), "AsTest")
    assert test_vm.properties["Name"] == "sql-01 - Test"
    assert _failover_point(lab, GOT, "sql-01 - Test") == str(chosen.properties["Id"])


def test_piped_snapshot_of_a_vanished_point_fails_nothing_over() -> None:
    lab, points = _lab_with_points()
    ok(lab, GOT, "Stop-VMFailover", VMName="sql-01", ErrorAction="SilentlyContinue")
    name = str(points[0].properties["Name"])
    result = lab.invoke(
        GOT,
        [
            Command("Get-VMSnapshot", [("VMName", "sql-01"), ("Name", name + "x")]),
            Command("Start-VMFailover", [("Passthru", True)]),
        ],
    )
    assert result.output == [] and result.errors == []
    assert rep(lab, GOT, "sql-01")["State"] == "Replicating"
    gone = LabObject(list(points[0].type_names), dict(points[0].properties, Id=str(uuid4())))
    err = error_of(lab, GOT, "Start-VMFailover", VMRecoverySnapshot=gone)
    assert err.fully_qualified_error_id == (
        "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.StartVMFailover"
    )
    assert rep(lab, GOT, "sql-01")["State"] == "Replicating"


@pytest.mark.parametrize(
    ("value", "source_type"),
    [
        ("copy", "Deserialized.Microsoft.HyperV.PowerShell.VMSnapshot"),
        ({"Id": "p1", "Name": "hourly", "VMName": "sql-01"}, "System.Collections.Hashtable"),
        ("sql-01 - Standard Replica", "System.String"),
    ],
)
def test_recovery_snapshot_that_is_not_a_snapshot_object_is_a_binding_error(
    value: Any, source_type: str
) -> None:
    lab, points = _lab_with_points()
    if value == "copy":
        # What a client holds and sends back: a property bag, not a live VMSnapshot.
        value = {k: str(v) for k, v in points[0].properties.items()}
    with pytest.raises(CmdletError) as caught:
        call(lab, GOT, "Start-VMFailover", VMRecoverySnapshot=value, Confirm=False)
    info = caught.value.info
    assert info.fully_qualified_error_id == (
        "CannotConvertArgumentNoMessage,Microsoft.HyperV.PowerShell.Commands.StartVMFailover"
    )
    assert (info.category, info.exception_type) == (
        "InvalidArgument",
        "System.Management.Automation.ParameterBindingException",
    )
    assert info.message.startswith("Cannot bind parameter 'VMRecoverySnapshot'. Cannot convert")
    assert f'of type "{source_type}" to type "Microsoft.HyperV.PowerShell.VMSnapshot"' in (
        info.message
    )
    assert rep(lab, GOT, "sql-01")["State"] == "Replicating"
    (entry,) = lab.audit.entries(cmdlet="Start-VMFailover")
    assert entry.outcome.startswith("error:CannotConvertArgumentNoMessage,")


def test_primary_keeps_no_recovery_points() -> None:
    lab = make_lab()
    assert ok(lab, STO, "Get-VMSnapshot", VMName="sql-01", SnapshotType="Replica") == []
    assert len(ok(lab, GOT, "Get-VMSnapshot", VMName="sql-01", SnapshotType="Replica")) == 1


# ----------------------------------------------------------------------------- enable, IR
def _unprotected_lab():
    data = example_dict()
    # Fixed initial replication times (initial_replication_seconds: 60), not the bandwidth's.
    data["replication_bandwidth_mbps"] = 0
    data["vms"].append(
        {
            "name": "new-01",
            "primary": "hv-sto-1",
            "networks": ["corp-sto"],
            "ips": {"corp-sto": "10.10.9.91"},
        }
    )
    return make_lab(data)


def test_enable_and_initial_replication_over_the_network() -> None:
    lab = _unprotected_lab()
    assert vm(lab, STO, "new-01")["ReplicationMode"] == "None"
    err = error_of(lab, STO, "Get-VMReplication", VMName="new-01")
    assert err.fully_qualified_error_id == (
        "ObjectNotFound,Microsoft.HyperV.PowerShell.Commands.GetVMReplication"
    )
    ok(
        lab,
        STO,
        "Enable-VMReplication",
        VMName="new-01",
        ReplicaServerName="hv-got-1",
        ReplicaServerPort=8083,
        AuthenticationType="Kerberos",
        ReplicationFrequencySec=30,
        RecoveryHistory=2,
    )
    assert ends(lab, "new-01", STO, GOT) == (
        "Primary",
        "ReadyForInitialReplication",
        "Replica",
        "WaitingForInitialReplication",
    )
    assert rep(lab, STO, "new-01")["FrequencySec"] == 30
    # A replica cannot fail over before any replication.
    err = error_of(lab, GOT, "Start-VMFailover", VMName="new-01")
    assert err.fully_qualified_error_id == INVALID + "StartVMFailover"
    ok(lab, STO, "Start-VMInitialReplication", VMName="new-01")
    assert ends(lab, "new-01", STO, GOT)[1] == "InitialReplicationInProgress"
    lab.clock.advance(59)
    assert ends(lab, "new-01", STO, GOT)[3] == "WaitingForInitialReplication"
    lab.clock.advance(1)
    assert ends(lab, "new-01", STO, GOT) == ("Primary", "Replicating", "Replica", "Replicating")
    # Enabling twice is an invalid state.
    err = error_of(
        lab,
        STO,
        "Enable-VMReplication",
        VMName="new-01",
        ReplicaServerName=GOT,
        ReplicaServerPort=8083,
        AuthenticationType="Kerberos",
    )
    assert err.fully_qualified_error_id == INVALID + "EnableVMReplication"


@pytest.mark.parametrize(
    ("settings", "parameter"),
    [
        ({"ReplicationFrequencySec": 60}, "ReplicationFrequencySec"),
        ({"RecoveryHistory": 25}, "RecoveryHistory"),
        ({"RecoveryHistory": 4, "VSSSnapshotFrequencyHour": 4}, "VSSSnapshotFrequencyHour"),
    ],
)
def test_enable_validates_settings(settings: dict, parameter: str) -> None:
    lab = _unprotected_lab()
    err = error_of(
        lab,
        STO,
        "Enable-VMReplication",
        VMName="new-01",
        ReplicaServerName=GOT,
        ReplicaServerPort=8083,
        AuthenticationType="Kerberos",
        **settings,
    )
    assert err.fully_qualified_error_id.startswith("ParameterArgumentValidationError,")
    assert parameter in err.message
    assert vm(lab, STO, "new-01")["ReplicationMode"] == "None"


def test_enable_with_the_wrong_port_for_the_auth_type_fails() -> None:
    lab = _unprotected_lab()
    err = error_of(
        lab,
        STO,
        "Enable-VMReplication",
        VMName="new-01",
        ReplicaServerName=GOT,
        ReplicaServerPort=8084,
        AuthenticationType="Kerberos",
    )
    assert err.fully_qualified_error_id == (
        "OperationFailed,Microsoft.HyperV.PowerShell.Commands.EnableVMReplication"
    )


def test_scheduled_and_offline_initial_replication() -> None:
    lab = _unprotected_lab()
    ok(
        lab,
        STO,
        "Enable-VMReplication",
        VMName="new-01",
        ReplicaServerName=GOT,
        ReplicaServerPort=8083,
        AuthenticationType="Kerberos",
    )
    now = datetime.fromtimestamp(lab.clock.now(), UTC)
    err = error_of(
        lab,
        STO,
        "Start-VMInitialReplication",
        VMName="new-01",
        InitialReplicationStartTime=now + timedelta(days=8),
    )
    assert err.fully_qualified_error_id.startswith("ParameterArgumentValidationError,")
    ok(
        lab,
        STO,
        "Start-VMInitialReplication",
        VMName="new-01",
        InitialReplicationStartTime=now + timedelta(hours=1),
    )
    assert rep(lab, STO, "new-01")["State"] == "ReadyForInitialReplication"
    lab.clock.advance(3600 + 59)  # (microsecond rounding of the start time aside)
    assert rep(lab, STO, "new-01")["State"] == "InitialReplicationInProgress"
    lab.clock.advance(2)
    assert ends(lab, "new-01", STO, GOT) == ("Primary", "Replicating", "Replica", "Replicating")

    offline = _unprotected_lab()
    ok(
        offline,
        STO,
        "Enable-VMReplication",
        VMName="new-01",
        ReplicaServerName=GOT,
        ReplicaServerPort=8083,
        AuthenticationType="Kerberos",
    )
    ok(offline, STO, "Start-VMInitialReplication", VMName="new-01", DestinationPath="D:\\ir")
    offline.clock.advance(3600)
    assert ends(offline, "new-01", STO, GOT)[1:4:2] == (
        "InitialReplicationInProgress",
        "WaitingForInitialReplication",
    )
    ok(offline, GOT, "Import-VMInitialReplication", VMName="new-01", Path="E:\\ir")
    assert ends(offline, "new-01", STO, GOT) == ("Primary", "Replicating", "Replica", "Replicating")


def test_remove_replication_breaks_the_other_end() -> None:
    lab = make_lab()
    ok(lab, STO, "Remove-VMReplication", VMName="sql-01")
    assert vm(lab, STO, "sql-01")["ReplicationMode"] == "None"
    assert rep(lab, GOT, "sql-01")["Health"] == "Critical"
    err = error_of(lab, STO, "Remove-VMReplication", VMName="sql-01")
    assert err.fully_qualified_error_id.startswith("ObjectNotFound,")


def test_set_replication_changes_settings_on_both_ends() -> None:
    lab = make_lab()
    (out,) = ok(
        lab, STO, "Set-VMReplication", VMName="sql-01", ReplicationFrequencySec=30, Passthru=True
    )
    assert out.properties["FrequencySec"] == 30
    assert rep(lab, GOT, "sql-01")["FrequencySec"] == 30


# ----------------------------------------------------------------------------- ticking
def test_replication_ticks_at_the_configured_frequency() -> None:
    lab = make_lab()
    (m0,) = ok(lab, STO, "Measure-VMReplication", VMName="sql-01")
    start = m0.properties["SuccessfulReplicationCount"]
    lab.clock.advance(299)
    (m1,) = ok(lab, STO, "Measure-VMReplication", VMName="sql-01")
    assert m1.properties["SuccessfulReplicationCount"] == start
    lab.clock.advance(1 + 600)
    (m2,) = ok(lab, STO, "Measure-VMReplication", VMName="sql-01")
    assert m2.properties["SuccessfulReplicationCount"] == start + 3


def test_time_scale_drives_replication_in_real_time() -> None:
    data = example_dict()
    data["vms"] = [dict(data["vms"][0], replication={"frequency": 30})]
    data["dns"] = {"zones": []}
    lab = Lab.from_topology(data, time_scale=0.001)  # a 30 s cycle takes 30 ms
    lab.start()
    try:
        first = rep(lab, STO, "sql-01")["LastReplicationTime"]
        # Poll (not sleep-and-assert): done as soon as a cycle has happened.
        import threading

        changed = threading.Event()
        for _ in range(200):
            if rep(lab, STO, "sql-01")["LastReplicationTime"] != first:
                changed.set()
                break
            changed.wait(0.01)
        assert changed.is_set()
    finally:
        lab.stop()


def test_terminating_with_error_action_stop() -> None:
    lab = make_lab()
    with pytest.raises(CmdletError) as caught:
        call(lab, STO, "Start-VMFailover", VMName="sql-01", AsTest=True, ErrorAction="Stop")
    assert caught.value.info.fully_qualified_error_id == INVALID + "StartVMFailover"


def test_suspended_replication_stops_cycles_and_still_fails_over() -> None:
    lab = make_lab()
    ok(lab, STO, "Suspend-VMReplication", VMName="app-01")
    assert ends(lab, "app-01", STO, GOT) == ("Primary", "Suspended", "Replica", "Suspended")
    before = rep(lab, GOT, "app-01")["LastReplicationTime"]
    lab.clock.advance(900)
    assert rep(lab, GOT, "app-01")["LastReplicationTime"] == before
    err = error_of(lab, STO, "Suspend-VMReplication", VMName="app-01")
    assert err.fully_qualified_error_id == INVALID + "SuspendVMReplication"
    ok(lab, STO, "Resume-VMReplication", VMName="app-01")
    lab.clock.advance(300)
    assert rep(lab, GOT, "app-01")["LastReplicationTime"] > before
    # A suspended replica may still fail over (the table's Suspended precondition).
    ok(lab, "hv-sto-2", "Suspend-VMReplication", VMName="app-02")
    ok(lab, "hv-got-2", "Start-VMFailover", VMName="app-02")
    assert rep(lab, "hv-got-2", "app-02")["State"] == "FailedOverWaitingCompletion"


def test_topology_port_override_is_honoured_by_set_replication() -> None:
    data = example_dict()
    data["vms"][0]["replication"] = {"frequency": 300, "auth": "kerberos", "port": 18083}
    lab = make_lab(data)
    assert rep(lab, STO, "sql-01")["ReplicaPort"] == 18083
    ok(lab, STO, "Set-VMReplication", VMName="sql-01", RecoveryHistory=2)
    err = error_of(lab, STO, "Set-VMReplication", VMName="sql-01", ReplicaServerPort=9999)
    assert err.fully_qualified_error_id.startswith("OperationFailed,")
    assert rep(lab, STO, "sql-01")["RecoveryHistory"] == 2


def test_whole_site_test_failover_and_cleanup_touch_each_vm_once() -> None:
    lab = make_lab()
    _, state = lab.admin("GET", "/state", None)
    replicas = [(v["host"], v["name"]) for v in state["vms"] if v["mode"] == "Replica"]
    assert len(replicas) == 12
    for host, name in replicas:
        ok(lab, host, "Start-VMFailover", VMName=name, AsTest=True)
        ok(lab, host, "Connect-VMNetworkAdapter", VMName=f"{name} - Test", SwitchName="test-got")
        ok(lab, host, "Start-VM", Name=f"{name} - Test")
    lab.clock.advance(30)
    _, state = lab.admin("GET", "/state", None)
    tests = {v["name"]: v["ips"] for v in state["vms"] if v["mode"] == "TestReplica"}
    assert tests["sql-01 - Test"] == ["10.99.1.11"] and tests["mon-01 - Test"] == ["10.99.5.51"]
    for host, name in replicas:
        ok(lab, host, "Stop-VMFailover", VMName=name)
    for cmdlet in ("Start-VMFailover", "Stop-VMFailover"):
        changed = sorted(str(e.vm) for e in lab.audit.entries(cmdlet=cmdlet) if e.changed)
        assert changed == sorted(name for _, name in replicas)
    _, state = lab.admin("GET", "/state", None)
    assert not any(v["mode"] == "TestReplica" for v in state["vms"])
    protected = [v for v in state["vms"] if v["mode"] != "None"]
    assert len(protected) == 24
    assert all(v["replication_state"] == "Replicating" for v in protected)


def test_unplanned_failover_with_the_primary_site_down() -> None:
    lab = make_lab()
    for host in ("hv-sto-1", "hv-sto-2", "vmm-sto"):
        lab.admin("POST", f"/hosts/{host}/down", None)
    ok(lab, GOT, "Start-VMFailover", VMName="sql-01")
    ok(lab, GOT, "Connect-VMNetworkAdapter", VMName="sql-01", SwitchName="corp-got")
    ok(lab, GOT, "Start-VM", Name="sql-01")
    lab.clock.advance(30)
    assert ips(lab, GOT, "sql-01") == ["10.20.1.11"]
    ok(lab, GOT, "Complete-VMFailover", VMName="sql-01")
    # The site comes back: its copy still says it is the primary, with replication broken,
    # until it is turned into the replica.
    lab.admin("POST", "/hosts/hv-sto-1/up", None)
    assert rep(lab, STO, "sql-01")["Mode"] == "Primary"
    assert rep(lab, STO, "sql-01")["Health"] == "Critical"
