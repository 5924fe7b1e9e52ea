"""What pypsrp deserialises from real CLIXML becomes plain dicts with enums by name."""

from __future__ import annotations

from pypsrp.serializer import Serializer

from workers.hyperv.objects import error_from_record, output_object

# A VMReplication object as a Windows host serialises it: adapted properties, the enum with
# its .NET type, ToString (the name) and number.
REPLICATION_CLIXML = (
    '<Obj RefId="0"><TN RefId="0"><T>Microsoft.HyperV.PowerShell.VMReplication</T>'
    '<T>System.Object</T></TN><Props><S N="VMName">sql-01</S>'
    '<Obj RefId="1" N="State"><I32>4</I32><TN RefId="1">'
    "<T>Microsoft.HyperV.PowerShell.VMReplicationState</T><T>System.Enum</T>"
    "<T>System.ValueType</T><T>System.Object</T></TN><ToString>Replicating</ToString></Obj>"
    '<Obj RefId="2" N="IPAddresses"><TN RefId="2"><T>System.Collections.ArrayList</T>'
    "<T>System.Object</T></TN><LST><S>10.1.1.1</S><S>fe80::1</S></LST></Obj>"
    '<DT N="LastReplicationTime">2026-11-29T14:00:00Z</DT>'
    '<Obj RefId="3" N="Host"><TN RefId="3"><T>Microsoft.HyperV.PowerShell.VMHost</T>'
    '<T>System.Object</T></TN><Props><S N="Name">hv-got-1</S></Props></Obj>'
    '<I32 N="FrequencySec">300</I32></Props></Obj>'
)

ERROR_CLIXML = (
    '<Obj RefId="0"><TN RefId="0"><T>System.Management.Automation.ErrorRecord</T>'
    '<T>System.Object</T></TN><MS><Obj RefId="1" N="Exception"><TN RefId="1">'
    "<T>Microsoft.HyperV.PowerShell.VirtualizationException</T><T>System.Exception</T>"
    '<T>System.Object</T></TN><Props><S N="Message">Hyper-V was unable to find a virtual '
    'machine with name "sql-99".</S><I32 N="HResult">-2146233087</I32></Props></Obj>'
    '<S N="TargetObject">sql-99</S><S N="FullyQualifiedErrorId">InvalidParameter,'
    'Microsoft.HyperV.PowerShell.Commands.GetVM</S><Nil N="InvocationInfo" />'
    '<I32 N="ErrorCategory_Category">13</I32><S N="ErrorCategory_Activity">Get-VM</S>'
    '<S N="ErrorCategory_Reason">VirtualizationException</S>'
    '<S N="ErrorCategory_TargetName">sql-99</S><S N="ErrorCategory_TargetType">String</S>'
    '<S N="ErrorCategory_Message">ObjectNotFound: (sql-99:String) [Get-VM]</S>'
    '<B N="SerializeExtendedInfo">false</B></MS><ToString>Hyper-V was unable to find a '
    'virtual machine with name "sql-99".</ToString></Obj>'
)


def test_enum_becomes_its_name_and_nested_objects_become_dicts() -> None:
    obj = output_object(Serializer().deserialize(REPLICATION_CLIXML))
    assert obj["State"] == "Replicating"
    assert obj["VMName"] == "sql-01"
    assert obj["IPAddresses"] == ["10.1.1.1", "fe80::1"]
    assert obj["LastReplicationTime"] == "2026-11-29T14:00:00Z"
    assert obj["Host"] == {"Name": "hv-got-1"}
    assert obj["FrequencySec"] == 300


def test_bare_values_are_wrapped() -> None:
    assert output_object("hello") == {"Value": "hello"}
    assert output_object(3) == {"Value": 3}


def test_error_record_gives_message_id_category_target() -> None:
    record = Serializer().deserialize(ERROR_CLIXML)
    err = error_from_record(record)
    assert err.fully_qualified_error_id == (
        "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM"
    )
    assert err.message == 'Hyper-V was unable to find a virtual machine with name "sql-99".'
    assert err.category == "ObjectNotFound"
    assert err.target == "sql-99"


def test_error_from_plain_text() -> None:
    err = error_from_record("something broke")
    assert err.message == "something broke"
    assert err.fully_qualified_error_id == ""
