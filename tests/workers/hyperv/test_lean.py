"""The lean pipeline message is byte for byte the one pypsrp builds with its deep copies."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from pypsrp.complex_objects import Command, Pipeline
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
