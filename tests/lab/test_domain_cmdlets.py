"""Cmdlet shapes, parameter binding, pipelines, VMM, Windows DNS and scripts."""

from __future__ import annotations

import pytest

from lab.objects import CmdletError, Command, LabEnum
from tests.lab.test_domain_support import call, error_of, example_dict, make_lab, ok, plain

STO, GOT, VMM = "hv-sto-1", "hv-got-1", "vmm-sto"


# ----------------------------------------------------------------------------- shapes
def test_get_vm_has_real_type_names_and_named_enums() -> None:
    lab = make_lab()
    (obj,) = ok(lab, STO, "Get-VM", "sql-01")
    assert obj.type_names[0] == "Microsoft.HyperV.PowerShell.VirtualMachine"
    state = obj.properties["State"]
    assert state == LabEnum("Microsoft.HyperV.PowerShell.VMState", "Running", 2)
    assert obj.properties["ReplicationMode"].type_name == (
        "Microsoft.HyperV.PowerShell.VMReplicationMode"
    )
    (r,) = ok(lab, STO, "Get-VMReplication", "sql-01")
    assert r.type_names[0] == "Microsoft.HyperV.PowerShell.VMReplication"
    assert r.properties["ReplicationState"].type_name == (
        "Microsoft.HyperV.PowerShell.VMReplicationState"
    )
    assert plain(r)["AuthType"] == "Kerberos" and r.properties["ReplicaPort"] == 8083


def test_get_vm_without_name_lists_the_host_and_wildcards_match() -> None:
    lab = make_lab()
    names = sorted(o.properties["Name"] for o in ok(lab, STO, "Get-VM"))
    assert names == ["app-01", "app-03", "file-01", "sql-01", "web-01", "web-03"]
    assert len(ok(lab, STO, "Get-VM", Name="web-*")) == 2


def test_get_vmreplication_filters_by_state() -> None:
    lab = make_lab()
    ok(lab, GOT, "Start-VMFailover", VMName="sql-01")
    found = ok(lab, GOT, "Get-VMReplication", ReplicationState="FailedOverWaitingCompletion")
    assert [o.properties["VMName"] for o in found] == ["sql-01"]


# ----------------------------------------------------------------------------- errors
def test_unknown_cmdlet_is_command_not_found() -> None:
    lab = make_lab()
    with pytest.raises(CmdletError) as caught:
        call(lab, STO, "Get-Unicorn")
    info = caught.value.info
    assert (info.fully_qualified_error_id, info.category) == (
        "CommandNotFoundException",
        "ObjectNotFound",
    )
    # VMM and DNS cmdlets are not installed on a Hyper-V host.
    with pytest.raises(CmdletError):
        call(lab, STO, "Get-SCVirtualMachine", Name="sql-01")


def test_unknown_vm_is_the_real_hyperv_error_and_non_terminating() -> None:
    lab = make_lab()
    result = lab.invoke(STO, [Command("Get-VM", [("Name", ["sql-01", "nope"])])])
    assert [o.properties["Name"] for o in result.output] == ["sql-01"]
    (err,) = result.errors
    assert (
        err.fully_qualified_error_id
        == "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM"
    )
    assert err.category == "InvalidArgument"
    assert 'unable to find a virtual machine with name "nope"' in err.message
    err = error_of(lab, STO, "Start-VM", Name="nope")
    assert err.fully_qualified_error_id == (
        "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.StartVM"
    )


@pytest.mark.parametrize(
    ("cmdlet", "params", "error_id"),
    [
        ("Get-VM", {"Bogus": 1}, "NamedParameterNotFound,"),
        (
            "Start-VMFailover",
            {"VMName": "sql-01", "AsTest": True, "Prepare": True},
            "AmbiguousParameterSet,",
        ),
        ("Connect-VMNetworkAdapter", {"VMName": "sql-01"}, "MissingMandatoryParameter,"),
        (
            "Set-VMReplication",
            {"VMName": "sql-01", "RecoveryHistory": "many"},
            "ParameterArgumentValidationError,",
        ),
    ],
)
def test_parameter_binding_errors_are_terminating(cmdlet: str, params: dict, error_id: str) -> None:
    lab = make_lab()
    with pytest.raises(CmdletError) as caught:
        call(lab, GOT, cmdlet, **params)
    assert caught.value.info.fully_qualified_error_id.startswith(error_id)


def test_parameter_names_match_by_alias_prefix_and_case() -> None:
    lab = make_lab()
    assert len(ok(lab, STO, "get-vm", vmname="sql-01")) == 1
    assert len(ok(lab, GOT, "Get-VMReplication", VMN="sql-01")) == 1


# ----------------------------------------------------------------------------- pipelines
def test_pipeline_feeds_objects_to_the_next_command() -> None:
    lab = make_lab()
    result = lab.invoke(
        STO,
        [
            Command("Get-VM", [("Name", "sql-01")]),
            Command("Stop-VM", [("Force", True)]),
        ],
    )
    assert result.errors == []
    assert plain(ok(lab, STO, "Get-VM", Name="sql-01")[0])["State"] == "Off"
    result = lab.invoke(
        STO, [Command("Get-VM", [("Name", "sql-01")]), Command("Start-VM", [("Passthru", None)])]
    )
    assert plain(result.output[0])["State"] == "Running"


def test_start_and_stop_are_idempotent_with_a_warning() -> None:
    lab = make_lab()
    result = call(lab, STO, "Start-VM", Name="sql-01")
    assert result.errors == [] and "already" in result.warnings[0]


def test_guest_ip_appears_after_boot_and_goes_with_shutdown() -> None:
    lab = make_lab()
    ok(lab, STO, "Stop-VM", Name="app-01")
    (a,) = ok(lab, STO, "Get-VMNetworkAdapter", VMName="app-01")
    assert a.properties["IPAddresses"] == [] and a.properties["SwitchName"] == "corp-sto"
    ok(lab, STO, "Start-VM", Name="app-01")
    lab.clock.advance(29)
    assert ok(lab, STO, "Get-VMNetworkAdapter", VMName="app-01")[0].properties["IPAddresses"] == []
    lab.clock.advance(1)
    (a,) = ok(lab, STO, "Get-VMNetworkAdapter", VMName="app-01")
    assert a.properties["IPAddresses"][0] == "10.10.2.21"
    ok(lab, STO, "Disconnect-VMNetworkAdapter", VMName="app-01")
    assert ok(lab, STO, "Get-VMNetworkAdapter", VMName="app-01")[0].properties["IPAddresses"] == []


def test_connect_to_a_switch_the_host_lacks() -> None:
    lab = make_lab()
    err = error_of(lab, GOT, "Connect-VMNetworkAdapter", VMName="sql-01", SwitchName="corp-sto")
    assert err.fully_qualified_error_id == (
        "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.ConnectVMNetworkAdapter"
    )
    # Adapter objects piped in work too.
    adapters = ok(lab, GOT, "Get-VMNetworkAdapter", VMName="sql-01")
    out = ok(
        lab,
        GOT,
        "Connect-VMNetworkAdapter",
        VMNetworkAdapter=adapters,
        SwitchName="corp-got",
        Passthru=True,
    )
    assert out[0].properties["SwitchName"] == "corp-got"


def test_computername_routes_to_another_host() -> None:
    lab = make_lab()
    (obj,) = ok(lab, STO, "Get-VM", Name="sql-01", ComputerName="hv-got-1")
    assert obj.properties["ComputerName"] == "HV-GOT-1"
    assert plain(obj)["ReplicationMode"] == "Replica"


# ----------------------------------------------------------------------------- VMM
def test_scvm_returns_primary_and_replica_and_ip_via_adapter_id() -> None:
    lab = make_lab()
    found = ok(lab, VMM, "Get-SCVirtualMachine", Name="sql-01")
    hosts = sorted(o.properties["HostName"] for o in found)
    assert hosts == ["hv-got-1", "hv-sto-1"]
    primary = next(o for o in found if o.properties["HostName"] == "hv-sto-1")
    assert primary.properties["VMHost"].to_string == "hv-sto-1"
    assert primary.properties["Cloud"] == "sto-gold"
    (adapter,) = primary.properties["VirtualNetworkAdapters"]
    (ip,) = ok(lab, "vmm-got", "Get-SCIPAddress", GrantToObjectID=str(adapter.properties["ID"]))
    assert ip.properties["Address"] == "10.10.1.11"
    replica = next(o for o in found if o.properties["HostName"] == "hv-got-1")
    replica_adapter = replica.properties["VirtualNetworkAdapters"][0].properties["ID"]
    assert ok(lab, VMM, "Get-SCIPAddress", GrantToObjectID=str(replica_adapter)) == []


# ----------------------------------------------------------------------------- DNS
def test_dns_get_clone_set_keeps_name_and_type() -> None:
    lab = make_lab()
    (old,) = ok(
        lab, VMM, "Get-DnsServerResourceRecord", ZoneName="corp.example", Name="sql-01", RRType="A"
    )
    assert old.properties["RecordData"].properties["IPv4Address"] == "10.10.1.11"
    new = plain(old)
    new["RecordData"] = {"IPv4Address": "10.20.1.11"}
    ok(
        lab,
        VMM,
        "Set-DnsServerResourceRecord",
        ZoneName="corp.example",
        OldInputObject=plain(old),
        NewInputObject=new,
    )
    (now,) = ok(lab, VMM, "Get-DnsServerResourceRecord", ZoneName="corp.example", Name="sql-01")
    assert now.properties["RecordData"].properties["IPv4Address"] == "10.20.1.11"
    renamed = dict(new, HostName="sql-99")
    err = error_of(
        lab,
        VMM,
        "Set-DnsServerResourceRecord",
        ZoneName="corp.example",
        OldInputObject=new,
        NewInputObject=renamed,
    )
    assert err.fully_qualified_error_id == "WIN32 87,Set-DnsServerResourceRecord"


def test_dns_add_remove_and_errors() -> None:
    lab = make_lab()
    assert (
        len(ok(lab, VMM, "Get-DnsServerResourceRecord", ZoneName="corp.example", Name="www")) == 4
    )
    ok(
        lab,
        VMM,
        "Add-DnsServerResourceRecordA",
        ZoneName="corp.example",
        Name="new",
        IPv4Address="10.10.9.9",
        TimeToLive="00:05:00",
    )
    (rec,) = ok(
        lab, VMM, "Get-DnsServerResourceRecord", ZoneName="corp.example", Name="new.corp.example."
    )
    assert rec.properties["TimeToLive"].total_seconds() == 300
    err = error_of(
        lab,
        VMM,
        "Add-DnsServerResourceRecordA",
        ZoneName="corp.example",
        Name="new",
        IPv4Address="10.10.9.9",
    )
    assert err.fully_qualified_error_id == "WIN32 9711,Add-DnsServerResourceRecordA"
    ok(
        lab,
        VMM,
        "Remove-DnsServerResourceRecord",
        ZoneName="corp.example",
        Name="new",
        RRType="A",
        Force=True,
    )
    err = error_of(lab, VMM, "Get-DnsServerResourceRecord", ZoneName="corp.example", Name="new")
    assert err.fully_qualified_error_id == "WIN32 9714,Get-DnsServerResourceRecord"
    err = error_of(lab, VMM, "Get-DnsServerResourceRecord", ZoneName="nope.example")
    assert err.fully_qualified_error_id == "WIN32 9601,Get-DnsServerResourceRecord"
    # The zone lives on vmm-sto only.
    err = error_of(lab, "vmm-got", "Get-DnsServerResourceRecord", ZoneName="corp.example")
    assert err.fully_qualified_error_id.startswith("WIN32 9601,")


# ----------------------------------------------------------------------------- scripts
def test_scripts_succeed_by_default_and_follow_behaviours() -> None:
    data = example_dict()
    data["scripts"] = [
        {"pattern": r"Invoke-AppCheck", "output": ["healthy {Tier}"]},
        {"pattern": r"Break-Things", "error": "the app is down"},
    ]
    lab = make_lab(data)
    plain_run = lab.invoke(VMM, [Command("Write-Output 1", [], is_script=True)])
    assert plain_run.output == [] and plain_run.errors == []
    checked = lab.invoke(VMM, [Command("Invoke-AppCheck", [("Tier", "web")], is_script=True)])
    assert checked.output == ["healthy web"]
    with pytest.raises(CmdletError) as caught:
        lab.invoke(VMM, [Command("Break-Things -Now", [], is_script=True)])
    assert caught.value.info.fully_qualified_error_id == "the app is down"
    scripts = [e for e in lab.audit.entries(cmdlet="Script")]
    assert [e.outcome for e in scripts] == ["ok", "ok", "error:the app is down"]
    assert scripts[1].parameters["Tier"] == "web"


def test_an_empty_name_list_never_means_every_vm() -> None:
    lab = make_lab()
    with pytest.raises(CmdletError) as caught:
        call(lab, STO, "Stop-VM", Name=[])
    assert caught.value.info.fully_qualified_error_id.startswith(
        "ParameterArgumentValidationError,"
    )
    assert all(plain(o)["State"] == "Running" for o in ok(lab, STO, "Get-VM"))


def test_adapter_reports_ipv4_then_link_local_ipv6() -> None:
    lab = make_lab()
    (a,) = ok(lab, STO, "Get-VMNetworkAdapter", VMName="sql-01")
    ipv4, ipv6 = a.properties["IPAddresses"]
    assert ipv4 == "10.10.1.11" and ipv6.startswith("fe80::215:5dff:fe")


def test_lookups_by_id_host_and_input_object() -> None:
    lab = make_lab()
    (by_name,) = ok(lab, STO, "Get-VM", Name="sql-01")
    (by_id,) = ok(lab, STO, "Get-VM", Id=str(by_name.properties["Id"]))
    assert by_id.properties["Name"] == "sql-01"
    found = ok(lab, VMM, "Get-SCVirtualMachine", Name="sql-01", VMHost="hv-got-1")
    assert [o.properties["HostName"] for o in found] == ["hv-got-1"]
    (one,) = ok(lab, VMM, "Get-SCVirtualMachine", ID=str(found[0].properties["ID"]))
    assert one.properties["HostName"] == "hv-got-1"
    ok(lab, GOT, "Start-VMFailover", VMName="sql-01", AsTest=True)
    (test_vm,) = ok(lab, VMM, "Get-SCVirtualMachine", Name="sql-01 - Test")
    assert test_vm.properties["IsTestVM"] is True
    # A DNS record object piped back in is removed.
    records = ok(lab, VMM, "Get-DnsServerResourceRecord", ZoneName="corp.example", Name="www")
    ok(
        lab,
        VMM,
        "Remove-DnsServerResourceRecord",
        ZoneName="corp.example",
        InputObject=plain(records[0]),
        Force=True,
    )
    remaining = ok(lab, VMM, "Get-DnsServerResourceRecord", ZoneName="corp.example", Name="www")
    assert len(remaining) == 3


def test_numeric_error_action_stop_is_terminating() -> None:
    lab = make_lab()
    with pytest.raises(CmdletError):
        call(lab, STO, "Get-VM", Name="nope", ErrorAction=1)
    assert call(lab, STO, "Get-VM", Name="nope", ErrorAction="SilentlyContinue").errors == []


def test_dns_ttls_in_every_timespan_form_and_aaaa_records() -> None:
    lab = make_lab()
    for name, ttl, seconds in (("a1", "PT5M", 300), ("a2", "1.00:00:00", 86400), ("a3", 60, 60)):
        ok(
            lab,
            VMM,
            "Add-DnsServerResourceRecordA",
            ZoneName="corp.example",
            Name=name,
            IPv4Address="10.10.9.1",
            TimeToLive=ttl,
        )
        (rec,) = ok(lab, VMM, "Get-DnsServerResourceRecord", ZoneName="corp.example", Name=name)
        assert rec.properties["TimeToLive"].total_seconds() == seconds
    ok(
        lab,
        VMM,
        "Add-DnsServerResourceRecordAAAA",
        ZoneName="corp.example",
        Name="v6",
        IPv6Address="fd00::1",
    )
    (rec,) = ok(
        lab, VMM, "Get-DnsServerResourceRecord", ZoneName="corp.example", Name="v6", RRType="AAAA"
    )
    assert rec.properties["RecordData"].properties["IPv6Address"] == "fd00::1"
    err = error_of(
        lab,
        VMM,
        "Add-DnsServerResourceRecordA",
        ZoneName="corp.example",
        Name="bad",
        IPv4Address="10.10.9.2",
        TimeToLive="soon",
    )
    assert err.fully_qualified_error_id.startswith("ParameterArgumentValidationError,")
