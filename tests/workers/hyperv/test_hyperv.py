"""The typed Hyper-V layer sends the right cmdlets and reads their output by name."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from workers.errors import CmdletFailed
from workers.hyperv.hyperv import (
    HyperVHost,
    ReplicationAuth,
    ReplicationSettings,
    escape_wildcards,
    name_of_test_vm,
)
from workers.hyperv.models import RecoveryPoint, UnexpectedOutput
from workers.hyperv.states import ReplicationHealth, ReplicationMode, ReplicationState, VMState

from .doubles import FakeRunner, error, output

POINT = RecoveryPoint("hourly", "p1", "Replica", None, "sql-01")
TO_POINT = "Get-VMSnapshot | Start-VMFailover"
FAILED_OVER = {"Name": "sql-01", "State": "Off", "ReplicationState": "FailedOverWaitingCompletion"}

REPLICATION = {
    "VMName": "sql-01",
    "State": "Replicating",
    "Health": "Normal",
    "Mode": "Replica",
    "PrimaryServer": "hv-sto-1",
    "ReplicaServer": "hv-got-1",
    "FrequencySec": 300,
    "LastReplicationTime": "2026-11-29T14:25:00.1234567+00:00",
}


def test_get_replication_reads_every_field(runner: FakeRunner) -> None:
    runner.on("Get-VMReplication", output(REPLICATION))
    info = HyperVHost(runner, "hv-got-1").get_replication("sql-01")
    assert runner.calls[0].parameters == {"VMName": "sql-01"}
    assert info.state is ReplicationState.REPLICATING
    assert info.health is ReplicationHealth.NORMAL
    assert info.mode is ReplicationMode.REPLICA
    assert (info.primary_server, info.replica_server, info.frequency) == (
        "hv-sto-1",
        "hv-got-1",
        300,
    )
    assert info.last_replication_time == datetime(2026, 11, 29, 14, 25, 0, 123456, tzinfo=UTC)


def test_get_replication_without_state_is_an_error_not_a_guess(runner: FakeRunner) -> None:
    runner.on("Get-VMReplication", output({k: v for k, v in REPLICATION.items() if k != "State"}))
    with pytest.raises(UnexpectedOutput, match="State"):
        HyperVHost(runner, "hv-got-1").get_replication("sql-01")


def test_get_vm_and_missing_vm(runner: FakeRunner) -> None:
    runner.on(
        "Get-VM",
        output(
            {
                "Name": "sql-01",
                "Id": "6c1f",
                "State": "Off",
                "ComputerName": "hv-got-1",
                "ReplicationMode": "Replica",
                "ReplicationState": "Replicating",
            }
        ),
        error(
            'Hyper-V was unable to find a virtual machine with name "sql-99".',
            "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM",
        ),
    )
    host = HyperVHost(runner, "hv-got-1")
    vm = host.get_vm("sql-01")
    assert (vm.name, vm.state, vm.host) == ("sql-01", VMState.OFF, "hv-got-1")
    assert vm.replication_mode is ReplicationMode.REPLICA
    with pytest.raises(CmdletFailed) as info:
        host.get_vm("sql-99")
    assert info.value.host == "hv-got-1" and info.value.cmdlet == "Get-VM"
    assert info.value.fully_qualified_error_id.endswith("Commands.GetVM")


def test_empty_get_vm_is_not_found(runner: FakeRunner) -> None:
    with pytest.raises(CmdletFailed, match="no VM named 'ghost'"):
        HyperVHost(runner, "hv-got-1").get_vm("ghost")


def test_mutating_cmdlets_send_named_parameters_and_switches(runner: FakeRunner) -> None:
    runner.on(TO_POINT, output(FAILED_OVER))
    host = HyperVHost(runner, "hv-got-1")
    host.stop_vm("sql-01", force=True, turn_off=True)
    host.start_failover("sql-01", prepare=True)
    host.start_failover("sql-01", as_test=True)
    host.start_failover("sql-01", recovery_snapshot=POINT)
    host.set_replication_reverse("sql-01", replica_server="hv-sto-1")
    host.set_replication_as_replica("sql-01")
    host.connect_network(name_of_test_vm("sql-01"), "test-got")
    host.complete_failover("sql-01")
    got = [(c.cmdlet, c.parameters, c.switches) for c in runner.calls]
    assert got == [
        ("Stop-VM", {"Name": "sql-01"}, ("Force", "TurnOff")),
        ("Start-VMFailover", {"VMName": "sql-01", "Confirm": False}, ("Prepare",)),
        ("Start-VMFailover", {"VMName": "sql-01", "Confirm": False}, ("AsTest",)),
        # The live snapshot object reaches -VMRecoverySnapshot through the pipeline.
        (
            "Get-VMSnapshot",
            {"VMName": "sql-01", "Name": "hourly", "SnapshotType": "Replica"},
            (),
        ),
        ("Start-VMFailover", {"Confirm": False}, ("Passthru",)),
        (
            "Set-VMReplication",
            {"VMName": "sql-01", "Confirm": False, "ReplicaServerName": "hv-sto-1"},
            ("Reverse",),
        ),
        ("Set-VMReplication", {"VMName": "sql-01", "Confirm": False}, ("AsReplica",)),
        ("Connect-VMNetworkAdapter", {"VMName": "sql-01 - Test", "SwitchName": "test-got"}, ()),
        ("Complete-VMFailover", {"VMName": "sql-01", "Confirm": False}, ()),
    ]


def test_recovery_point_by_id_is_looked_up_then_piped_by_name(runner: FakeRunner) -> None:
    runner.on(
        "Get-VMSnapshot",
        output(
            {
                "Name": "sql-01 - Application-consistent Replica - (11/29/2026 - 02:00:00 PM)",
                "Id": "p1",
                "VMName": "sql-01",
                "SnapshotType": "AppConsistentReplica",
            }
        ),
    )
    runner.on(TO_POINT, output(FAILED_OVER))
    host = HyperVHost(runner, "hv-got-1")
    host.start_failover("sql-01", recovery_snapshot="p1", as_test=True)
    lookup, read, failover = runner.calls
    assert (lookup.cmdlet, lookup.pipeline) == ("Get-VMSnapshot", "")
    assert (read.pipeline, failover.pipeline) == (TO_POINT, TO_POINT)
    # The point's own type, so a real host lists it whatever -SnapshotType Replica includes.
    assert read.parameters == {
        "VMName": "sql-01",
        "Name": "sql-01 - Application-consistent Replica - (11/29/2026 - 02:00:00 PM)",
        "SnapshotType": "AppConsistentReplica",
    }
    assert (failover.parameters, failover.switches) == ({"Confirm": False}, ("AsTest", "Passthru"))
    with pytest.raises(CmdletFailed, match=r"no recovery point 'yesterday'.*Application"):
        host.start_failover("sql-01", recovery_snapshot="yesterday")


def test_a_point_gone_before_the_failover_is_an_error_not_success(runner: FakeRunner) -> None:
    # Get-VMSnapshot found nothing, so Start-VMFailover never ran: there is no VM to pass through.
    runner.on(TO_POINT, output())
    with pytest.raises(CmdletFailed, match="failed nothing over") as info:
        HyperVHost(runner, "hv-got-1").start_failover("sql-01", recovery_snapshot=POINT)
    assert info.value.fully_qualified_error_id == "RecoveryPointNotFound"
    assert info.value.cmdlet == TO_POINT and info.value.target == "sql-01"


def test_an_error_in_the_point_pipeline_fails_the_failover(runner: FakeRunner) -> None:
    runner.on(
        TO_POINT,
        error(
            "failed to fail over: turn the virtual machine off first.",
            "InvalidState,Microsoft.HyperV.PowerShell.Commands.StartVMFailover",
            "InvalidOperation",
        ),
    )
    with pytest.raises(CmdletFailed, match="turn the virtual machine off") as info:
        HyperVHost(runner, "hv-got-1").start_failover("sql-01", recovery_snapshot=POINT)
    assert info.value.cmdlet == TO_POINT and info.value.category == "InvalidOperation"


def test_wildcard_characters_in_a_point_name_match_only_themselves(runner: FakeRunner) -> None:
    runner.on(TO_POINT, output(FAILED_OVER))
    point = RecoveryPoint("nightly [keep] *", "p9", "Replica", None, "sql-01")
    HyperVHost(runner, "hv-got-1").start_failover("sql-01", recovery_snapshot=point)
    assert runner.calls[0].parameters["Name"] == "nightly `[keep`] `*"
    assert escape_wildcards("a`b?") == "a``b`?"


def test_prepare_with_test_is_refused(runner: FakeRunner) -> None:
    with pytest.raises(ValueError, match="Prepare"):
        HyperVHost(runner, "hv-sto-1").start_failover("sql-01", prepare=True, as_test=True)
    assert runner.calls == []


def test_non_terminating_error_fails_a_mutation(runner: FakeRunner) -> None:
    runner.on(
        "Start-VMFailover",
        error(
            "The operation cannot be performed while the virtual machine is in its current state.",
            "OperationFailed,Microsoft.HyperV.PowerShell.Commands.StartVMFailover",
            "InvalidOperation",
        ),
    )
    with pytest.raises(CmdletFailed) as info:
        HyperVHost(runner, "hv-got-1").start_failover("sql-01")
    assert info.value.category == "InvalidOperation"
    assert "current state" in str(info.value) and "hv-got-1" in str(info.value)


def test_enable_replication_and_initial_replication(runner: FakeRunner) -> None:
    host = HyperVHost(runner, "hv-sto-1")
    settings = ReplicationSettings(
        "hv-got-1", 8084, ReplicationAuth.CERTIFICATE, 30, 4, 2, certificate_thumbprint="AB12"
    )
    host.enable_replication("file-01", settings)
    when = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
    host.start_initial_replication("file-01", start_time=when)
    assert runner.calls[0].parameters == {
        "VMName": "file-01",
        "ReplicaServerName": "hv-got-1",
        "ReplicaServerPort": 8084,
        "AuthenticationType": "Certificate",
        "ReplicationFrequencySec": 30,
        "RecoveryHistory": 4,
        "CompressionEnabled": True,
        "VSSSnapshotFrequencyHour": 2,
        "CertificateThumbprint": "AB12",
    }
    assert runner.calls[1].parameters == {"VMName": "file-01", "InitialReplicationStartTime": when}


def test_adapters_and_recovery_points(runner: FakeRunner) -> None:
    runner.on(
        "Get-VMNetworkAdapter",
        output(
            {
                "Name": "Network Adapter",
                "SwitchName": "corp-got",
                "Id": "Microsoft:1\\2",
                "IPAddresses": ["10.20.1.11", "fe80::5"],
                "MacAddress": "00155D000001",
            },
            {"Name": "Backup", "SwitchName": None, "Id": "Microsoft:1\\3", "IPAddresses": None},
        ),
    )
    runner.on(
        "Get-VMSnapshot",
        output(
            {
                "Name": "later",
                "Id": "b",
                "SnapshotType": "Replica",
                "CreationTime": "2026-11-29T14:00:00Z",
            },
            {
                "Name": "checkpoint",
                "Id": "c",
                "SnapshotType": "Standard",
                "CreationTime": "2026-11-29T12:00:00Z",
            },
            {
                "Name": "earlier",
                "Id": "a",
                "SnapshotType": "AppConsistentReplica",
                "CreationTime": "2026-11-29T13:00:00Z",
            },
        ),
    )
    host = HyperVHost(runner, "hv-got-1")
    adapters = host.get_network_adapters("sql-01")
    assert adapters[0].switch == "corp-got"
    assert adapters[0].ip_addresses == ("10.20.1.11", "fe80::5")
    assert adapters[1].switch is None and adapters[1].ip_addresses == ()
    assert [p.name for p in host.get_recovery_points("sql-01")] == ["earlier", "later"]
