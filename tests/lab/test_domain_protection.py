"""Protection as Windows does it: the Replica server's say, initial replication at the
bandwidth, storage locations, lag turning health Warning then Critical, resynchronisation."""

from __future__ import annotations

from typing import Any

from lab.world import Lab
from tests.lab.test_domain_support import ends, error_of, example_dict, make_lab, ok, plain, rep, vm

STO, GOT = "hv-sto-1", "hv-got-1"
GIB = 1024**3
# crm-01 (60 GB) at the example topology's 10 Gbit/s: 51.5 lab seconds.
CRM_SECONDS = 60 * GIB * 8 / 10_000e6


def enable(lab: Lab, name: str = "crm-01", **extra: Any) -> list[Any]:
    params: dict[str, Any] = {
        "VMName": name,
        "ReplicaServerName": GOT,
        "ReplicaServerPort": 8083,
        "AuthenticationType": "Kerberos",
        **extra,
    }
    return ok(lab, STO, "Enable-VMReplication", **params)


def measure(lab: Lab, host: str, name: str) -> dict[str, Any]:
    (out,) = ok(lab, host, "Measure-VMReplication", VMName=name)
    result: dict[str, Any] = plain(out)
    return result


def test_initial_replication_takes_the_disks_at_the_bandwidth() -> None:
    lab = make_lab()
    assert vm(lab, STO, "crm-01")["ReplicationState"] == "Disabled"
    enable(lab, ReplicationFrequencySec=30, RecoveryHistory=4, VSSSnapshotFrequencyHour=2)
    assert rep(lab, STO, "crm-01")["RecoveryHistory"] == 4
    ok(lab, STO, "Start-VMInitialReplication", VMName="crm-01")
    assert measure(lab, STO, "crm-01")["PendingReplicationSize"] == 60 * GIB
    lab.clock.advance(CRM_SECONDS / 2)
    pending = measure(lab, STO, "crm-01")["PendingReplicationSize"]
    assert 29 * GIB < pending < 31 * GIB
    assert ends(lab, "crm-01", STO, GOT)[1::2] == (
        "InitialReplicationInProgress",
        "WaitingForInitialReplication",
    )
    lab.clock.advance(CRM_SECONDS / 2 + 0.01)
    assert ends(lab, "crm-01", STO, GOT) == ("Primary", "Replicating", "Replica", "Replicating")
    assert measure(lab, STO, "crm-01")["PendingReplicationSize"] == 0
    # A smaller VM is done sooner: hr-01 has 30 GB.
    ok(
        lab,
        "hv-sto-2",
        "Enable-VMReplication",
        VMName="hr-01",
        ReplicaServerName="hv-got-2",
        ReplicaServerPort=8083,
        AuthenticationType="Kerberos",
    )
    ok(lab, "hv-sto-2", "Start-VMInitialReplication", VMName="hr-01")
    lab.clock.advance(CRM_SECONDS / 2 + 0.01)
    assert rep(lab, "hv-sto-2", "hr-01")["State"] == "Replicating"


def test_offline_initial_replication_waits_for_the_import_on_the_replica() -> None:
    lab = make_lab()
    enable(lab)
    ok(lab, STO, "Start-VMInitialReplication", VMName="crm-01", DestinationPath="E:\\Export")
    lab.clock.advance(3 * CRM_SECONDS)
    assert ends(lab, "crm-01", STO, GOT)[1::2] == (
        "InitialReplicationInProgress",
        "WaitingForInitialReplication",
    )
    err = error_of(lab, STO, "Import-VMInitialReplication", VMName="crm-01", Path="F:\\In")
    assert err.fully_qualified_error_id.startswith("InvalidState,")
    ok(lab, GOT, "Import-VMInitialReplication", VMName="crm-01", Path="F:\\Import\\crm-01")
    assert ends(lab, "crm-01", STO, GOT) == ("Primary", "Replicating", "Replica", "Replicating")


def test_a_replica_server_that_does_not_accept_refuses_enable() -> None:
    data = example_dict()
    for host in data["hosts"]:
        if host["name"] == GOT:
            host["replica_server"] = {"enabled": False}
        if host["name"] == "hv-got-2":
            host["replica_server"] = {"auth": ["certificate"]}
    lab = make_lab(data)
    (server,) = ok(lab, GOT, "Get-VMReplicationServer")
    assert plain(server)["ReplicationEnabled"] is False
    params = {"ReplicaServerPort": 8083, "AuthenticationType": "Kerberos"}
    err = error_of(
        lab, STO, "Enable-VMReplication", VMName="crm-01", ReplicaServerName=GOT, **params
    )
    assert "is not enabled as a Replica server" in err.message
    err = error_of(
        lab,
        "hv-sto-2",
        "Enable-VMReplication",
        VMName="hr-01",
        ReplicaServerName="hv-got-2",
        **params,
    )
    assert "does not accept Kerberos authentication" in err.message
    # Wrong port, and a VM that already replicates.
    lab = make_lab()
    err = error_of(
        lab,
        STO,
        "Enable-VMReplication",
        VMName="crm-01",
        ReplicaServerName=GOT,
        ReplicaServerPort=9999,
        AuthenticationType="Kerberos",
    )
    assert "not listening on port 9999" in err.message
    err = error_of(
        lab, STO, "Enable-VMReplication", VMName="sql-01", ReplicaServerName=GOT, **params
    )
    assert "already enabled" in err.message
    assert rep(lab, STO, "sql-01")["State"] == "Replicating"


def test_the_authorization_entry_decides_where_the_replica_is_stored() -> None:
    lab = make_lab()
    (server,) = ok(lab, GOT, "Get-VMReplicationServer")
    assert plain(server)["DefaultStorageLocation"] == "D:\\Hyper-V\\Replica"
    ok(
        lab,
        GOT,
        "New-VMReplicationAuthorizationEntry",
        AllowedPrimaryServer=STO,
        ReplicaStorageLocation="E:\\Replica\\gold-dr",
        TrustGroup="ferryman",
    )
    (entry,) = ok(lab, GOT, "Get-VMReplicationAuthorizationEntry", AllowedPrimaryServer=STO)
    assert plain(entry)["ReplicaStorageLocation"] == "E:\\Replica\\gold-dr"
    enable(lab)
    assert vm(lab, GOT, "crm-01")["Path"] == "E:\\Replica\\gold-dr\\crm-01"


def test_lag_turns_health_warning_then_critical_until_resynchronised() -> None:
    lab = make_lab()
    assert rep(lab, STO, "sql-01")["Health"] == "Normal"
    lab.admin("POST", f"/hosts/{GOT}/down", None)
    lab.clock.advance(600)
    assert rep(lab, STO, "sql-01")["Health"] == "Warning"
    assert rep(lab, STO, "sql-01")["State"] == "Replicating"
    lab.clock.advance(3600)
    assert rep(lab, STO, "sql-01")["State"] == "WaitingForStartResynchronize"
    assert rep(lab, STO, "sql-01")["Health"] == "Critical"
    lab.admin("POST", f"/hosts/{GOT}/up", None)
    lab.clock.advance(900)
    assert rep(lab, STO, "sql-01")["State"] == "WaitingForStartResynchronize"
    err = error_of(lab, GOT, "Resume-VMReplication", VMName="sql-01", Resynchronize=True)
    assert err.fully_qualified_error_id.startswith("InvalidState,")
    ok(lab, STO, "Resume-VMReplication", VMName="sql-01", Resynchronize=True)
    assert rep(lab, STO, "sql-01")["State"] == "Resynchronizing"
    assert measure(lab, STO, "sql-01")["PendingReplicationSize"] > 0
    lab.clock.advance(40 * GIB * 8 * 0.1 / 10_000e6 + 0.01)
    assert rep(lab, STO, "sql-01")["State"] == "Replicating"
    assert rep(lab, STO, "sql-01")["Health"] == "Normal"


def test_remove_vm_deletes_a_replica_only_once_replication_is_removed() -> None:
    lab = make_lab()
    err = error_of(lab, GOT, "Remove-VM", Name="sql-01", Force=True)
    assert "Remove replication first" in err.message
    ok(lab, STO, "Remove-VMReplication", VMName="sql-01")
    ok(lab, GOT, "Remove-VMReplication", VMName="sql-01")
    ok(lab, GOT, "Remove-VM", Name="sql-01", Force=True)
    assert ok(lab, GOT, "Get-VM", Name="sql-0*") == []
    assert vm(lab, STO, "sql-01")["ReplicationState"] == "Disabled"


def test_get_date_reads_the_hosts_clock_which_is_lab_time() -> None:
    from datetime import datetime

    lab = make_lab()
    lab.clock.advance(3600)
    (text,) = ok(lab, STO, "Get-Date", Format="o")
    # .NET's round-trip text: seven fractional digits and the offset
    assert text.endswith("+00:00") and len(text.split(".")[1]) == len("1234567+00:00")
    read = datetime.fromisoformat(text[:26] + text[27:])
    assert abs((read - lab.clock.datetime()).total_seconds()) < 5
    (now,) = ok(lab, STO, "Get-Date")
    assert isinstance(now, datetime)
    assert "-Format o" in error_of(lab, STO, "Get-Date", Format="yyyy").message
