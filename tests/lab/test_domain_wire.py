"""Domain behaviour as a remote client sees it: values and pipelines through real pypsrp.

The protocol layer turns what pypsrp sends into plain Python before the domain reads it (a
``<TS>`` TimeSpan becomes text, an object becomes a dict); these tests make sure the domain's
conversions hold up on the far side of that.
"""

from __future__ import annotations

from typing import Any

import pytest
from pypsrp.powershell import PowerShell, PSInvocationState
from pypsrp.serializer import TaggedValue

from tests.lab.clients import props
from tests.lab.scenario import Sites

GOT, VMM, VM = "hv-got-1", "vmm-sto", "sql-01"


def _ttl_seconds(sites: Sites, name: str) -> int:
    (rec,) = sites.ok(VMM, "Get-DnsServerResourceRecord", ZoneName="corp.example", Name=name)
    # pypsrp reads a <TS> back as its xs:duration text.
    text = str(props(rec)["TimeToLive"])
    assert text.startswith("P"), text
    found = sites.handle.lab.world.zones["corp.example"].records
    return next(r.ttl for r in found if r.name == name)


@pytest.mark.parametrize(
    ("ttl", "seconds"),
    [
        (TaggedValue("TS", "P1DT0H5M0S"), 86700),  # a real System.TimeSpan on the wire
        (TaggedValue("TS", "PT5M"), 300),
        ("1.00:05:00", 86700),
        ("PT1H30M", 5400),
    ],
)
def test_timetolive_as_a_remote_client_sends_it(sites: Sites, ttl: Any, seconds: int) -> None:
    sites.ok(
        VMM,
        "Add-DnsServerResourceRecordA",
        ZoneName="corp.example",
        Name="wire",
        IPv4Address="10.10.9.7",
        TimeToLive=ttl,
    )
    assert _ttl_seconds(sites, "wire") == seconds


def test_junk_timetolive_is_the_transformation_error(sites: Sites) -> None:
    refused = sites.error_id(
        VMM,
        "Add-DnsServerResourceRecordA",
        ZoneName="corp.example",
        Name="wire",
        IPv4Address="10.10.9.7",
        TimeToLive="in a while",
    )
    assert refused == "ParameterArgumentTransformationError,Add-DnsServerResourceRecordA"


def _escape(name: str) -> str:
    return "".join("`" + ch if ch in "*?[]`" else ch for ch in name)


def _pipeline(sites: Sites, point: str, *switches: str) -> PowerShell:
    """Get-VMSnapshot -VMName X -Name P -SnapshotType Replica | Start-VMFailover, as the
    Hyper-V adapter sends it (-Confirm:$false, -Passthru)."""
    ps = PowerShell(sites.pool(GOT))
    ps.add_cmdlet("Get-VMSnapshot").add_parameter("VMName", VM)
    ps.add_parameter("Name", _escape(point)).add_parameter("SnapshotType", "Replica")
    ps.add_cmdlet("Start-VMFailover").add_parameter("Confirm", False)
    for switch in (*switches, "Passthru"):
        ps.add_parameter(switch)
    ps.invoke()
    return ps


def test_recovery_point_piped_on_the_host(sites: Sites) -> None:
    sites.handle.lab.clock.advance(600)
    (point,) = sites.ok(GOT, "Get-VMSnapshot", VMName=VM, SnapshotType="Replica")
    name = str(props(point)["Name"])
    ps = _pipeline(sites, name, "AsTest")
    assert ps.state == PSInvocationState.COMPLETED and not ps.streams.error
    assert [props(o)["Name"] for o in ps.output] == [f"{VM} - Test"]
    sites.ok(GOT, "Stop-VMFailover", VMName=VM)
    ps = _pipeline(sites, name)
    assert ps.state == PSInvocationState.COMPLETED and not ps.streams.error
    assert [props(o)["Name"] for o in ps.output] == [VM]
    assert sites.replication(GOT, VM)[0] == "FailedOverWaitingCompletion"
    sites.ok(GOT, "Stop-VMFailover", VMName=VM)
    # A point that is gone: nothing is piped, nothing fails over, no error.
    ps = _pipeline(sites, name + " (gone)")
    assert ps.state == PSInvocationState.COMPLETED and not ps.streams.error and not ps.output
    assert sites.replication(GOT, VM)[0] == "Replicating"


@pytest.mark.parametrize("value", [{"Id": "p1", "Name": "hourly", "VMName": VM}, "hourly"])
def test_recovery_snapshot_that_is_no_snapshot_is_refused(sites: Sites, value: Any) -> None:
    refused = sites.error_id(GOT, "Start-VMFailover", VMRecoverySnapshot=value)
    assert refused == (
        "CannotConvertArgumentNoMessage,Microsoft.HyperV.PowerShell.Commands.StartVMFailover"
    )
    assert sites.replication(GOT, VM)[0] == "Replicating"
