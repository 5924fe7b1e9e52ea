"""The lab's own reading of CreatePipeline messages gives what psrpcore's reading gives."""

from __future__ import annotations

import re
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest
from psrpcore._pipeline import PowerShell as PipelineMetadata
from psrpcore.types import PSRPMessageType, deserialize
from pypsrp.powershell import RunspacePool

from lab.objects import Command
from lab.server import psrp
from lab.server.auth import Account
from lab.server.pipeline import plain_commands
from lab.server.service import LabServer
from tests.lab.clients import run, wsman_for
from tests.lab.fake_backend import FakeBackend
from workers.hyperv.connection import PsrpEndpoint
from workers.hyperv.psrp import PsrpRunner
from workflows.steps import HostRef


def psrpcore_commands(data: bytes) -> list[Command]:
    """The commands as the lab read them before: psrpcore's PSObjects, then its metadata."""
    message: Any = deserialize(ET.fromstring(data), None)  # type: ignore[arg-type]  # no cipher
    metadata = PipelineMetadata.FromPSObjectForRemoting(message)
    return [
        Command(
            str(cmd.command_text),
            [(None if n is None else str(n), psrp._plain(v)) for n, v in cmd.parameters],
            bool(cmd.is_script),
        )
        for cmd in metadata.commands
    ]


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """Every CreatePipeline message the lab's pools receive while the test runs."""
    messages: list[bytes] = []
    original = psrp.LabRunspacePool._process_message

    def record(self: psrp.LabRunspacePool, message: Any) -> Any:
        if message.message_type == PSRPMessageType.CreatePipeline:
            messages.append(bytes(message.data))
        return original(self, message)

    monkeypatch.setattr(psrp.LabRunspacePool, "_process_message", record)
    yield messages


def _client_messages(
    server: LabServer, captured: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> list[bytes]:
    endpoint = server.endpoints["hv-sto-1"]
    with RunspacePool(wsman_for(endpoint)) as pool:
        run(pool, "Get-VM", Name="mon-01")
        run(pool, "Echo-Param", Value="a & <b> \"c\" 'd' é")
        run(pool, "Echo-Param", Value="😀")
        run(pool, "Echo-Param", Value=300)
        run(pool, "Echo-Param", Value=-7)
        run(pool, "Echo-Param", Value=True)
        run(pool, "Echo-Param", Value=["a", 2])
        run(pool, "Echo-Param", Value="tab\there_x0041_")
        run(pool, "Echo-Param", Value=None)
    ref = HostRef(
        name="hv-sto-1",
        site="",
        url=endpoint.url,
        auth=endpoint.auth,
        username=endpoint.username,
        password_ref="env:FERRYMAN_PIPELINE_TEST_PASSWORD",
    )
    monkeypatch.setenv("FERRYMAN_PIPELINE_TEST_PASSWORD", endpoint.password)
    runner = PsrpRunner(PsrpEndpoint.from_ref(ref))
    try:
        runner.run("Echo-Param", {"Value": "mon-01", "Confirm": False}, switches=["AsTest"])
        runner.run_pipeline(
            [
                ("Get-VM", {"Name": "mon-01"}, ()),
                ("Echo-Param", {"Value": "x"}, ("EQ",)),
            ]
        )
    finally:
        runner.close()
    return list(captured)


def test_plain_messages_read_as_psrpcore_reads_them(
    fake_server: LabServer,
    fake_backend: FakeBackend,
    captured: list[bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    messages = _client_messages(fake_server, captured, monkeypatch)
    read = [plain_commands(m) for m in messages]
    for message, commands in zip(messages, read, strict=True):
        if commands is not None:
            assert commands == psrpcore_commands(message)
    # the workers' calls and plain values are read by the lab; a list and escaped strings
    # (``_x0041_`` stands for "A" in CLIXML, and a character beyond UTF-16's first plane is
    # written as two such escapes) go to psrpcore
    plain = [c for c in read if c is not None]
    names = [c[0].name for c in plain]
    assert names == ["Get-VM", *["Echo-Param"] * 6, "Get-VM"]
    assert plain[1][0].parameters == [("Value", "a & <b> \"c\" 'd' é")]
    assert [c.name for c in plain[-1]] == ["Get-VM", "Echo-Param"]
    assert len(plain) == len(messages) - 3
    # and what the domain received is what was sent, either way
    received = [commands[0].parameters for _host, commands in fake_backend.calls]
    for value in ("😀", "tab\there_x0041_", ["a", 2], -7):
        assert [("Value", value)] in received


# Each alteration of a plain message: (what it changes, pattern, replacement).
ALTERATIONS = [
    ("escaped string", r'<S N="V">vm-x</S>', '<S N="V">vm_x005F_x</S>'),
    ("empty string", r'<S N="V">vm-x</S>', '<S N="V" />'),
    ("boolean in capitals", r'<B N="V">false</B>', '<B N="V">True</B>'),
    ("integer", r'<S N="V">vm-x</S>', '<I32 N="V">2147483647</I32>'),
    ("integer too large", r'<S N="V">vm-x</S>', '<I32 N="V">2147483648</I32>'),
    ("long", r'<S N="V">vm-x</S>', '<I64 N="V">5</I64>'),
    ("positional argument", r'<S N="N">VMName</S>', '<Nil N="N" />'),
    ("unknown type reference", r'<TNRef RefId="\d+" />', '<TNRef RefId="99" />'),
    ("object reference", r'<S N="V">vm-x</S>', '<Ref N="V" RefId="1" />'),
    ("no commands", r'N="Cmds">(<TN.*?</TN>)<LST>.*</LST>', r'N="Cmds">\1<LST></LST>'),
    ("extra member", r'<B N="IsNested">false</B></MS></Obj>$', '<B N="IsNested">false</B>'
     '<S N="Other">x</S></MS></Obj>'),
    ("missing member", r'<B N="AddToHistory">false</B>', ""),
    ("merged error", r'(N="MergeError"><TNRef RefId="\d+" />)<ToString>None</ToString><I32>0',
     r"\1<ToString>Output</ToString><I32>1"),
    ("host data", r'<B N="_useRunspaceHost">true</B>', '<B N="_useRunspaceHost">false</B>'
     '<Obj N="_hostDefaultData"><MS /></Obj>'),
    ("statements", r'<Nil N="ExtraCmds" />', '<Obj N="ExtraCmds"><LST /></Obj>'),
    ("script", r'<B N="IsScript">false</B>', '<B N="IsScript">true</B>'),
]  # fmt: skip


def _plain_message(server: LabServer, captured: list[bytes]) -> bytes:
    endpoint = server.endpoints["hv-sto-1"]
    with RunspacePool(wsman_for(endpoint)) as pool:
        run(pool, "Echo-Param", VMName="vm-x", Confirm=False)
    return captured[-1]


def test_altered_messages_are_read_alike_or_left_to_psrpcore(
    fake_backend: FakeBackend, captured: list[bytes]
) -> None:
    account = Account("ferryman", secrets.token_urlsafe(12))
    with LabServer(fake_backend, account, auth="basic") as server:
        message = _plain_message(server, captured).decode()
    assert plain_commands(message.encode()) == psrpcore_commands(message.encode())
    outcomes = {}
    for label, pattern, replacement in ALTERATIONS:
        altered, count = re.subn(pattern, replacement, message, count=1, flags=re.S)
        assert count == 1, label
        commands = plain_commands(altered.encode())
        try:
            expected: list[Command] | str = psrpcore_commands(altered.encode())
        except Exception as exc:  # psrpcore refuses it: the lab must not read it either
            expected = f"refused: {type(exc).__name__}"
        if commands is not None:
            assert commands == expected, label
        outcomes[label] = "read" if commands is not None else "psrpcore"
    assert outcomes == {
        label: (
            "read"
            if label in ("empty string", "integer", "positional argument", "script")
            else "psrpcore"
        )
        for label, _, _ in ALTERATIONS
    }
