"""Failover cmdlets: Start/Stop/Complete-VMFailover, Set-VMReplication (-Reverse, -AsReplica,
settings) and Remove-VMReplication. See :mod:`lab.hyperv.replication` for the state table."""

from __future__ import annotations

from typing import Any

from lab.hyperv import errors
from lab.hyperv.cmdlets import ASJOB, PASSTHRU, VM_PARAMS, vm_sets
from lab.hyperv.context import Cmdlet, Context, prop
from lab.hyperv.enums import ReplicationMode, ReplicationState, VMState
from lab.hyperv.params import Param, pset
from lab.hyperv.params import Signature as Sig
from lab.hyperv.replication import (
    _SETTING_NAMES,
    _SETTINGS,
    _apply_settings,
    _copy_vm,
    _host_named,
    _partner,
    _state_error,
    _unreachable,
)
from lab.hyperv.shapes import replication_object, vm_object
from lab.hyperv.state import VM, RecoveryPoint, Replication

RS = ReplicationState
_FAILOVER_FROM = (RS.Replicating, RS.Resynchronizing, RS.Suspended)
TEST_SUFFIX = " - Test"


# ----------------------------------------------------------------------------- Start-VMFailover
def start_failover(ctx: Context) -> list[Any]:
    """Start-VMFailover [-Prepare | -AsTest] [-VMRecoverySnapshot]."""
    point = None
    vms: list[VM]
    if ctx.bound.has("VMRecoverySnapshot"):
        found = _snapshot_target(ctx)
        if found is None:
            return []
        vm, point = found
        vms = [vm]
    else:
        vms = ctx.vms()
    out = []
    for vm in vms:
        if ctx.bound.switch("Prepare"):
            result = _prepare(ctx, vm)
        elif ctx.bound.switch("AsTest"):
            result = _test(ctx, vm, point)
        else:
            result = _failover(ctx, vm, point)
        if result is not None and ctx.bound.switch("Passthru"):
            out.append(vm_object(ctx.world, result))
    return out


def _snapshot_target(ctx: Context) -> tuple[VM, RecoveryPoint] | None:
    snap = ctx.bound.get("VMRecoverySnapshot")
    if isinstance(snap, list):
        snap = snap[0] if snap else None
    vm = ctx.vm_from_object(snap) if snap is not None else None
    wanted = str(prop(snap, "Id") or "").lower()
    if vm is not None:
        for point in ctx.world.recovery_points(vm):
            if str(point.id).lower() == wanted:
                return vm, point
    ctx.fail(
        errors.ErrorInfo(
            message="Hyper-V was unable to find the recovery point given in "
            "-VMRecoverySnapshot. Read the points again with Get-VMSnapshot -SnapshotType Replica.",
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
        _state_error(
            ctx,
            vm,
            "failed to prepare for failover: -Prepare runs on the primary "
            f"virtual machine; this one is {vm.mode.label}.",
        )
        return None
    if rep.primary_state is not RS.Replicating:
        _state_error(
            ctx,
            vm,
            "failed to prepare for failover: replication must be Replicating, "
            f"not {rep.primary_state.name}.",
        )
        return None
    if vm.state is not VMState.Off:
        _state_error(
            ctx, vm, "failed to prepare for failover: turn the virtual machine off first (Stop-VM)."
        )
        return None
    if rep.replica_host in ctx.world.down or rep.broken or rep.replica_state is not RS.Replicating:
        ctx.fail(_unreachable(ctx, vm, rep.replica_host), vm.name)
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
        _state_error(ctx, vm, problem)
        return None
    test = _copy_vm(vm, vm.host, vm.name + TEST_SUFFIX)
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
        _state_error(ctx, vm, problem)
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
    Param("VMRecoverySnapshot", "object"),
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
                _state_error(
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
            _state_error(
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
            _state_error(
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


_SIMPLE_SETS = vm_sets("VMName", (), ("Passthru", "AsJob"))
STOP_FAILOVER = Cmdlet(
    Sig("Stop-VMFailover", (*VM_PARAMS, PASSTHRU, ASJOB), _SIMPLE_SETS, ("VMName",), "VM"),
    stop_failover,
    mutating=True,
)
COMPLETE_FAILOVER = Cmdlet(
    Sig("Complete-VMFailover", (*VM_PARAMS, PASSTHRU, ASJOB), _SIMPLE_SETS, ("VMName",), "VM"),
    complete_failover,
    mutating=True,
)


# ----------------------------------------------------------------------------- Set-VMReplication
def set_replication(ctx: Context) -> list[Any]:
    """Set-VMReplication -Reverse | -AsReplica | settings."""
    out = []
    for vm in ctx.vms():
        if ctx.bound.switch("Reverse"):
            ok = _reverse(ctx, vm)
        elif ctx.bound.switch("AsReplica"):
            ok = _as_replica(ctx, vm)
        else:
            ok = _settings(ctx, vm)
        if ok and ctx.bound.switch("Passthru") and vm.replication is not None:
            out.append(replication_object(ctx.world, vm))
    return out


def _settings(ctx: Context, vm: VM) -> bool:
    rep = vm.replication
    if rep is None:
        ctx.fail(errors.replication_not_enabled(ctx.cmdlet, vm.name), vm.name)
        return False
    target = ctx.bound.get("ReplicaServerName")
    if target is not None and _host_named(ctx, str(target)) != rep.replica_host:
        _state_error(
            ctx,
            vm,
            "failed to change the Replica server: remove replication and "
            "enable it again towards the new server, or use -Reverse after a failover.",
        )
        return False
    if not _apply_settings(ctx, vm, rep):
        return False
    ctx.done(vm.name)
    return True


def _reverse(ctx: Context, vm: VM) -> bool:
    rep = vm.replication
    if rep is None:
        ctx.fail(errors.replication_not_enabled(ctx.cmdlet, vm.name), vm.name)
        return False
    if vm.mode is ReplicationMode.Primary:
        _state_error(
            ctx,
            vm,
            "failed to reverse replication: this is the primary virtual "
            "machine. Reverse replication on the Replica after Start-VMFailover.",
        )
        return False
    state = rep.replica_state
    if state not in (RS.FailedOverWaitingCompletion, RS.FailedOver):
        _state_error(
            ctx,
            vm,
            "failed to reverse replication: fail the Replica over first "
            f"(Start-VMFailover); replication is {state.name}.",
        )
        return False
    old_primary = _partner(ctx, vm)
    target_name = ctx.bound.get("ReplicaServerName")
    planned = (
        state is RS.FailedOverWaitingCompletion
        and not rep.broken
        and rep.primary_state is RS.PreparedForFailover
        and old_primary is not None
    )
    if planned and old_primary is not None:
        target = rep.primary_host if target_name is None else _host_named(ctx, str(target_name))
        if target != rep.primary_host:
            _state_error(
                ctx,
                vm,
                f"failed to reverse replication: after a planned failover it "
                f"reverses towards the old primary '{rep.primary_host}'.",
            )
            return False
        if target in ctx.world.down:
            ctx.fail(_unreachable(ctx, vm, target), vm.name)
            return False
        if not _apply_settings(ctx, vm, rep):
            return False
        now = ctx.world.clock.now()
        rep.primary_host, rep.replica_host = vm.host, old_primary.host
        rep.primary_state = rep.replica_state = RS.Replicating
        rep.hourly.clear()
        rep.missed_streak = 0
        rep.anchor = now
        vm.failover_point = None
        ctx.done(vm.name)
        return True
    return _reverse_to_ready(ctx, vm, rep, target_name)


def _reverse_to_ready(ctx: Context, vm: VM, old: Replication, target_name: Any) -> bool:
    """After an unplanned failover: link to a VM made ready with -AsReplica on the target."""
    if target_name is None:
        _state_error(
            ctx,
            vm,
            "failed to reverse replication: the old primary was not prepared "
            "for failover, so give -ReplicaServerName (after Set-VMReplication "
            "-AsReplica there).",
        )
        return False
    target = _host_named(ctx, str(target_name))
    if target is None or not ctx.world.is_hyperv(target) or target == vm.host:
        ctx.fail(
            errors.operation_failed(
                ctx.cmdlet, f"The Replica server '{target_name}' could not be reached.", vm.name
            ),
            vm.name,
        )
        return False
    if target in ctx.world.down:
        ctx.fail(_unreachable(ctx, vm, target), vm.name)
        return False
    ready = ctx.world.find_by_id(target, str(vm.id))
    if (
        ready is None
        or ready.replication is None
        or ready.mode is not ReplicationMode.Replica
        or ready.replication.primary_host
    ):
        _state_error(
            ctx,
            vm,
            f"failed to reverse replication: '{target}' has no copy of it "
            "waiting as a Replica. Run Set-VMReplication -AsReplica there first.",
        )
        return False
    rep = Replication(
        vm.name,
        vm.host,
        target,
        RS.ReadyForInitialReplication,
        RS.WaitingForInitialReplication,
        frequency=old.frequency,
        recovery_history=old.recovery_history,
        app_consistent_hours=old.app_consistent_hours,
        auth=old.auth,
        port=old.port,
        compression=old.compression,
        anchor=ctx.world.clock.now(),
    )
    if not _apply_settings(ctx, vm, rep):
        return False
    vm.replication = rep
    ready.replication = rep
    vm.failover_point = None
    ctx.done(vm.name)
    return True


def _as_replica(ctx: Context, vm: VM) -> bool:
    if vm.test_of is not None or vm.mode is ReplicationMode.Replica:
        _state_error(ctx, vm, f"failed to make it a Replica: it is already {vm.mode.label}.")
        return False
    if vm.state is not VMState.Off:
        _state_error(ctx, vm, "failed to make it a Replica: turn the virtual machine off first.")
        return False
    rep = vm.replication
    if rep is not None and rep.replica_state not in (RS.FailedOverWaitingCompletion, RS.FailedOver):
        _state_error(
            ctx,
            vm,
            "failed to make it a Replica: its Replica has not failed over "
            f"(replication is {rep.primary_state.name}).",
        )
        return False
    if rep is not None:
        # The old relationship cannot carry on: the other end now owns the VM.
        rep.broken = True
    vm.replication = Replication(
        vm.name,
        "",
        vm.host,
        RS.Disabled,
        RS.WaitingForInitialReplication,
        anchor=ctx.world.clock.now(),
    )
    ctx.done(vm.name)
    return True


_SET_OPTS = (*_SETTING_NAMES, "Passthru", "AsJob")
SET_REPLICATION = Cmdlet(
    Sig(
        "Set-VMReplication",
        (
            *VM_PARAMS,
            *_SETTINGS,
            Param("Reverse", "switch"),
            Param("AsReplica", "switch"),
            Param("AllowedPrimaryServer", "string"),
            PASSTHRU,
            ASJOB,
        ),
        (
            *vm_sets("VMName", (), _SET_OPTS),
            *vm_sets("VMName_Reverse", ("Reverse",), _SET_OPTS),
            *vm_sets(
                "VMName_AsReplica", ("AsReplica",), ("AllowedPrimaryServer", "Passthru", "AsJob")
            ),
        ),
        ("VMName", "ReplicaServerName", "ReplicaServerPort", "AuthenticationType"),
        "VM",
    ),
    set_replication,
    mutating=True,
)


# ----------------------------------------------------------------------------- Remove
def remove_replication(ctx: Context) -> list[Any]:
    """Remove-VMReplication: this end stops replicating; the other end sees it broken."""
    for vm in ctx.vms():
        rep = vm.replication
        if rep is None or vm.test_of is not None:
            ctx.fail(errors.replication_not_enabled(ctx.cmdlet, vm.name), vm.name)
            continue
        rep.broken = True
        vm.replication = None
        vm.failover_point = None
        ctx.done(vm.name)
    return []


REMOVE_REPLICATION = Cmdlet(
    Sig(
        "Remove-VMReplication",
        (*VM_PARAMS, Param("ReplicationRelationshipType", "object"), PASSTHRU),
        vm_sets("VMName", (), ("ReplicationRelationshipType", "Passthru")),
        ("VMName",),
        "VM",
    ),
    remove_replication,
    mutating=True,
)


# ----------------------------------------------------------------------------- Suspend/Resume
def suspend_replication(ctx: Context) -> list[Any]:
    """Suspend-VMReplication: both ends Suspended; cycles stop until resumed."""
    for vm in ctx.vms():
        rep = vm.replication
        if rep is None or vm.test_of is not None:
            ctx.fail(errors.replication_not_enabled(ctx.cmdlet, vm.name), vm.name)
            continue
        if rep.primary_state is not RS.Replicating or rep.replica_state is not RS.Replicating:
            _state_error(
                ctx,
                vm,
                "failed to suspend replication: it must be Replicating, "
                f"not {vm.replication_state.name}.",
            )
            continue
        rep.primary_state = rep.replica_state = RS.Suspended
        ctx.done(vm.name)
    return []


def resume_replication(ctx: Context) -> list[Any]:
    """Resume-VMReplication: a Suspended relationship goes back to Replicating."""
    for vm in ctx.vms():
        rep = vm.replication
        if rep is None or vm.test_of is not None:
            ctx.fail(errors.replication_not_enabled(ctx.cmdlet, vm.name), vm.name)
            continue
        if rep.primary_state is not RS.Suspended or rep.replica_state is not RS.Suspended:
            _state_error(
                ctx,
                vm,
                f"failed to resume replication: it is not suspended ({vm.replication_state.name}).",
            )
            continue
        rep.primary_state = rep.replica_state = RS.Replicating
        rep.anchor = ctx.world.clock.now()
        ctx.done(vm.name)
    return []


SUSPEND_REPLICATION = Cmdlet(
    Sig("Suspend-VMReplication", (*VM_PARAMS, PASSTHRU, ASJOB), _SIMPLE_SETS, ("VMName",), "VM"),
    suspend_replication,
    mutating=True,
)
RESUME_REPLICATION = Cmdlet(
    Sig(
        "Resume-VMReplication",
        (*VM_PARAMS, PASSTHRU, ASJOB, Param("Resynchronize", "switch")),
        vm_sets("VMName", (), ("Passthru", "AsJob", "Resynchronize")),
        ("VMName",),
        "VM",
    ),
    resume_replication,
    mutating=True,
)
CMDLETS = (
    START_FAILOVER,
    STOP_FAILOVER,
    COMPLETE_FAILOVER,
    SET_REPLICATION,
    REMOVE_REPLICATION,
    SUSPEND_REPLICATION,
    RESUME_REPLICATION,
)
