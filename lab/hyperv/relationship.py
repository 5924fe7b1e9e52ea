"""Replication relationship cmdlets: Set-VMReplication (-Reverse, -AsReplica, settings),
Remove-, Suspend- and Resume-VMReplication. See :mod:`lab.hyperv.replication` for the table."""

from __future__ import annotations

from typing import Any

from lab.hyperv import errors
from lab.hyperv.cmdlets import ASJOB, PASSTHRU, VM_PARAMS, vm_sets
from lab.hyperv.context import Cmdlet, Context
from lab.hyperv.enums import ReplicationMode, ReplicationState, VMState
from lab.hyperv.failover import SIMPLE_SETS
from lab.hyperv.params import Param
from lab.hyperv.params import Signature as Sig
from lab.hyperv.replication import (
    SETTING_NAMES,
    SETTINGS,
    apply_settings,
    host_named,
    partner_of,
    state_error,
    unreachable,
    with_replication,
)
from lab.hyperv.shapes import replication_object
from lab.hyperv.state import VM, Replication

RS = ReplicationState


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
    if target is not None and host_named(ctx, str(target)) != rep.replica_host:
        state_error(
            ctx,
            vm,
            "failed to change the Replica server: remove replication and "
            "enable it again towards the new server, or use -Reverse after a failover.",
        )
        return False
    if not apply_settings(ctx, vm, rep):
        return False
    ctx.done(vm.name)
    return True


def _reverse(ctx: Context, vm: VM) -> bool:
    rep = vm.replication
    if rep is None:
        ctx.fail(errors.replication_not_enabled(ctx.cmdlet, vm.name), vm.name)
        return False
    if vm.mode is ReplicationMode.Primary:
        state_error(
            ctx,
            vm,
            "failed to reverse replication: this is the primary virtual "
            "machine. Reverse replication on the Replica after Start-VMFailover.",
        )
        return False
    state = rep.replica_state
    if state not in (RS.FailedOverWaitingCompletion, RS.FailedOver):
        state_error(
            ctx,
            vm,
            "failed to reverse replication: fail the Replica over first "
            f"(Start-VMFailover); replication is {state.name}.",
        )
        return False
    old_primary = partner_of(ctx, vm)
    target_name = ctx.bound.get("ReplicaServerName")
    planned = (
        state is RS.FailedOverWaitingCompletion
        and not rep.broken
        and rep.primary_state is RS.PreparedForFailover
        and old_primary is not None
    )
    if planned and old_primary is not None:
        target = rep.primary_host if target_name is None else host_named(ctx, str(target_name))
        if target != rep.primary_host:
            state_error(
                ctx,
                vm,
                f"failed to reverse replication: after a planned failover it "
                f"reverses towards the old primary '{rep.primary_host}'.",
            )
            return False
        if target in ctx.world.down:
            ctx.fail(unreachable(ctx, vm, target), vm.name)
            return False
        if not apply_settings(ctx, vm, rep):
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
        state_error(
            ctx,
            vm,
            "failed to reverse replication: the old primary was not prepared "
            "for failover, so give -ReplicaServerName (after Set-VMReplication "
            "-AsReplica there).",
        )
        return False
    target = host_named(ctx, str(target_name))
    if target is None or not ctx.world.is_hyperv(target) or target == vm.host:
        ctx.fail(
            errors.operation_failed(
                ctx.cmdlet, f"The Replica server '{target_name}' could not be reached.", vm.name
            ),
            vm.name,
        )
        return False
    if target in ctx.world.down:
        ctx.fail(unreachable(ctx, vm, target), vm.name)
        return False
    ready = ctx.world.find_by_id(target, str(vm.id))
    if (
        ready is None
        or ready.replication is None
        or ready.mode is not ReplicationMode.Replica
        or ready.replication.primary_host
    ):
        state_error(
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
    if not apply_settings(ctx, vm, rep):
        return False
    vm.replication = rep
    ready.replication = rep
    vm.failover_point = None
    ctx.done(vm.name)
    return True


def _as_replica(ctx: Context, vm: VM) -> bool:
    if vm.test_of is not None or vm.mode is ReplicationMode.Replica:
        state_error(ctx, vm, f"failed to make it a Replica: it is already {vm.mode.label}.")
        return False
    if vm.state is not VMState.Off:
        state_error(ctx, vm, "failed to make it a Replica: turn the virtual machine off first.")
        return False
    rep = vm.replication
    if rep is not None and rep.replica_state not in (RS.FailedOverWaitingCompletion, RS.FailedOver):
        state_error(
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


_SET_OPTS = (*SETTING_NAMES, "Passthru", "AsJob")
SET_REPLICATION = Cmdlet(
    Sig(
        "Set-VMReplication",
        (
            *VM_PARAMS,
            *SETTINGS,
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
    for vm, rep in with_replication(ctx):
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
    for vm, rep in with_replication(ctx):
        if rep.primary_state is not RS.Replicating or rep.replica_state is not RS.Replicating:
            state_error(
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
    """Resume-VMReplication: a Suspended relationship goes back to Replicating; with
    -Resynchronize, a primary waiting for resynchronisation starts it."""
    for vm, rep in with_replication(ctx):
        if ctx.bound.switch("Resynchronize"):
            _resynchronize(ctx, vm, rep)
            continue
        if rep.primary_state is not RS.Suspended or rep.replica_state is not RS.Suspended:
            state_error(
                ctx,
                vm,
                f"failed to resume replication: it is not suspended ({vm.replication_state.name}).",
            )
            continue
        rep.primary_state = rep.replica_state = RS.Replicating
        rep.anchor = ctx.world.clock.now()
        ctx.done(vm.name)
    return []


def _resynchronize(ctx: Context, vm: VM, rep: Replication) -> None:
    if vm.mode is not ReplicationMode.Primary or rep.primary_state not in (
        RS.WaitingForStartResynchronize,
        RS.ResynchronizeSuspended,
    ):
        state_error(
            ctx,
            vm,
            "failed to resynchronize: it runs on the primary once replication needs "
            f"resynchronisation; here it is {vm.mode.label} in {vm.replication_state.name}.",
        )
        return
    if rep.replica_host in ctx.world.down:
        ctx.fail(unreachable(ctx, vm, rep.replica_host), vm.name)
        return
    rep.primary_state = RS.Resynchronizing
    rep.resync_done_at = ctx.world.clock.now() + ctx.world.resync_seconds(rep)
    ctx.done(vm.name)


SUSPEND_REPLICATION = Cmdlet(
    Sig("Suspend-VMReplication", (*VM_PARAMS, PASSTHRU, ASJOB), SIMPLE_SETS, ("VMName",), "VM"),
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
    SET_REPLICATION,
    REMOVE_REPLICATION,
    SUSPEND_REPLICATION,
    RESUME_REPLICATION,
)
