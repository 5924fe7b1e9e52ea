"""Lab objects to CLIXML: the shape pypsrp deserialises from a real Hyper-V host."""

from __future__ import annotations

import datetime
import uuid
import xml.etree.ElementTree as ET

from psrpcore.types import PSCryptoProvider, serialize
from pypsrp.serializer import Serializer

from lab.objects import ErrorInfo, LabEnum, LabObject
from lab.server.serialize import to_error_record, to_ps_value


def roundtrip(value: object) -> object:
    """Serialise with psrpcore (server side), deserialise with pypsrp (client side)."""
    element = serialize(to_ps_value(value), PSCryptoProvider())
    return Serializer().deserialize(ET.tostring(element, encoding="unicode"))


def test_nested_objects_enums_and_primitives() -> None:
    vm_id = uuid.UUID("ae2823b6-8d59-51cc-98fd-5ae9267e3dec")
    when = datetime.datetime(2026, 11, 29, 14, 0, tzinfo=datetime.UTC)
    adapter = LabObject(
        ["Microsoft.HyperV.PowerShell.VMNetworkAdapter", "System.Object"],
        {"SwitchName": "corp-got", "IPAddresses": ["10.20.1.11"]},
    )
    vm = LabObject(
        ["Microsoft.HyperV.PowerShell.VirtualMachine"],
        {
            "Id": vm_id,
            "State": LabEnum("Microsoft.HyperV.PowerShell.VMState", "Off", 3),
            "Mode": LabEnum("Microsoft.HyperV.PowerShell.VMReplicationMode", "Replica", 2),
            "LastReplicationTime": when,
            "Uptime": datetime.timedelta(minutes=5),
            "NetworkAdapters": [adapter],
            "Notes": None,
            "IsClustered": False,
        },
        to_string="VirtualMachine (Name = 'sql-01')",
    )
    got: object = roundtrip(vm)
    props = got.adapted_properties  # type: ignore[attr-defined]
    assert got.types == ["Microsoft.HyperV.PowerShell.VirtualMachine", "System.Object"]  # type: ignore[attr-defined]
    assert str(got) == "VirtualMachine (Name = 'sql-01')"
    assert str(props["State"]) == "Off"
    assert props["State"].property_sets == [3]
    assert str(props["Mode"]) == "Replica"
    assert props["Id"] == vm_id
    assert props["LastReplicationTime"].startswith("2026-11-29T14:00:00")
    assert props["Notes"] is None and props["IsClustered"] is False
    (nic,) = props["NetworkAdapters"]
    assert nic.types == ["Microsoft.HyperV.PowerShell.VMNetworkAdapter", "System.Object"]
    assert nic.adapted_properties["IPAddresses"] == ["10.20.1.11"]


def test_error_record_carries_id_category_reason_and_target() -> None:
    info = ErrorInfo(
        "no such VM",
        "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM",
        category="InvalidArgument",
        target_object="nope",
    )
    record = to_error_record(info, activity="Get-VM")
    assert record.FullyQualifiedErrorId == info.fully_qualified_error_id
    assert record.CategoryInfo.Category.name == "InvalidArgument"
    assert record.CategoryInfo.Activity == "Get-VM"
    assert record.CategoryInfo.Reason == "VirtualizationException"
    assert record.TargetObject == "nope"
    assert str(record) == "no such VM"


def test_unknown_category_falls_back_to_not_specified() -> None:
    record = to_error_record(ErrorInfo("x", "Id", category="NoSuchCategory"))
    assert record.CategoryInfo.Category.name == "NotSpecified"
