"""Cmdlet output written as CLIXML by the lab is byte for byte what psrpcore writes."""

from __future__ import annotations

import datetime
import uuid
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psrpcore import ServerPipeline
from psrpcore.types import PSInvocationState, serialize
from psrpcore.types._serializer import _serialize_string

from lab.objects import Command, LabEnum, LabObject
from lab.server.clixml import _string, output_clixml
from lab.server.psrp import LabRunspacePool, complete, write_output_clixml
from lab.server.serialize import to_ps_value
from lab.world import Lab
from tests.lab.scenario import scenario_topology


def psrpcore_clixml(value: Any) -> bytes:
    """What the lab sent before: psrpcore's PSObjects, ElementTree, text."""
    element = serialize(to_ps_value(value), None)  # type: ignore[arg-type]  # no cipher
    return ET.tostring(element, encoding="utf-8", method="xml")


READS: list[tuple[str, str, list[tuple[str | None, Any]]]] = [
    ("hv-sto-1", "Get-VM", []),
    ("hv-got-1", "Get-VM", []),
    ("hv-sto-1", "Get-VMNetworkAdapter", [("All", True)]),
    ("hv-got-1", "Get-VMNetworkAdapter", [("All", True)]),
    ("hv-sto-1", "Get-VMReplication", []),
    ("hv-got-1", "Get-VMReplication", []),
    ("hv-got-1", "Measure-VMReplication", []),
    ("hv-got-1", "Get-VMSnapshot", [("VMName", "*"), ("SnapshotType", "Replica")]),
    ("hv-got-1", "Get-VMReplicationServer", []),
]


def test_every_object_the_example_world_outputs_is_written_as_psrpcore_writes_it() -> None:
    lab = Lab.from_topology(scenario_topology(), time_scale=0)
    written = 0
    for host, cmdlet, params in READS:
        result = lab.invoke(host, [Command(cmdlet, params)])
        assert result.output, (host, cmdlet)
        for value in result.output:
            ours = output_clixml(value)
            assert ours is not None, (cmdlet, value)
            assert ours == psrpcore_clixml(value), cmdlet
            written += 1
    assert written > 20


def test_a_running_vm_with_every_kind_of_value() -> None:
    lab = Lab.from_topology(scenario_topology(), time_scale=0)
    vm = lab.invoke("hv-sto-1", [Command("Get-VM", [])]).output[0]
    state = LabEnum("Microsoft.HyperV.PowerShell.VMState", "Running", 2)
    value = LabObject(
        ["Lab.Test", "Lab.Base"],
        {
            "Vm": vm,
            "Again": vm,  # the same object twice: written twice, not referred to
            "State": state,
            "StateToo": state,  # the same enum value again: a reference
            "Other": LabEnum("Microsoft.HyperV.PowerShell.VMState", "Off", 3),
            "Big": 2**40,
            "Negative": -(2**40),
            "Float": 1.5e-7,
            "When": datetime.datetime(2026, 12, 7, 1, 2, 3, 456789, tzinfo=datetime.UTC),
            "Naive": datetime.datetime(2026, 12, 7),
            "Span": datetime.timedelta(days=2, seconds=3661, microseconds=5),
            "Id": uuid.UUID(int=5),
            "Bytes": b"\x00\x01",
            "Dict": {"a": 1, 2: [state, None]},
            "EmptyDict": {},
            "Tuple": ("x", "y"),
            "Text": "a & <b> \"c\"\t_x0041_ \x07 😀 é\n",
            "Empty": "",
            "Nothing": None,
        },
        to_string="Test <&> object",
    )
    assert output_clixml(value) == psrpcore_clixml(value)


@pytest.mark.parametrize(
    "value",
    [
        None,  # psrpcore sends null output as an empty message
        LabObject(["X"], {"Name": 1, "name": 2}),  # psrpcore refuses the second one
        LabEnum("Lab.Kind", "_sunder_", 1),  # not a name an enum member can have
        LabObject(["X"], {"Odd": object()}),  # sent as its text by psrpcore
    ],
)
def test_values_psrpcore_must_write_are_left_to_it(value: Any) -> None:
    assert output_clixml(value) is None


_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.uuids(),
    st.timedeltas(),
    st.datetimes(timezones=st.sampled_from([None, datetime.UTC])),
    st.binary(max_size=6),
    st.builds(
        LabEnum,
        st.sampled_from(["Lab.A", "Lab.B", "Microsoft.HyperV.PowerShell.VMState"]),
        st.sampled_from(["Off", "Running", "Other"]),
        st.integers(min_value=0, max_value=3),
    ),
)
_NAMES = st.text(min_size=1, max_size=6)


def _objects(children: Any) -> Any:
    return st.builds(
        LabObject,
        st.lists(st.sampled_from(["Lab.A", "Lab.B", "System.Object", ""]), max_size=3),
        st.dictionaries(_NAMES, children, max_size=4),
        st.one_of(st.none(), st.text(max_size=8)),
    )


_VALUES = st.recursive(
    _LEAF,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.text(max_size=4), children, max_size=3),
        _objects(children),
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(_VALUES)
def test_any_output_value_is_written_as_psrpcore_writes_it(value: Any) -> None:
    ours = output_clixml(value)
    if ours is None:
        return
    try:
        reference = psrpcore_clixml(value)
    except Exception:  # psrpcore cannot write it at all: the lab must not either
        pytest.fail(f"written although psrpcore refuses it: {value!r}")
    assert ours == reference


def test_the_output_and_state_messages_are_the_ones_psrpcore_queues() -> None:
    lab = Lab.from_topology(scenario_topology(), time_scale=0)
    vm = lab.invoke("hv-sto-1", [Command("Get-VM", [])]).output[0]
    sent = []
    for direct in (False, True):
        pool = LabRunspacePool()
        pipe = ServerPipeline(pool, uuid.UUID(int=7))
        pipe._change_state(PSInvocationState.Running, emit=False)
        for _ in range(2):
            if direct:
                data = output_clixml(vm)
                assert data is not None
                write_output_clixml(pipe, data)
            else:
                pipe.write_output(to_ps_value(vm))
        if direct:
            complete(pipe)
        else:
            pipe.complete()
        assert pipe.state == PSInvocationState.Completed
        payloads = []
        while (payload := pool.data_to_send(500)) is not None:
            payloads.append((payload.data, payload.stream_type, payload.pipeline_id))
        sent.append(payloads)
    assert sent[0] == sent[1]
    assert len(sent[0]) > 4  # fragments of two objects and the state


@settings(max_examples=500, deadline=None)
@given(
    st.text(alphabet=st.characters(exclude_categories=()), max_size=10)
    | st.sampled_from(["_x", "a_X1", "\ud900", "\udc00x", "\x85"])
)
def test_strings_are_escaped_as_psrpcore_escapes_them(text: str) -> None:
    assert _string(text) == _serialize_string(text)
