"""Failover cmdlets: Start-VMFailover (-Prepare, -AsTest, -VMRecoverySnapshot),
Stop-VMFailover and Complete-VMFailover. See :mod:`lab.hyperv.replication` for the table."""

from __future__ import annotations

from typing import Any

from lab.hyperv import errors
from lab.hyperv.cmdlets import ASJOB, PASSTHRU, VM_PARAMS, vm_sets
from lab.hyperv.context import Cmdlet, Context, prop
from lab.hyperv.enums import ReplicationMode, ReplicationState, VMState
from lab.hyperv.params import Param, pset
from lab.hyperv.params import Signature as Sig
from lab.hyperv.replication import copy_vm, state_error, unreachable
from lab.hyperv.shapes import SNAPSHOT_TYPES, vm_object
from lab.hyperv.state import VM, RecoveryPoint
from lab.objects import LabObject

RS = ReplicationState
_FAILOVER_FROM = (RS.Replicating, RS.Resynchronizing, RS.Suspended)
TEST_SUFFIX = " - Test"


# ----------------------------------------------------------------------------- Start-VMFailover
def start_failover(ctx: Context) -> list[Any]:
    """Start-VMFailover [-Prepare | -AsTest] [-VMRecoverySnapshot].

    A recovery point comes as ``-VMRecoverySnapshot`` or as pipeline input
    (``Get-VMSnapshot -VMName X -Name P -SnapshotType Replica | Start-VMFailover``, the form
    a remote client can use, since it cannot send a live snapshot object back). Each piped
    snapshot is one failover, as each pipeline object is one ``ProcessRecord`` call.
    """
    targets: list[tuple[VM, RecoveryPoint | None]] = []
    snapshots = [o for o in ctx.input if _is_snapshot(o)]
    if ctx.bound.has("VMRecoverySnapshot"):
        snapshots.insert(0, ctx.bound.get("VMRecoverySnapshot"))
    for snap in snapshots:
        found = _snapshot_target(ctx, snap)
        if found is not None:
            targets.append(found)
    if not snapshots:
        targets = [(vm, None) for vm in ctx.vms()]
    out = []
    for vm, point in targets:
        if ctx.bound.switch("Prepare"):
            result = _prepare(ctx, vm)
        elif ctx.bound.switch("AsTest"):
            result = _test(ctx, vm, point)
        else:
            result = _failover(ctx, vm, point)
        if result is not None and ctx.bound.switch("Passthru"):
            out.append(vm_object(ctx.world, result))
    return out


def _is_snapshot(obj: Any) -> bool:
    return isinstance(obj, LabObject) and SNAPSHOT_TYPES[0] in obj.type_names


def _snapshot_target(ctx: Context, snap: LabObject) -> tuple[VM, RecoveryPoint] | None:
    """The VM and recovery point a (live) snapshot object stands for on this host."""
    vm = ctx.vm_from_object(snap)
    wanted = str(prop(snap, "Id") or "").lower()
    if vm is not None:
        for point in ctx.world.recovery_points(vm):
            if str(point.id).lower() == wanted:
                return vm, point
    ctx.fail(
        errors.ErrorInfo(
            message="Hyper-V was unable to find the recovery point given in "
            "-VMRecoverySnapshot (merged or pruned since it was read?). Read the points again "
            "with Get-VMSnapshot -SnapshotType Replica.",
            fully_qualified_error_id=f"InvalidParameter,{errors.cmdlet_class(ctx.cmdlet)}",
            category="InvalidArgument",
            target_object=None if vm is None else vm.name,
        ),
        None if vm is None else vm.name,
    )
    return None


def _prepare(ctx: Context, vm: VM) -> VM | None:
    rep = vm.replication
    if vm.mode is not ReplicationMode.Primary or rep is None:
        state_error(
            ctx,
            vm,
            "failed to prepare for failover: -Prepare runs on the primary "
            f"virtual machine; this one is {vm.mode.label}.",
        )
        return None
    if rep.primary_state is not RS.Replicating:
        state_error(
            ctx,
            vm,
            "failed to prepare for failover: replication must be Replicating, "
            f"not {rep.primary_state.name}.",
        )
        return None
    if vm.state is not VMState.Off:
        state_error(
            ctx, vm, "failed to prepare for failover: turn the virtual machine off first (Stop-VM)."
        )
        return None
    if rep.replica_host in ctx.world.down or rep.broken or rep.replica_state is not RS.Replicating:
        ctx.fail(unreachable(ctx, vm, rep.replica_host), vm.name)
        return None
    # Preparing sends the changes not yet replicated: the replica is now fully up to date.
    now = ctx.world.clock.now()
    rep.last_replication = now
    rep.count += 1
    rep.primary_state = RS.PreparedForFailover
    ctx.done(vm.name)
    return vm


def _replica_problem(vm: VM, action: str) -> str | None:
    rep = vm.replication
    if vm.mode is ReplicationMode.Primary:
        return (
            f"failed to {action}: this is the primary virtual machine; run Start-VMFailover "
            "on the Replica server (on the primary, only -Prepare is allowed)."
        )
    if vm.mode is not ReplicationMode.Replica or rep is None:
        return f"failed to {action}: it is not a Replica virtual machine."
    if rep.replica_state not in _FAILOVER_FROM:
        return (
            f"failed to {action}: replication is {rep.replica_state.name}; it must be "
            "Replicating, Resynchronizing or Suspended."
        )
    if rep.last_replication is None:
        return (
            f"failed to {action}: no replication has completed yet, so there is no recovery point."
        )
    return None


def _test(ctx: Context, vm: VM, point: RecoveryPoint | None) -> VM | None:
    problem = _replica_problem(vm, "start test failover")
    if problem is None and vm.replication_state is RS.Resynchronizing:
        problem = "failed to start test failover: replication is resynchronizing."
    if problem is None and vm.test_vm is not None:
        problem = (
            f"failed to start test failover: the test virtual machine '{vm.test_vm.name}' "
            "already exists. Stop the test failover (Stop-VMFailover) first."
        )
    if problem:
        state_error(ctx, vm, problem)
        return None
    test = copy_vm(vm, vm.host, vm.name + TEST_SUFFIX)
    test.test_of = vm
    test.failover_point = point
    vm.test_vm = test
    ctx.world.add(test)
    ctx.done(vm.name)
    return test


def _failover(ctx: Context, vm: VM, point: RecoveryPoint | None) -> VM | None:
    problem = _replica_problem(vm, "fail over")
    if problem is None and vm.state is not VMState.Off:
        problem = "failed to fail over: turn the virtual machine off first."
    if problem is None and vm.test_vm is not None:
        problem = (
            f"failed to fail over: a test failover is running ('{vm.test_vm.name}'). "
            "Stop it with Stop-VMFailover first."
        )
    if problem:
        state_error(ctx, vm, problem)
        return None
    rep = vm.replication
    assert rep is not None
    rep.replica_state = RS.FailedOverWaitingCompletion
    vm.failover_point = point
    ctx.done(vm.name)
    return vm


_FAILOVER_PARAMS = (
    *VM_PARAMS,
    Param("Prepare", "switch"),
    Param("AsTest", "switch"),
    # A live VMSnapshot only: a hashtable, a string or a client's deserialised copy fails to
    # convert, as on a real host.
    Param("VMRecoverySnapshot", "object", accepts=SNAPSHOT_TYPES[0]),
    PASSTHRU,
    ASJOB,
)
START_FAILOVER = Cmdlet(
    Sig(
        "Start-VMFailover",
        _FAILOVER_PARAMS,
        (
            *vm_sets("VMName", (), ("Prepare", "Passthru", "AsJob")),
            *vm_sets("VMName_Test", ("AsTest",), ("Passthru", "AsJob")),
            pset("VMSnapshot", ("VMRecoverySnapshot",), ("Passthru", "AsJob")),
            pset("VMSnapshot_Test", ("VMRecoverySnapshot", "AsTest"), ("Passthru", "AsJob")),
        ),
        ("VMName",),
        "VM",
        pipeline_types=((SNAPSHOT_TYPES[0], "VMRecoverySnapshot"),),
    ),
    start_failover,
    mutating=True,
)


# ----------------------------------------------------------------------------- Stop/Complete
def stop_failover(ctx: Context) -> list[Any]:
    """Stop-VMFailover: delete the test VM, or cancel a failover / a prepared failover."""
    out = []
    for vm in ctx.vms():
        base = vm.test_of or vm
        rep = base.replication
        if base.test_vm is not None:
            ctx.world.remove(base.test_vm)
            base.test_vm = None
            ctx.done(base.name)
        elif vm.test_of is not None:
            ctx.world.remove(vm)
            ctx.done(base.name)
        elif (
            rep is not None
            and vm.mode is ReplicationMode.Replica
            and (rep.replica_state is RS.FailedOverWaitingCompletion)
        ):
            if vm.state is not VMState.Off:
                state_error(
                    ctx,
                    vm,
                    "failed to cancel the failover: turn the virtual machine off first (Stop-VM).",
                )
                continue
            rep.replica_state = RS.Replicating
            vm.failover_point = None
            ctx.done(vm.name)
        elif (
            rep is not None
            and vm.mode is ReplicationMode.Primary
            and (rep.primary_state is RS.PreparedForFailover)
        ):
            rep.primary_state = RS.Replicating
            ctx.done(vm.name)
        else:
            state_error(
                ctx,
                vm,
                "failed to stop failover: there is no failover or test "
                f"failover to stop (replication is {vm.replication_state.name}).",
            )
            continue
        if ctx.bound.switch("Passthru"):
            out.append(vm_object(ctx.world, base))
    return out


def complete_failover(ctx: Context) -> list[Any]:
    """Complete-VMFailover: commit an (unplanned) failover; irreversible."""
    out = []
    for vm in ctx.vms():
        rep = vm.replication
        if (
            rep is None
            or vm.mode is not ReplicationMode.Replica
            or (rep.replica_state is not RS.FailedOverWaitingCompletion)
        ):
            state_error(
                ctx,
                vm,
                "failed to complete failover: it must be a Replica in "
                f"FailedOverWaitingCompletion, not {vm.replication_state.name}.",
            )
            continue
        rep.replica_state = RS.FailedOver
        # The old primary can no longer replicate into a committed replica.
        rep.broken = True
        rep.hourly.clear()
        ctx.done(vm.name)
        if ctx.bound.switch("Passthru"):
            out.append(vm_object(ctx.world, vm))
    return out


SIMPLE_SETS = vm_sets("VMName", (), ("Passthru", "AsJob"))
STOP_FAILOVER = Cmdlet(
    Sig("Stop-VMFailover", (*VM_PARAMS, PASSTHRU, ASJOB), SIMPLE_SETS, ("VMName",), "VM"),
    stop_failover,
    mutating=True,
)
COMPLETE_FAILOVER = Cmdlet(
    Sig("Complete-VMFailover", (*VM_PARAMS, PASSTHRU, ASJOB), SIMPLE_SETS, ("VMName",), "VM"),
    complete_failover,
    mutating=True,
)


CMDLETS = (START_FAILOVER, STOP_FAILOVER, COMPLETE_FAILOVER)
