"""The fake world's pipelines bind recovery points as the lab and a real host do."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from workers.errors import CmdletFailed
from workers.hyperv.hyperv import HyperVHost, escape_wildcards

from .world import FakeRunner, Point, World


def _point_pipeline(
    name: str, *switches: str
) -> list[tuple[str, Mapping[str, Any], Sequence[str]]]:
    return [
        ("Get-VMSnapshot", {"VMName": "sql-01", "Name": name, "SnapshotType": "Replica"}, ()),
        ("Start-VMFailover", {"Confirm": False}, (*switches, "Passthru")),
    ]


def test_a_snapshot_sent_as_a_parameter_value_does_not_bind(world: World) -> None:
    runner = FakeRunner(world, "hv-got-1")
    bag = {"Id": "sql-01-point-12", "Name": "sql-01 - Standard Replica - 12", "VMName": "sql-01"}
    with pytest.raises(CmdletFailed, match="Cannot bind parameter 'VMRecoverySnapshot'") as info:
        runner.run("Start-VMFailover", {"VMRecoverySnapshot": bag, "Confirm": False})
    assert info.value.fully_qualified_error_id.startswith("CannotConvertArgumentNoMessage,")
    replica = world.vm("hv-got-1", "sql-01")
    assert replica.repl is not None and replica.repl.state == "Replicating"


def test_a_piped_snapshot_is_the_test_failovers_recovery_point(world: World) -> None:
    runner = FakeRunner(world, "hv-got-1")
    result = runner.run_pipeline(_point_pipeline("sql-01 - Standard Replica - 12", "AsTest"))
    assert [o["Name"] for o in result.output] == ["sql-01 - Test"]
    assert world.vm("hv-got-1", "sql-01 - Test").failover_point == "sql-01-point-12"
    [call] = world.mutations("sql-01")
    assert call.piped[0]["Id"] == "sql-01-point-12" and call.params == {"Confirm": False}


def test_cancelling_a_failover_forgets_its_recovery_point(world: World) -> None:
    host = HyperVHost(FakeRunner(world, "hv-got-1"), "hv-got-1")
    host.start_failover("sql-01", recovery_snapshot="sql-01-point-12")
    replica = world.vm("hv-got-1", "sql-01")
    assert replica.failover_point == "sql-01-point-12"
    host.stop_failover("sql-01")
    assert replica.failover_point is None
    assert replica.repl is not None and replica.repl.state == "Replicating"


def test_wildcard_characters_in_a_point_name_match_only_that_point(world: World) -> None:
    replica = world.vm("hv-got-1", "sql-01")
    replica.points.insert(0, Point("p-keep", "nightly [keep] *", "2026-11-28T23:00:00Z"))
    host = HyperVHost(FakeRunner(world, "hv-got-1"), "hv-got-1")
    host.start_failover("sql-01", recovery_snapshot="nightly [keep] *")
    assert replica.failover_point == "p-keep"
    # Unescaped, the same text is a pattern that matches none of the points' names.
    unescaped = FakeRunner(world, "hv-got-1").run(
        "Get-VMSnapshot", {"VMName": "sql-01", "Name": "nightly [keep] *"}
    )
    escaped = FakeRunner(world, "hv-got-1").run(
        "Get-VMSnapshot", {"VMName": "sql-01", "Name": escape_wildcards("nightly [keep] *")}
    )
    assert unescaped.output == [] and [o["Id"] for o in escaped.output] == ["p-keep"]


def test_a_command_fed_nothing_does_not_run(world: World) -> None:
    result = FakeRunner(world, "hv-got-1").run_pipeline(_point_pipeline("no such point"))
    assert result.output == [] and not result.errors
    assert [c.cmdlet for c in world.calls] == ["Get-VMSnapshot"]


def test_piping_a_vm_into_start_vmfailover_does_not_bind(world: World) -> None:
    commands: list[tuple[str, Mapping[str, Any], Sequence[str]]] = [
        ("Get-VM", {"Name": "sql-01"}, ()),
        ("Start-VMFailover", {"Confirm": False}, ()),
    ]
    with pytest.raises(CmdletFailed, match="cannot be bound"):
        FakeRunner(world, "hv-got-1").run_pipeline(commands)
    replica = world.vm("hv-got-1", "sql-01")
    assert replica.repl is not None and replica.repl.state == "Replicating"


def test_an_empty_pipeline_is_refused(world: World) -> None:
    with pytest.raises(ValueError, match="at least one command"):
        FakeRunner(world, "hv-got-1").run_pipeline([])
