"""Replication-state executors on the fake world: effect, idempotent skip, and refusals."""

from __future__ import annotations

from dataclasses import replace

import pytest

from workers.errors import CmdletFailed, RemoteTransientError
from workers.executors import (
    InvalidReplicationState,
    LeftoverTestFailover,
    StepFailed,
    VmNotFound,
    run_step,
)
from workflows.inputs import StopTestFailover, undo_json
from workflows.steps import StepKind

from .conftest import MakeContext
from .helpers import spec, twice
from .world import World

K = StepKind


def _prepare(world: World, make_ctx: MakeContext) -> None:
    ctx = make_ctx()
    run_step(ctx, spec(K.SHUTDOWN_PRIMARY, "hv-sto-1"))
    run_step(ctx, spec(K.PREPARE_FAILOVER, "hv-sto-1"))


def test_shutdown_stops_the_primary_once_and_records_a_restart(
    world: World, make_ctx: MakeContext
) -> None:
    out = twice(world, make_ctx(), spec(K.SHUTDOWN_PRIMARY, "hv-sto-1"))
    assert world.vm("hv-sto-1", "sql-01").state == "Off"
    assert out.changed is True
    assert undo_json(out.undo) == {"action": "start_vm", "host": "hv-sto-1", "vm": "sql-01"}
    assert [c.cmdlet for c in world.mutations()] == ["Stop-VM"]


def test_shutdown_best_effort_turns_an_unreachable_primary_into_a_warning(
    world: World, make_ctx: MakeContext
) -> None:
    world.down.add("hv-sto-1")
    out = run_step(make_ctx("unplanned"), spec(K.SHUTDOWN_PRIMARY, "hv-sto-1", best_effort=True))
    assert out.changed is False
    assert "sql-01" in out.result["warning"] and "hv-sto-1" in out.result["warning"]
    with pytest.raises(RemoteTransientError):
        run_step(make_ctx(), spec(K.SHUTDOWN_PRIMARY, "hv-sto-1"))


def test_shutdown_of_a_vm_the_host_does_not_have_names_vm_and_host(make_ctx: MakeContext) -> None:
    with pytest.raises(VmNotFound, match=r"nope-01.*hv-sto-1"):
        run_step(make_ctx(), spec(K.SHUTDOWN_PRIMARY, "hv-sto-1", vm="nope-01"))


def test_prepare_refuses_a_running_primary_and_says_to_shut_it_down(
    make_ctx: MakeContext,
) -> None:
    with pytest.raises(InvalidReplicationState) as err:
        run_step(make_ctx(), spec(K.PREPARE_FAILOVER, "hv-sto-1"))
    message = str(err.value)
    for part in ("sql-01", "hv-sto-1", "Start-VMFailover -Prepare", "Replicating", "shut it down"):
        assert part in message


def test_prepare_then_failover_each_happen_once(world: World, make_ctx: MakeContext) -> None:
    ctx = make_ctx()
    shutdown = run_step(ctx, spec(K.SHUTDOWN_PRIMARY, "hv-sto-1"))
    prepared = twice(world, ctx, spec(K.PREPARE_FAILOVER, "hv-sto-1"))
    assert undo_json(prepared.undo) == {
        "action": "cancel_prepare",
        "host": "hv-sto-1",
        "vm": "sql-01",
    }
    assert world.vm("hv-sto-1", "sql-01").repl.state == "PreparedForFailover"  # type: ignore[union-attr]

    ctx.prior["shutdown_primary"] = shutdown.result
    failed_over = twice(world, ctx, spec(K.FAILOVER, "hv-got-1"))
    assert world.vm("hv-got-1", "sql-01").repl.state == "FailedOverWaitingCompletion"  # type: ignore[union-attr]
    assert undo_json(failed_over.undo) == {
        "action": "cancel_failover",
        "host": "hv-got-1",
        "vm": "sql-01",
        "restart_source": {"host": "hv-sto-1", "vm": "sql-01"},
    }
    assert [c.cmdlet for c in world.mutations("sql-01")] == [
        "Stop-VM",
        "Start-VMFailover",
        "Start-VMFailover",
    ]


def test_failover_in_a_state_that_allows_nothing_names_the_state(
    world: World, make_ctx: MakeContext
) -> None:
    world.vm("hv-got-1", "sql-01").repl.state = "WaitingForInitialReplication"  # type: ignore[union-attr]
    with pytest.raises(InvalidReplicationState) as err:
        run_step(make_ctx(), spec(K.FAILOVER, "hv-got-1"))
    assert "WaitingForInitialReplication" in str(err.value)
    assert "hv-got-1" in str(err.value) and "sql-01" in str(err.value)
    # the first start asked at once; the host refused, and the state read after says why
    assert [c.cmdlet for c in world.mutations()] == ["Start-VMFailover"]
    assert world.vm("hv-got-1", "sql-01").repl.state == "WaitingForInitialReplication"  # type: ignore[union-attr]


def test_a_refused_cmdlet_becomes_a_step_error_with_the_current_state(
    world: World, make_ctx: MakeContext
) -> None:
    world.faults[("hv-got-1", "Start-VMFailover")] = CmdletFailed(
        "Start-VMFailover failed on hv-got-1: disk busy", host="hv-got-1", cmdlet="Start-VMFailover"
    )
    with pytest.raises(StepFailed) as err:
        run_step(make_ctx(), spec(K.FAILOVER, "hv-got-1"))
    assert (err.value.cmdlet, err.value.host) == ("Start-VMFailover", "hv-got-1")
    message = str(err.value)
    assert "disk busy" in message and "replication Replicating" in message and "VM Off" in message


def test_failover_to_a_named_recovery_point_pipes_it(world: World, make_ctx: MakeContext) -> None:
    point = "sql-01 - Standard Replica - 12"
    out = twice(world, make_ctx(), spec(K.FAILOVER, "hv-got-1", recovery_point=point))
    assert out.result["recovery_point"] == point
    [call] = world.mutations("sql-01")
    assert call.cmdlet == "Start-VMFailover" and [o["Id"] for o in call.piped] == [
        "sql-01-point-12"
    ]
    assert "VMName" not in call.params  # the piped point names the VM
    replica = world.vm("hv-got-1", "sql-01")
    assert replica.repl is not None and replica.repl.state == "FailedOverWaitingCompletion"
    assert replica.failover_point == "sql-01-point-12"  # not the latest (13)


def test_a_recovery_point_pruned_before_the_failover_fails_nothing_over(
    world: World, make_ctx: MakeContext
) -> None:
    replica = world.vm("hv-got-1", "sql-01")
    point = "sql-01 - Standard Replica - 12"
    ctx = make_ctx()
    [wanted] = [p for p in ctx.hyperv("hv-got-1").get_recovery_points("sql-01") if p.name == point]
    replica.points.pop(0)  # merged away between the listing and the failover
    with pytest.raises(CmdletFailed, match="failed nothing over"):
        ctx.hyperv("hv-got-1").start_failover("sql-01", recovery_snapshot=wanted)
    assert replica.repl is not None and replica.repl.state == "Replicating"
    assert world.mutations("sql-01") == []  # Start-VMFailover was fed nothing, so never ran


def test_test_failover_creates_the_test_vm_once_and_keeps_its_cleanup(
    world: World, make_ctx: MakeContext
) -> None:
    ctx = make_ctx("test")
    out = run_step(ctx, spec(K.TEST_FAILOVER, "hv-got-1"))
    # the step's second start (a retry, a redelivery after a crash) finds its own test VM
    again = run_step(replace(ctx, attempt=2), spec(K.TEST_FAILOVER, "hv-got-1"))
    assert ("hv-got-1", "sql-01 - Test") in world.vms
    assert out.result == {"test_vm": "sql-01 - Test"} and again.changed is False
    assert again.result["existing"] is True
    # A redelivered task still reports what must be cleaned up.
    assert (
        again.undo
        == out.undo
        == StopTestFailover.model_validate(
            {
                "action": "stop_test_failover",
                "host": "hv-got-1",
                "vm": "sql-01",
            }
        )
    )
    assert len(world.mutations()) == 1


def test_a_test_vm_left_by_an_earlier_test_is_refused_not_adopted(
    world: World, make_ctx: MakeContext
) -> None:
    """On the step's first start, a test VM that already exists is not this run's: an earlier
    test failover nobody cleaned up. Adopting it would test an old copy and delete it later."""
    run_step(make_ctx("test"), spec(K.TEST_FAILOVER, "hv-got-1"))  # an earlier test run
    before = len(world.mutations())
    with pytest.raises(LeftoverTestFailover) as caught:
        run_step(make_ctx("test"), spec(K.TEST_FAILOVER, "hv-got-1"))  # a new run's first start
    message = str(caught.value)
    assert "'sql-01 - Test' already exists on hv-got-1" in message
    assert "ferryman runs cleanup" in message and "Stop-VMFailover -VMName sql-01" in message
    # the host refused the new test failover; nothing was stopped or deleted
    assert [(c.cmdlet, c.switches) for c in world.mutations()[before:]] == [
        ("Start-VMFailover", ("AsTest",))
    ]
    assert ("hv-got-1", "sql-01 - Test") in world.vms


def test_test_cleanup_deletes_the_test_vm_once(world: World, make_ctx: MakeContext) -> None:
    ctx = make_ctx("test")
    run_step(ctx, spec(K.TEST_FAILOVER, "hv-got-1"))
    out = twice(world, ctx, spec(K.TEST_CLEANUP, "hv-got-1"))
    assert out.result["deleted"] == "sql-01 - Test"
    assert ("hv-got-1", "sql-01 - Test") not in world.vms


def test_reverse_makes_the_replica_primary_once(world: World, make_ctx: MakeContext) -> None:
    _prepare(world, make_ctx)
    ctx = make_ctx()
    run_step(ctx, spec(K.FAILOVER, "hv-got-1"))
    out = twice(world, ctx, spec(K.REVERSE, "hv-got-1", replica_server="hv-sto-1"))
    assert out.undo is None
    assert out.result["replica_server"].startswith("hv-sto-1")
    assert world.vm("hv-got-1", "sql-01").repl.mode == "Primary"  # type: ignore[union-attr]
    assert world.vm("hv-sto-1", "sql-01").repl.mode == "Replica"  # type: ignore[union-attr]


def test_reverse_refuses_a_primary_replicating_elsewhere(make_ctx: MakeContext) -> None:
    with pytest.raises(InvalidReplicationState, match="already replicates to hv-got-1"):
        run_step(make_ctx(), spec(K.REVERSE, "hv-sto-1", replica_server="hv-sto-2"))


def test_reverse_before_failover_says_to_fail_over_first(make_ctx: MakeContext) -> None:
    with pytest.raises(InvalidReplicationState, match="run the failover"):
        run_step(make_ctx(), spec(K.REVERSE, "hv-got-1"))


def test_commit_then_reverse_to_then_initial_replication(
    world: World, make_ctx: MakeContext
) -> None:
    ctx = make_ctx("unplanned")
    run_step(ctx, spec(K.FAILOVER, "hv-got-1"))
    twice(world, ctx, spec(K.COMMIT, "hv-got-1"))
    assert world.vm("hv-got-1", "sql-01").repl.state == "FailedOver"  # type: ignore[union-attr]
    as_replica = twice(world, ctx, spec(K.SET_AS_REPLICA, "hv-sto-1"))
    assert as_replica.result == {"mode": "Replica", "shut_down": True}  # it was running
    twice(world, ctx, spec(K.REVERSE_TO, "hv-got-1", replica_server="hv-sto-1"))
    out = twice(world, ctx, spec(K.START_INITIAL_REPLICATION, "hv-got-1"))
    assert out.result == {"state": "Replicating"}
    new_primary = world.vm("hv-got-1", "sql-01").repl
    assert new_primary is not None
    assert (new_primary.mode, new_primary.state) == ("Primary", "Replicating")
    assert world.vm("hv-sto-1", "sql-01").repl.mode == "Replica"  # type: ignore[union-attr]


def test_reverse_to_needs_the_replica_server(make_ctx: MakeContext) -> None:
    with pytest.raises(Exception, match="replica_server"):
        run_step(make_ctx(), spec(K.REVERSE_TO, "hv-got-1"))


def test_cancel_failover_turns_the_vm_off_and_cancels_once(
    world: World, make_ctx: MakeContext
) -> None:
    ctx = make_ctx("unplanned")
    run_step(ctx, spec(K.FAILOVER, "hv-got-1"))
    run_step(ctx, spec(K.START_VM, "hv-got-1"))
    twice(world, ctx, spec(K.CANCEL_FAILOVER, "hv-got-1"))
    replica = world.vm("hv-got-1", "sql-01")
    assert replica.state == "Off" and replica.repl.state == "Replicating"  # type: ignore[union-attr]


def test_cancel_after_commit_says_to_fail_back(world: World, make_ctx: MakeContext) -> None:
    ctx = make_ctx("unplanned")
    run_step(ctx, spec(K.FAILOVER, "hv-got-1"))
    run_step(ctx, spec(K.COMMIT, "hv-got-1"))
    with pytest.raises(InvalidReplicationState, match="fail back"):
        run_step(ctx, spec(K.CANCEL_FAILOVER, "hv-got-1"))


def test_a_vm_that_is_not_replicated_is_reported_as_such(
    world: World, make_ctx: MakeContext
) -> None:
    world.vm("hv-got-1", "sql-01").repl = None
    with pytest.raises(InvalidReplicationState, match="not replicated"):
        run_step(make_ctx(), spec(K.FAILOVER, "hv-got-1"))
