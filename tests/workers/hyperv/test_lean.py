"""The lean pipeline message is byte for byte the one pypsrp builds with its deep copies."""

from __future__ import annotations

import queue
import xml.etree.ElementTree as ET
from typing import Any

from pypsrp import serializer
from pypsrp.complex_objects import Command, ComplexObject, Pipeline
from pypsrp.serializer import Serializer

from workers.hyperv import lean

Statements = list[list[tuple[str, dict[str, Any]]]]


def _pipeline(statements: Statements) -> Pipeline:
    commands = []
    for statement in statements:
        for name, parameters in statement:
            command = Command(
                cmd=name, protocol_version="2.3", is_script=False, use_local_scope=None
            )
            for key, value in parameters.items():
                command.args.append(_argument(key, value))
            commands.append(command)
        commands[-1].end_of_statement = True
    return Pipeline(is_nested=False, cmds=commands, history=None, redirect_err_to_out=False)


def _argument(name: str, value: Any) -> Any:
    from pypsrp.complex_objects import CommandParameter

    return CommandParameter(name=name, value=value)


def _wire(build: Any, statements: Statements) -> bytes:
    element = Serializer().serialize(build(statements))
    assert element is not None
    return ET.tostring(element, encoding="utf-8")


def _commands(pipeline: Pipeline) -> list[Any]:
    return list(pipeline.commands or [])


def test_one_statement_serialises_as_pypsrp_does_and_is_not_copied() -> None:
    statements: Statements = [
        [("Get-VM", {"Name": "sql-01"}), ("Start-VM", {"Passthru": True, "Names": ["a", "b"]})]
    ]
    lean.install()
    leaner = _wire(_pipeline, statements)
    pipeline = _pipeline(statements)
    assert lean._statements_without_copy(pipeline)[0][0] is _commands(pipeline)[0]
    original = lean._original(_pipeline(statements))
    assert [c.cmd for c in original[0]] == ["Get-VM", "Start-VM"]
    Pipeline._get_statements = lean._original  # type: ignore[method-assign]
    try:
        reference = _wire(_pipeline, statements)
    finally:
        Pipeline._get_statements = lean._statements_without_copy  # type: ignore[method-assign]
    assert leaner == reference
    assert b"sql-01" in leaner and b"Start-VM" in leaner


def test_several_statements_keep_pypsrps_copies() -> None:
    statements: Statements = [
        [("Get-VM", {"Name": "a"})],
        [("Get-VMNetworkAdapter", {"VMName": "a"})],
    ]
    pipeline = _pipeline(statements)
    result = lean._statements_without_copy(pipeline)
    assert [[c.cmd for c in s] for s in result] == [["Get-VM"], ["Get-VMNetworkAdapter"]]
    assert result[0][0] is not _commands(pipeline)[0]
    wire = _wire(_pipeline, statements)
    assert b"ExtraCmds" in wire and b"Get-VMNetworkAdapter" in wire


def _reply() -> tuple[str, str]:
    """CLIXML as a Hyper-V host sends it: nested objects, enums, lists, a repeated object (a
    <Ref>), escaped and plain strings, times, numbers, a GUID, a null and an error record."""
    import datetime
    import uuid

    from psrpcore.types import PSCryptoProvider, serialize

    from lab.objects import ErrorInfo, LabEnum, LabObject
    from lab.server.serialize import to_error_record, to_ps_value

    adapter = LabObject(
        ["Microsoft.HyperV.PowerShell.VMNetworkAdapter", "System.Object"],
        {"SwitchName": "corp-got", "IPAddresses": ["10.20.1.11", "fe80::1"], "Index": 7},
    )
    vm = LabObject(
        ["Microsoft.HyperV.PowerShell.VirtualMachine"],
        {
            "Id": uuid.UUID("ae2823b6-8d59-51cc-98fd-5ae9267e3dec"),
            "Name": "sql-01",
            "Notes": "line one\nline two\ttab _x0041_ and <angle> & amp",
            "State": LabEnum("Microsoft.HyperV.PowerShell.VMState", "Off", 3),
            "LastReplicationTime": datetime.datetime(2026, 11, 29, 14, 0, tzinfo=datetime.UTC),
            "Uptime": datetime.timedelta(minutes=5),
            "NetworkAdapters": [adapter, adapter],
            "MemoryStartup": 2**33,
            "Ratio": 0.25,
            "Missing": None,
            "IsClustered": False,
        },
        to_string="VirtualMachine (Name = 'sql-01')",
    )
    element = serialize(to_ps_value(vm), PSCryptoProvider())
    error = serialize(
        to_error_record(ErrorInfo("no such VM", "InvalidParameter,Get-VM", "ObjectNotFound")),
        PSCryptoProvider(),
    )
    return ET.tostring(element, encoding="unicode"), ET.tostring(error, encoding="unicode")


def _shape(value: Any, depth: int = 0) -> Any:
    """Everything a deserialised value holds, as comparable plain data."""
    assert depth < 40
    if isinstance(value, list | tuple):
        return [_shape(item, depth + 1) for item in value]
    if isinstance(value, queue.Queue):
        return ("Queue", _shape(list(value.queue), depth + 1))
    if isinstance(value, dict):
        return {key: _shape(item, depth + 1) for key, item in value.items()}
    if isinstance(value, ComplexObject):
        fields = {k: v for k, v in vars(value).items() if k != "_lean_xml"}
        return (type(value).__name__, _shape({**fields, "_xml": value._xml}, depth + 1))
    if hasattr(value, "__dict__"):
        return (type(value).__name__, _shape(vars(value), depth + 1))
    return value


def test_replies_read_the_same_without_writing_each_value_as_xml() -> None:
    lean.install()
    for text in _reply():
        leaner = Serializer().deserialize(text)
        patched = (Serializer.deserialize, Serializer._deserialize_string, serializer.ET)
        Serializer.deserialize = lean._original_deserialize  # type: ignore[method-assign]
        Serializer._deserialize_string = lean._original_deserialize_string  # type: ignore[method-assign]
        serializer.ET = ET
        try:
            reference = Serializer().deserialize(text)
        finally:
            Serializer.deserialize, Serializer._deserialize_string, serializer.ET = patched  # type: ignore[method-assign]
        assert _shape(leaner) == _shape(reference)
    vm = Serializer().deserialize(_reply()[0])
    nic = vm.adapted_properties["NetworkAdapters"][0]
    assert not isinstance(nic.__dict__["_lean_xml"], str)  # not written until read
    assert nic._xml.startswith("<Obj ") and "corp-got" in nic._xml
    notes = Serializer().deserialize(_reply()[0]).adapted_properties["Notes"]
    assert notes == "line one\nline two\ttab _x0041_ and <angle> & amp"


_COLLECTIONS = [
    # a hashtable, nested list, a generic list and dictionary, Deserialized. types
    '<Obj RefId="0"><TN RefId="0"><T>System.Collections.Hashtable</T><T>System.Object</T></TN>'
    '<DCT><En><S N="Key">a</S><I32 N="Value">1</I32></En>'
    '<En><S N="Key">b</S><Obj N="Value" RefId="1"><TN RefId="1"><T>System.Object[]</T>'
    '<T>System.Array</T><T>System.Object</T></TN><LST><S>x</S><I32>2</I32><Nil /></LST></Obj>'
    "</En></DCT></Obj>",
    '<Obj RefId="0"><TN RefId="0"><T>System.Collections.Generic.List`1[[System.String, '
    'mscorlib, Version=4.0.0.0]]</T><T>System.Object</T></TN><LST><S>p</S><S>q</S></LST></Obj>',
    '<Obj RefId="0"><TN RefId="0"><T>System.Collections.Generic.Dictionary`2[[System.String, '
    "mscorlib],[System.Int32, mscorlib]]</T><T>System.Object</T></TN><DCT><En>"
    '<S N="Key">k</S><I32 N="Value">7</I32></En></DCT></Obj>',
    '<Obj RefId="0"><TN RefId="0"><T>Deserialized.System.Collections.Queue</T></TN>'
    '<QUE><S>first</S><S>second</S></QUE></Obj>',
    '<Obj RefId="0"><TN RefId="0"><T>System.Collections.Stack</T></TN>'
    "<STK><I32>1</I32><I32>2</I32></STK></Obj>",
    # an object without type names, one of a type only its XML describes, and a reused TN
    '<Obj RefId="0"><MS><S N="Plain">v</S><Obj N="Bare" RefId="1"><Props><B N="Ok">true</B>'
    '</Props></Obj><Obj N="Custom" RefId="2"><TN RefId="0"><T>Vendor.Thing</T></TN>'
    '<ToString>thing</ToString><Props><S N="Name">n</S></Props></Obj><Obj N="Again" RefId="3">'
    '<TNRef RefId="0" /><ToString>thing 2</ToString></Obj><Ref N="Same" RefId="1" /></MS></Obj>',
    '<Obj RefId="0"><TN RefId="0"><T>System.Management.Automation.PSCustomObject</T>'
    '<T>System.Object</T></TN><MS><G N="Id">ae2823b6-8d59-51cc-98fd-5ae9267e3dec</G>'
    '<Obj N="List" RefId="1"><TN RefId="1"><T>System.Collections.ObjectModel.Collection`1'
    '[[System.Int32, mscorlib]]</T></TN><LST><I32>5</I32></LST></Obj></MS></Obj>',
    "<Unknown>kept as text</Unknown>",
]


def test_collections_and_unknown_types_read_the_same_as_pypsrp_reads_them() -> None:
    lean.install()
    assert "System.Collections.Hashtable" in lean._STRUCTURES  # pypsrp's table was read
    for text in _COLLECTIONS:
        leaner = Serializer().deserialize(ET.fromstring(text))
        patched = (Serializer.deserialize, Serializer._deserialize_string, serializer.ET)
        Serializer.deserialize = lean._original_deserialize  # type: ignore[method-assign]
        Serializer._deserialize_string = lean._original_deserialize_string  # type: ignore[method-assign]
        serializer.ET = ET
        try:
            reference = Serializer().deserialize(ET.fromstring(text))
        finally:
            Serializer.deserialize, Serializer._deserialize_string, serializer.ET = patched  # type: ignore[method-assign]
        assert _shape(leaner) == _shape(reference), text
    assert Serializer().deserialize(ET.fromstring(_COLLECTIONS[1])) == ["p", "q"]


def _create_pipeline(commands: list[tuple[str, dict[str, Any]]], script: bool = False) -> Any:
    from pypsrp.complex_objects import (
        ApartmentState,
        CommandParameter,
        HostInfo,
        RemoteStreamOptions,
    )
    from pypsrp.messages import CreatePipeline

    cmds = []
    for name, parameters in commands:
        command = Command(cmd=name, protocol_version="2.3", is_script=script, use_local_scope=None)
        for key, value in parameters.items():
            command.args.append(CommandParameter(name=key, value=value))
        cmds.append(command)
    cmds[-1].end_of_statement = True
    pipeline = Pipeline(is_nested=False, cmds=cmds, history=None, redirect_err_to_out=False)
    return CreatePipeline(
        True, ApartmentState(value=2), RemoteStreamOptions(value=15), False, HostInfo(),
        pipeline, False,
    )  # fmt: skip


def _pack(value: Any) -> bytes:
    from pypsrp.messages import Message

    zero = "00000000-0000-0000-0000-000000000000"
    return Message(2, zero, zero, value, Serializer()).pack()


def test_pipeline_messages_are_written_as_pypsrp_writes_them() -> None:
    import uuid

    lean.install()
    values: list[dict[str, Any]] = [
        {"Name": "sql-01"},
        {"Name": "under_score _x0041_ _X0041_ tab\tnew\nline \x7f \x85 \U0001f600 <&>"},
        {"Count": 3, "Big": 2**40, "Ratio": 0.25, "Enabled": False, "Force": True},
        {"Names": ["a", "b", ["nested", 1]], "Map": {"k": "v", "n": None}, "Empty": []},
        {"Id": uuid.UUID("ae2823b6-8d59-51cc-98fd-5ae9267e3dec"), "Raw": b"\x00\x01"},
        {"Nothing": None, "Upper": "only _X0041_ in upper case"},
    ]
    messages = [_create_pipeline([("Get-VM", v)]) for v in values]
    messages.append(_create_pipeline([("Get-VMSnapshot", values[0]), ("Start-VMFailover", {})]))
    messages.append(_create_pipeline([("param($VMName) Get-VM -Name $VMName", values[0])], True))
    for message in messages:
        leaner = _pack(message)
        patched = (Serializer.serialize, Serializer._serialize_string)
        Serializer.serialize = lean._original_serialize  # type: ignore[method-assign]
        Serializer._serialize_string = lean._original_serialize_string  # type: ignore[method-assign]
        try:
            reference = _pack(message)
        finally:
            Serializer.serialize, Serializer._serialize_string = patched  # type: ignore[method-assign]
        assert leaner == reference
    assert b"_x005F_x0041_" in _pack(messages[1])  # the escapes pypsrp writes are written
