"""compensate(): undo records put things back, and compensating twice changes nothing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from workers.executors import compensate, run_step
from workers.executors.compensation import outcome_of
from workers.powershell import PSResult
from workflows.inputs import CancelFailover, InvalidStepInput, SourceToRestart, UndoRecord
from workflows.steps import StepKind, StepSpec

from .conftest import MakeContext
from .helpers import spec
from .world import World

K = StepKind


def _compensate_twice(world: World, ctx: Any, undo: UndoRecord) -> None:
    compensate(ctx, undo)
    before = len(world.mutations())
    compensate(ctx, undo)
    assert world.mutations()[before:] == []


def test_a_test_failover_is_undone_by_deleting_the_test_vm(
    world: World, make_ctx: MakeContext
) -> None:
    ctx = make_ctx("test")
    undo = run_step(ctx, spec(K.TEST_FAILOVER, "hv-got-1")).undo
    run_step(ctx, spec(K.START_VM, "hv-got-1"))
    assert undo is not None
    _compensate_twice(world, ctx, undo)
    assert ("hv-got-1", "sql-01 - Test") not in world.vms


def test_a_planned_failover_is_undone_in_reverse_order(world: World, make_ctx: MakeContext) -> None:
    ctx = make_ctx("planned")
    undos = []
    for kind, host, params in [
        (K.SHUTDOWN_PRIMARY, "hv-sto-1", {}),
        (K.PREPARE_FAILOVER, "hv-sto-1", {}),
        (K.FAILOVER, "hv-got-1", {}),
        (K.CONNECT_NETWORK, "hv-got-1", {"switch": "corp-got"}),
        (K.START_VM, "hv-got-1", {}),
    ]:
        out = run_step(ctx, spec(kind, host, **params))
        ctx.prior[kind.value] = out.result
        undos.append(out.undo)
    assert all(undos)
    for undo in reversed(undos):
        assert undo is not None
        _compensate_twice(world, ctx, undo)
    primary, replica = world.vm("hv-sto-1", "sql-01"), world.vm("hv-got-1", "sql-01")
    assert primary.state == "Running" and primary.repl.state == "Replicating"  # type: ignore[union-attr]
    assert replica.state == "Off" and replica.repl.state == "Replicating"  # type: ignore[union-attr]
    assert replica.switches == [None]


def test_cancel_failover_restarts_the_source_it_shut_down(
    world: World, make_ctx: MakeContext
) -> None:
    ctx = make_ctx("unplanned")
    shutdown = run_step(ctx, spec(K.SHUTDOWN_PRIMARY, "hv-sto-1", best_effort=True))
    ctx.prior["shutdown_primary"] = shutdown.result
    undo = run_step(ctx, spec(K.FAILOVER, "hv-got-1")).undo
    assert isinstance(undo, CancelFailover)
    assert undo.restart_source == SourceToRestart(host="hv-sto-1", vm="sql-01")
    out = outcome_of(ctx, undo)
    assert out.result["restarted_source"] is True
    assert world.vm("hv-sto-1", "sql-01").state == "Running"
    assert world.vm("hv-got-1", "sql-01").repl.state == "Replicating"  # type: ignore[union-attr]


def test_an_undo_script_runs_with_the_actions_parameters(
    world: World, make_ctx: MakeContext
) -> None:
    seen: list[Mapping[str, Any]] = []
    world.scripts["do"] = lambda p: PSResult()

    def undo_script(params: Mapping[str, Any]) -> PSResult:
        seen.append(params)
        return PSResult()

    world.scripts["undo"] = undo_script
    step = spec(K.SCRIPT, "vmm-sto", vm=None, script="do", parameters={"Mode": "x"}, undo="undo")
    undo = run_step(make_ctx(), step).undo
    assert undo is not None
    compensate(make_ctx(), undo)
    assert seen == [{"Mode": "x"}]


def test_compensate_step_runs_the_undo_in_its_params(world: World, make_ctx: MakeContext) -> None:
    ctx = make_ctx("test")
    undo = run_step(ctx, spec(K.TEST_FAILOVER, "hv-got-1")).undo
    params = {"undo": undo, "of": "g1/sql-01/test_failover", "kind": "test_failover"}
    out = run_step(ctx, StepSpec(key="undo-1", kind=K.COMPENSATE, params=params))
    assert out.changed is True
    assert ("hv-got-1", "sql-01 - Test") not in world.vms


def test_an_unknown_undo_action_is_refused(make_ctx: MakeContext) -> None:
    with pytest.raises(InvalidStepInput, match="teleport"):
        compensate(make_ctx(), {"action": "teleport"})
