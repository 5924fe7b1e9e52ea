"""Cmdlet shapes, parameter binding, pipelines, VMM, Windows DNS and scripts."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from lab.objects import CmdletError, Command, InvokeResult, LabEnum, LabObject
from lab.world import Lab
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
    assert names == ["app-01", "app-03", "crm-01", "file-01", "sql-01", "web-01", "web-03"]
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
def server_clone(record: LabObject, data: dict[str, Any] | None = None, **props: Any) -> LabObject:
    """``$new = $old.Clone()`` and its edits, on the server: a live record object."""
    properties = dict(record.properties, **props)
    if data is not None:
        old_data = record.properties["RecordData"]
        properties["RecordData"] = LabObject(
            list(old_data.type_names), dict(old_data.properties, **data), old_data.to_string
        )
    return LabObject(list(record.type_names), properties, record.to_string)


def test_dns_get_clone_set_keeps_name_and_type() -> None:
    lab = make_lab()
    (old,) = ok(
        lab, VMM, "Get-DnsServerResourceRecord", ZoneName="corp.example", Name="sql-01", RRType="A"
    )
    assert old.properties["RecordData"].properties["IPv4Address"] == "10.10.1.11"
    new = server_clone(old, {"IPv4Address": "10.20.1.11"})
    ok(
        lab,
        VMM,
        "Set-DnsServerResourceRecord",
        ZoneName="corp.example",
        OldInputObject=old,
        NewInputObject=new,
    )
    (now,) = ok(lab, VMM, "Get-DnsServerResourceRecord", ZoneName="corp.example", Name="sql-01")
    assert now.properties["RecordData"].properties["IPv4Address"] == "10.20.1.11"
    renamed = server_clone(new, HostName="sql-99")
    err = error_of(
        lab,
        VMM,
        "Set-DnsServerResourceRecord",
        ZoneName="corp.example",
        OldInputObject=new,
        NewInputObject=renamed,
    )
    assert err.fully_qualified_error_id == "WIN32 87,Set-DnsServerResourceRecord"


def test_dns_set_refuses_a_clients_copy_of_a_record() -> None:
    """The cmdlet's input objects are CimInstances: what a remote client can send (a hashtable,
    or its deserialised copy of a record, both property bags) fails argument transformation,
    as on Windows, and nothing changes."""
    lab = make_lab()
    (old,) = ok(lab, VMM, "Get-DnsServerResourceRecord", ZoneName="corp.example", Name="sql-01")
    copy = plain(old)
    new = dict(copy, RecordData={"IPv4Address": "10.20.1.11"})
    err = error_of(
        lab,
        VMM,
        "Set-DnsServerResourceRecord",
        ZoneName="corp.example",
        OldInputObject=copy,
        NewInputObject=new,
    )
    assert err.fully_qualified_error_id == (
        "ParameterArgumentTransformationError,Set-DnsServerResourceRecord"
    )
    assert err.message == (
        "Cannot process argument transformation on parameter 'OldInputObject'. Cannot convert "
        'the "System.Collections.Hashtable" value of type "System.Collections.Hashtable" to '
        'type "Microsoft.Management.Infrastructure.CimInstance".'
    )
    (now,) = ok(lab, VMM, "Get-DnsServerResourceRecord", ZoneName="corp.example", Name="sql-01")
    assert now.properties["RecordData"].properties["IPv4Address"] == "10.10.1.11"


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


def test_a_cmdlet_fed_nothing_does_nothing() -> None:
    lab = make_lab()
    nothing = Command("Get-VM", [("Name", "web-9*")])
    result = lab.invoke(STO, [nothing, Command("Stop-VM", [("Force", True)])])
    assert (result.output, result.errors) == ([], [])
    assert all(plain(o)["State"] == "Running" for o in ok(lab, STO, "Get-VM"))
    # Its named parameters are still bound and checked.
    with pytest.raises(CmdletError) as caught:
        lab.invoke(STO, [nothing, Command("Stop-VM", [("Bogus", 1)])])
    assert caught.value.info.fully_qualified_error_id.startswith("NamedParameterNotFound,")
    # Fed objects, it acts on each of them.
    fed = lab.invoke(STO, [Command("Get-VM", [("Name", "web-*")]), Command("Stop-VM", [])])
    assert fed.errors == []
    states = {o.properties["Name"]: plain(o)["State"] for o in ok(lab, STO, "Get-VM")}
    assert states == {**{n: "Running" for n in states}, "web-01": "Off", "web-03": "Off"}


def test_numeric_error_action_stop_is_terminating() -> None:
    lab = make_lab()
    with pytest.raises(CmdletError):
        call(lab, STO, "Get-VM", Name="nope", ErrorAction=1)
    assert call(lab, STO, "Get-VM", Name="nope", ErrorAction="SilentlyContinue").errors == []


def _add_a(lab: Lab, name: str, ttl: Any) -> InvokeResult:
    return call(
        lab,
        VMM,
        "Add-DnsServerResourceRecordA",
        ZoneName="corp.example",
        Name=name,
        IPv4Address="10.10.9.1",
        TimeToLive=ttl,
    )


def _ttl(lab: Lab, name: str) -> float:
    (rec,) = ok(lab, VMM, "Get-DnsServerResourceRecord", ZoneName="corp.example", Name=name)
    seconds: float = rec.properties["TimeToLive"].total_seconds()
    return seconds


@pytest.mark.parametrize(
    ("ttl", "seconds"),
    [
        ("PT5M", 300),  # xs:duration, how CLIXML writes a TimeSpan
        ("PT1H30M", 5400),
        ("P1DT2H", 93600),
        ("PT90.5S", 90),
        ("00:05:00", 300),  # TimeSpan text
        ("05:00", 18000),  # hh:mm
        ("1.00:00:00", 86400),  # d.hh:mm:ss
        ("2.03:04:05.5", 183845),
        ("2", 172800),  # a bare number of TimeSpan text is days
        (timedelta(minutes=5), 300),  # a deserialised <TS>
        ("1 day, 0:05:00", 86700),  # how the protocol layer hands a <TS> over as text
        (3_000_000_000, 300),  # a number is ticks of 100 ns, as [TimeSpan]3000000000
        (60, 0),  # ... so 60 is 6 microseconds, not a minute
    ],
)
def test_dns_ttl_accepts_every_timespan_form(ttl: Any, seconds: int) -> None:
    lab = make_lab()
    assert _add_a(lab, "t", ttl).errors == []
    assert _ttl(lab, "t") == seconds


@pytest.mark.parametrize("ttl", ["soon", "25:00:00", "00:60:00", "P", "PT", "1.5", "5M", True])
def test_dns_ttl_junk_is_the_cdxml_transformation_error(ttl: Any) -> None:
    lab = make_lab()
    with pytest.raises(CmdletError) as caught:
        _add_a(lab, "t", ttl)
    info = caught.value.info
    assert info.fully_qualified_error_id == (
        "ParameterArgumentTransformationError,Add-DnsServerResourceRecordA"
    )
    assert info.category == "InvalidData"
    assert info.message.startswith(
        f"Cannot process argument transformation on parameter 'TimeToLive'. Cannot convert "
        f'value "{ttl}" to type "System.TimeSpan".'
    )
    err = error_of(lab, VMM, "Get-DnsServerResourceRecord", ZoneName="corp.example", Name="t")
    assert err.fully_qualified_error_id == "WIN32 9714,Get-DnsServerResourceRecord"


def test_dns_negative_ttl_is_refused_and_adds_nothing() -> None:
    lab = make_lab()
    (err,) = _add_a(lab, "t", "-00:05:00").errors
    assert err.fully_qualified_error_id == "WIN32 87,Add-DnsServerResourceRecordA"
    assert "negative" in err.message
    assert call(lab, VMM, "Get-DnsServerResourceRecord", ZoneName="corp.example", Name="t").errors


def test_dns_set_reads_the_new_objects_ttl_in_any_form() -> None:
    lab = make_lab()
    (old,) = ok(lab, VMM, "Get-DnsServerResourceRecord", ZoneName="corp.example", Name="sql-01")
    for ttl, seconds in (("PT10M", 600), ("01:00:00", 3600), (timedelta(hours=2), 7200)):
        (current,) = ok(
            lab, VMM, "Get-DnsServerResourceRecord", ZoneName="corp.example", Name="sql-01"
        )
        new = server_clone(current, TimeToLive=ttl)
        ok(
            lab,
            VMM,
            "Set-DnsServerResourceRecord",
            ZoneName="corp.example",
            OldInputObject=current,
            NewInputObject=new,
        )
        assert _ttl(lab, "sql-01") == seconds
    with pytest.raises(CmdletError) as caught:
        call(
            lab,
            VMM,
            "Set-DnsServerResourceRecord",
            ZoneName="corp.example",
            OldInputObject=old,
            NewInputObject=server_clone(old, TimeToLive="an hour"),
        )
    assert caught.value.info.fully_qualified_error_id == (
        "ParameterArgumentTransformationError,Set-DnsServerResourceRecord"
    )
    assert _ttl(lab, "sql-01") == 7200


def test_dns_aaaa_records_add_get_set_remove() -> None:
    lab = make_lab()
    ok(
        lab,
        VMM,
        "Add-DnsServerResourceRecordAAAA",
        ZoneName="corp.example",
        Name="v6",
        IPv6Address="fd00:0:0::1",
        TimeToLive="PT5M",
    )
    (rec,) = ok(
        lab, VMM, "Get-DnsServerResourceRecord", ZoneName="corp.example", Name="v6", RRType="AAAA"
    )
    assert rec.type_names[0].endswith("/DNS/DnsServerResourceRecord")
    data = rec.properties["RecordData"]
    assert data.type_names[0].endswith("/DNS/DnsServerResourceRecordAAAA")
    assert data.properties == {"IPv6Address": "fd00::1"}  # stored in canonical form
    assert (rec.properties["RecordType"], rec.properties["Type"]) == ("AAAA", 28)
    assert rec.properties["TimeToLive"] == timedelta(minutes=5)
    assert ok(lab, VMM, "Get-DnsServerResourceRecord", ZoneName="corp.example", RRType="AAAA") == [
        rec
    ]
    with pytest.raises(CmdletError):
        call(
            lab,
            VMM,
            "Get-DnsServerResourceRecord",
            "corp.example",
            "v6",
            RRType="A",
            ErrorAction="Stop",
        )
    new = server_clone(rec, {"IPv6Address": "fd00::2"})
    ok(
        lab,
        VMM,
        "Set-DnsServerResourceRecord",
        ZoneName="corp.example",
        OldInputObject=rec,
        NewInputObject=new,
    )
    (now,) = ok(lab, VMM, "Get-DnsServerResourceRecord", ZoneName="corp.example", Name="v6")
    assert now.properties["RecordData"].properties["IPv6Address"] == "fd00::2"
    ok(
        lab,
        VMM,
        "Remove-DnsServerResourceRecord",
        ZoneName="corp.example",
        Name="v6",
        RRType="AAAA",
        RecordData="FD00:0::2",
        Force=True,
    )
    err = error_of(lab, VMM, "Get-DnsServerResourceRecord", ZoneName="corp.example", Name="v6")
    assert err.fully_qualified_error_id == "WIN32 9714,Get-DnsServerResourceRecord"


@pytest.mark.parametrize(
    ("cmdlet", "key", "value", "error_id"),
    [
        ("Add-DnsServerResourceRecordAAAA", "IPv6Address", "10.10.9.1", "WIN32 87,"),
        ("Add-DnsServerResourceRecordA", "IPv4Address", "fd00::1", "WIN32 87,"),
        ("Add-DnsServerResourceRecordAAAA", "IPv6Address", "nope", "ParameterArgument"),
        ("Add-DnsServerResourceRecordA", "IPv4Address", "10.10.9", "ParameterArgument"),
    ],
)
def test_dns_address_of_the_wrong_family_or_junk_is_refused(
    cmdlet: str, key: str, value: str, error_id: str
) -> None:
    lab = make_lab()
    err = error_of(lab, VMM, cmdlet, ZoneName="corp.example", Name="bad", **{key: value})
    assert err.fully_qualified_error_id.startswith(error_id)
    assert err.fully_qualified_error_id.endswith("," + cmdlet)
    assert call(lab, VMM, "Get-DnsServerResourceRecord", ZoneName="corp.example", Name="bad").errors


def test_dns_ptr_records() -> None:
    lab = make_lab()
    ok(
        lab,
        VMM,
        "Add-DnsServerResourceRecordPtr",
        ZoneName="corp.example",
        Name="11.1",
        PtrDomainName="sql-01.corp.example",
    )
    (rec,) = ok(
        lab, VMM, "Get-DnsServerResourceRecord", ZoneName="corp.example", Name="11.1", RRType="Ptr"
    )
    assert rec.properties["RecordType"] == "PTR" and rec.properties["Type"] == 12
    assert rec.properties["RecordData"].properties == {"PtrDomainName": "sql-01.corp.example."}
    ok(
        lab,
        VMM,
        "Remove-DnsServerResourceRecord",
        ZoneName="corp.example",
        Name="11.1",
        RRType="Ptr",
        RecordData="sql-01.corp.example",
        Force=True,
    )
    assert call(lab, VMM, "Get-DnsServerResourceRecord", "corp.example", "11.1").errors
