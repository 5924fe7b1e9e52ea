"""Helpers for the lab domain tests (the example world on a frozen clock), and their tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.objects import CmdletError, Command, ErrorInfo, InvokeResult, LabEnum, LabObject
from lab.world import Lab

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "lab" / "topology.yaml"


def example_dict() -> dict[str, Any]:
    """The shared example topology as a dict, to tweak per test."""
    data: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    return data


def make_lab(data: dict[str, Any] | None = None) -> Lab:
    """A lab on a frozen clock: time moves only through lab.clock.advance / the admin API."""
    return Lab.from_topology(data or example_dict(), time_scale=0)


def call(lab: Lab, host: str, cmdlet: str, *positional: Any, **params: Any) -> InvokeResult:
    """Run one cmdlet; keyword params become named parameters (True for a switch)."""
    parameters: list[tuple[str | None, Any]] = [(None, p) for p in positional]
    parameters += [(name, value) for name, value in params.items()]
    return lab.invoke(host, [Command(cmdlet, parameters)])


def ok(lab: Lab, host: str, cmdlet: str, *positional: Any, **params: Any) -> list[Any]:
    """Run one cmdlet that must succeed without error records; returns its output."""
    result = call(lab, host, cmdlet, *positional, **params)
    assert result.errors == [], [e.message for e in result.errors]
    return result.output


def error_of(lab: Lab, host: str, cmdlet: str, *positional: Any, **params: Any) -> ErrorInfo:
    """Run one cmdlet that must fail; returns its (only) error, terminating or not."""
    try:
        result = call(lab, host, cmdlet, *positional, **params)
    except CmdletError as exc:
        return exc.info
    assert len(result.errors) == 1, result
    return result.errors[0]


def plain(obj: Any) -> Any:
    """A LabObject as nested dicts with enum values by name (what clients compare)."""
    if isinstance(obj, LabObject):
        return {k: plain(v) for k, v in obj.properties.items()}
    if isinstance(obj, LabEnum):
        return obj.name
    if isinstance(obj, list):
        return [plain(v) for v in obj]
    return obj


def rep(lab: Lab, host: str, vm: str) -> dict[str, Any]:
    """Get-VMReplication of ``vm`` on ``host`` as plain data."""
    (out,) = ok(lab, host, "Get-VMReplication", VMName=vm)
    result: dict[str, Any] = plain(out)
    return result


def vm(lab: Lab, host: str, name: str) -> dict[str, Any]:
    """Get-VM of ``name`` on ``host`` as plain data."""
    (out,) = ok(lab, host, "Get-VM", Name=name)
    result: dict[str, Any] = plain(out)
    return result


def ends(lab: Lab, name: str, primary: str, replica: str) -> tuple[str, str, str, str]:
    """(mode, state) of both ends: (primary mode, primary state, replica mode, replica state)."""
    p, r = rep(lab, primary, name), rep(lab, replica, name)
    return p["Mode"], p["State"], r["Mode"], r["State"]


def test_example_world_starts_in_steady_state() -> None:
    lab = make_lab()
    assert ends(lab, "sql-01", "hv-sto-1", "hv-got-1") == (
        "Primary",
        "Replicating",
        "Replica",
        "Replicating",
    )
    assert vm(lab, "hv-sto-1", "sql-01")["State"] == "Running"
    assert vm(lab, "hv-got-1", "sql-01")["State"] == "Off"


def test_error_of_returns_terminating_errors_too() -> None:
    lab = make_lab()
    assert error_of(lab, "hv-sto-1", "Get-Nothing").fully_qualified_error_id == (
        "CommandNotFoundException"
    )
    with pytest.raises(AssertionError):
        error_of(lab, "hv-sto-1", "Get-VM", Name="sql-01")
