"""Executors that move a VM through Hyper-V Replica's state machine.

Each reads the VM and its replication first and returns ``changed=False`` when the step's effect
is already there (a redelivered task), so no VM is failed over, reversed or shut down twice.
A state that allows neither the step nor a skip raises :class:`InvalidReplicationState`.
"""

from __future__ import annotations

from typing import Any

from plans.errors import TransientError
from workers.errors import RemotePermanentError
from workers.executors.base import (
    describe,
    host_of,
    param,
    refused_as_step_error,
    test_vm_name,
    vm_of,
    wait_until,
)
from workers.executors.context import StepContext
from workers.executors.errors import InvalidReplicationState, StepParamsError, VmNotFound
from workers.executors.lookup import find_replication, find_vm
from workers.hyperv.hyperv import HyperVHost
from workers.hyperv.models import ReplicationInfo, VMInfo
from workers.hyperv.states import ReplicationMode as Mode
from workers.hyperv.states import ReplicationState as RS
from workers.hyperv.states import VMState
from workflows.steps import StepOutcome, StepSpec

# Replica states Start-VMFailover accepts (DESIGN.md, the state table).
_FAILOVER_FROM = frozenset({RS.REPLICATING, RS.RESYNCHRONIZING, RS.SUSPENDED})
_OFF = frozenset({VMState.OFF, VMState.OFF_CRITICAL})


def _state(hv: HyperVHost, vm: str) -> str:
    info = find_vm(hv, vm)
    repl = find_replication(hv, vm) if info is not None else None
    return describe(info, repl)


def _require_replication(hv: HyperVHost, spec: StepSpec, vm: str) -> ReplicationInfo:
    repl = find_replication(hv, vm)
    if repl is None:
        if find_vm(hv, vm) is None:
            raise VmNotFound(
                f"VM {vm} is not on host {hv.host_name} (step {spec.kind}); check the fabric's "
                "primary/replica hosts for this VM"
            )
        raise InvalidReplicationState(
            f"VM {vm} on {hv.host_name} is not replicated (state Disabled); {spec.kind} needs "
            "Hyper-V Replica enabled: enable protection first"
        )
    return repl


def _require_vm(hv: HyperVHost, spec: StepSpec, vm: str) -> VMInfo:
    info = find_vm(hv, vm)
    if info is None:
        raise VmNotFound(
            f"VM {vm} is not on host {hv.host_name} (step {spec.kind}); check the fabric's "
            "primary/replica hosts for this VM"
        )
    return info


def _invalid(spec: StepSpec, hv: HyperVHost, vm: str, cmdlet: str, repl: Any, todo: str) -> Any:
    state = f"replication {repl.state.value}, mode {repl.mode.value}" if repl else "unknown"
    return InvalidReplicationState(
        f"{cmdlet} for VM {vm} on {hv.host_name} is not possible in {state} "
        f"(step {spec.kind}); {todo}"
    )


def shutdown_primary(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """Stop-VM on the primary; with ``best_effort`` an unreachable primary is only a warning."""
    vm, host = vm_of(spec), host_of(spec)
    best_effort = param(spec, "best_effort", bool, False)
    timeout = param(spec, "timeout", float, 600.0)
    hv = ctx.hyperv(host)
    try:
        info = _require_vm(hv, spec, vm)
        if info.state in _OFF:
            return StepOutcome(result={"state": info.state.value}, changed=False)
        with refused_as_step_error(
            spec, host, "Stop-VM", lambda: _state(hv, vm), "Shut the VM down by hand, then resume"
        ):
            hv.stop_vm(vm, force=True)
        off = wait_until(lambda: _off_or_none(hv, vm), timeout=timeout, interval=ctx.poll_interval)
        if off is None:
            raise InvalidReplicationState(
                f"VM {vm} on {host} did not reach Off within {timeout:g}s after Stop-VM; "
                "check the guest's shutdown, turn it off by hand, then resume the run"
            )
    except (TransientError, RemotePermanentError) as exc:
        if not best_effort:
            raise
        # Unplanned failover: the primary site may be gone; failing over must not wait for it.
        warning = f"could not shut down {vm} on {host} (continuing, best effort): {exc}"
        return StepOutcome(result={"warning": warning}, changed=False)
    return StepOutcome(
        result={"state": "Off", "shut_down": True, "host": host},
        undo={"action": "start_vm", "host": host, "vm": vm},
    )


def _off_or_none(hv: HyperVHost, vm: str) -> bool | None:
    info = find_vm(hv, vm)
    return True if info is not None and info.state in _OFF else None


def prepare_failover(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """Start-VMFailover -Prepare on the (shut down) primary."""
    vm, host = vm_of(spec), host_of(spec)
    hv = ctx.hyperv(host)
    repl = _require_replication(hv, spec, vm)
    if repl.state is RS.PREPARED_FOR_FAILOVER:
        return StepOutcome(result={"state": repl.state.value}, changed=False)
    if repl.mode is Mode.REPLICA:
        # The failover and reverse already happened: this host is the replica now.
        return StepOutcome(result={"state": repl.state.value, "mode": "Replica"}, changed=False)
    if repl.state is not RS.REPLICATING:
        raise _invalid(
            spec,
            hv,
            vm,
            "Start-VMFailover -Prepare",
            repl,
            "it needs Replicating; resume replication (Resume-VMReplication) or use an "
            "unplanned failover",
        )
    info = _require_vm(hv, spec, vm)
    if info.state not in _OFF:
        raise _invalid(
            spec,
            hv,
            vm,
            "Start-VMFailover -Prepare",
            repl,
            f"the VM is {info.state.value}; shut it down first (shutdown_primary step)",
        )
    with refused_as_step_error(
        spec,
        host,
        "Start-VMFailover -Prepare",
        lambda: _state(hv, vm),
        "Check the VM's replication health on the primary, then resume the run",
    ):
        hv.start_failover(vm, prepare=True)
    return StepOutcome(
        result={"state": RS.PREPARED_FOR_FAILOVER.value},
        undo={"action": "cancel_prepare", "host": host, "vm": vm},
    )


def failover(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """Start-VMFailover on the replica (the latest recovery point)."""
    vm, host = vm_of(spec), host_of(spec)
    hv = ctx.hyperv(host)
    point = param(spec, "recovery_point", str, "") or None
    if point == "latest":
        point = None
    repl = _require_replication(hv, spec, vm)
    if repl.state in (RS.FAILED_OVER_WAITING_COMPLETION, RS.FAILED_OVER) or (
        repl.mode is Mode.PRIMARY
    ):
        return StepOutcome(
            result={"state": repl.state.value, "mode": repl.mode.value},
            undo=_failover_undo(ctx, host, vm) if repl.mode is Mode.REPLICA else None,
            changed=False,
        )
    if repl.state not in _FAILOVER_FROM:
        raise _invalid(
            spec,
            hv,
            vm,
            "Start-VMFailover",
            repl,
            "it needs Replicating, Resynchronizing or Suspended with at least one completed "
            "replication; wait for replication to catch up, then resume",
        )
    info = _require_vm(hv, spec, vm)
    if info.state not in _OFF:
        raise _invalid(
            spec,
            hv,
            vm,
            "Start-VMFailover",
            repl,
            f"the replica VM is {info.state.value}; turn it off on {host}, then resume",
        )
    with refused_as_step_error(
        spec,
        host,
        "Start-VMFailover",
        lambda: _state(hv, vm),
        "A replica needs at least one completed replication; check Get-VMReplication on "
        "the replica host, then resume the run",
    ):
        hv.start_failover(vm, recovery_snapshot=point)
    return StepOutcome(
        result={"state": RS.FAILED_OVER_WAITING_COMPLETION.value, "recovery_point": point},
        undo=_failover_undo(ctx, host, vm),
    )


def _failover_undo(ctx: StepContext, host: str, vm: str) -> dict[str, Any]:
    undo: dict[str, Any] = {"action": "cancel_failover", "host": host, "vm": vm}
    shutdown = ctx.prior.get("shutdown_primary", {})
    if shutdown.get("shut_down") and shutdown.get("host"):
        undo["restart_source"] = {"host": shutdown["host"], "vm": vm}
    return undo


def test_failover(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """Start-VMFailover -AsTest on the replica: creates "<VM> - Test"."""
    vm, host = vm_of(spec), host_of(spec)
    hv = ctx.hyperv(host)
    test_vm = test_vm_name(vm)
    undo = {"action": "stop_test_failover", "host": host, "vm": vm}
    if find_vm(hv, test_vm) is not None:
        # The test VM exists, so the cleanup record is still needed even though nothing ran.
        return StepOutcome(result={"test_vm": test_vm}, undo=undo, changed=False)
    repl = _require_replication(hv, spec, vm)
    if repl.state is not RS.REPLICATING or repl.mode is not Mode.REPLICA:
        raise _invalid(
            spec,
            hv,
            vm,
            "Start-VMFailover -AsTest",
            repl,
            "a test failover needs the replica Replicating (not resynchronizing); wait for "
            "replication to recover, then resume",
        )
    with refused_as_step_error(
        spec,
        host,
        "Start-VMFailover -AsTest",
        lambda: _state(hv, vm),
        "Check that the replica has a completed replication, then resume the run",
    ):
        hv.start_failover(vm, as_test=True)
    return StepOutcome(result={"test_vm": test_vm}, undo=undo)


def reverse(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """Set-VMReplication -Reverse on the failed-over replica (planned failover)."""
    vm, host = vm_of(spec), host_of(spec)
    hv = ctx.hyperv(host)
    repl = _require_replication(hv, spec, vm)
    expected = spec.params.get("replica_server")
    if repl.mode is Mode.PRIMARY:
        if expected and not _same_host(repl.replica_server, str(expected)):
            raise _invalid(
                spec,
                hv,
                vm,
                "Set-VMReplication -Reverse",
                repl,
                f"it already replicates to {repl.replica_server}, not {expected}; check "
                "the replication relationship by hand",
            )
        return StepOutcome(
            result={"mode": "Primary", "replica_server": repl.replica_server}, changed=False
        )
    if repl.state is not RS.FAILED_OVER_WAITING_COMPLETION:
        raise _invalid(
            spec,
            hv,
            vm,
            "Set-VMReplication -Reverse",
            repl,
            "reverse needs FailedOverWaitingCompletion on the replica (run the failover "
            "step first)",
        )
    with refused_as_step_error(
        spec,
        host,
        "Set-VMReplication -Reverse",
        lambda: _state(hv, vm),
        "Check that the old primary is reachable and prepared, then resume the run",
    ):
        hv.set_replication_reverse(vm)
    after = find_replication(hv, vm)
    # Reversing cannot be undone by a cancel: going back is a failback.
    return StepOutcome(
        result={"mode": "Primary", "replica_server": after.replica_server if after else ""}
    )


def test_cleanup(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """Stop-VMFailover on the replica: deletes "<VM> - Test"; nothing to do without it."""
    vm, host = vm_of(spec), host_of(spec)
    hv = ctx.hyperv(host)
    test_vm = test_vm_name(vm)
    if find_vm(hv, test_vm) is None:
        return StepOutcome(result={"test_vm": None}, changed=False)
    with refused_as_step_error(
        spec,
        host,
        "Stop-VMFailover",
        lambda: _state(hv, vm),
        f"Delete {test_vm!r} by hand with Stop-VMFailover -VMName {vm}, then resume",
    ):
        hv.stop_failover(vm)
    return StepOutcome(result={"test_vm": None, "deleted": test_vm})


def commit(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """Complete-VMFailover on the replica (unplanned; irreversible)."""
    vm, host = vm_of(spec), host_of(spec)
    hv = ctx.hyperv(host)
    repl = _require_replication(hv, spec, vm)
    if repl.state is RS.FAILED_OVER or repl.mode is Mode.PRIMARY:
        return StepOutcome(result={"state": repl.state.value}, changed=False)
    if repl.state is not RS.FAILED_OVER_WAITING_COMPLETION:
        raise _invalid(
            spec,
            hv,
            vm,
            "Complete-VMFailover",
            repl,
            "commit needs FailedOverWaitingCompletion (fail over first)",
        )
    with refused_as_step_error(
        spec,
        host,
        "Complete-VMFailover",
        lambda: _state(hv, vm),
        "Check the VM on the replica host, then resume the run",
    ):
        hv.complete_failover(vm)
    return StepOutcome(result={"state": RS.FAILED_OVER.value})


def cancel_failover(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """Stop-VMFailover on an uncommitted failover (turning the failed-over VM off first)."""
    vm, host = vm_of(spec), host_of(spec)
    hv = ctx.hyperv(host)
    repl = _require_replication(hv, spec, vm)
    if repl.state is not RS.FAILED_OVER_WAITING_COMPLETION:
        if repl.state is RS.FAILED_OVER or repl.mode is Mode.PRIMARY:
            raise _invalid(
                spec,
                hv,
                vm,
                "Stop-VMFailover",
                repl,
                "the failover was committed or reversed and cannot be cancelled; fail back instead",
            )
        return StepOutcome(result={"state": repl.state.value}, changed=False)
    info = _require_vm(hv, spec, vm)
    if info.state not in _OFF:
        # The failed-over copy is discarded by the cancel; a clean shutdown buys nothing.
        hv.stop_vm(vm, turn_off=True)
    with refused_as_step_error(
        spec,
        host,
        "Stop-VMFailover",
        lambda: _state(hv, vm),
        "Cancel the failover by hand with Stop-VMFailover, then resume",
    ):
        hv.stop_failover(vm)
    return StepOutcome(result={"state": RS.REPLICATING.value})


def cancel_prepare(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """Stop-VMFailover on a primary left PreparedForFailover (compensation only)."""
    vm, host = vm_of(spec), host_of(spec)
    hv = ctx.hyperv(host)
    repl = _require_replication(hv, spec, vm)
    if repl.state is not RS.PREPARED_FOR_FAILOVER:
        return StepOutcome(result={"state": repl.state.value}, changed=False)
    with refused_as_step_error(
        spec,
        host,
        "Stop-VMFailover",
        lambda: _state(hv, vm),
        "Cancel the prepared failover by hand with Stop-VMFailover, then resume",
    ):
        hv.stop_failover(vm)
    return StepOutcome(result={"state": RS.REPLICATING.value})


def set_as_replica(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """Set-VMReplication -AsReplica on the old primary (after an unplanned failover)."""
    vm, host = vm_of(spec), host_of(spec)
    hv = ctx.hyperv(host)
    repl = find_replication(hv, vm)
    if repl is not None and repl.mode is Mode.REPLICA:
        return StepOutcome(result={"mode": "Replica"}, changed=False)
    _require_vm(hv, spec, vm)
    with refused_as_step_error(
        spec,
        host,
        "Set-VMReplication -AsReplica",
        lambda: _state(hv, vm),
        "Make sure the old primary VM is off and not failed over, then resume the run",
    ):
        hv.set_replication_as_replica(vm)
    return StepOutcome(result={"mode": "Replica"})


def reverse_to(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """Set-VMReplication -Reverse -ReplicaServerName on the committed new primary."""
    vm, host = vm_of(spec), host_of(spec)
    replica_server = param(spec, "replica_server", str, "")
    if not replica_server:
        raise _params_missing(spec, "replica_server")
    hv = ctx.hyperv(host)
    repl = _require_replication(hv, spec, vm)
    if repl.mode is Mode.PRIMARY:
        if not _same_host(repl.replica_server, replica_server):
            raise _invalid(
                spec,
                hv,
                vm,
                "Set-VMReplication -Reverse",
                repl,
                f"it already replicates to {repl.replica_server}, not {replica_server}; "
                "check the replication relationship by hand",
            )
        return StepOutcome(result={"replica_server": repl.replica_server}, changed=False)
    with refused_as_step_error(
        spec,
        host,
        "Set-VMReplication -Reverse",
        lambda: _state(hv, vm),
        f"Run set_as_replica on {replica_server} first and commit the failover, then resume",
    ):
        hv.set_replication_reverse(vm, replica_server)
    return StepOutcome(result={"replica_server": replica_server})


def start_initial_replication(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """Start-VMInitialReplication on the new primary; skip once it has started."""
    vm, host = vm_of(spec), host_of(spec)
    hv = ctx.hyperv(host)
    repl = _require_replication(hv, spec, vm)
    if repl.state is not RS.READY_FOR_INITIAL_REPLICATION:
        if repl.mode is Mode.PRIMARY and repl.state is not RS.DISABLED:
            return StepOutcome(result={"state": repl.state.value}, changed=False)
        raise _invalid(
            spec,
            hv,
            vm,
            "Start-VMInitialReplication",
            repl,
            "it needs ReadyForInitialReplication on the primary; run reverse_to first",
        )
    with refused_as_step_error(
        spec,
        host,
        "Start-VMInitialReplication",
        lambda: _state(hv, vm),
        "Check the replica server's Hyper-V Replica listener, then resume the run",
    ):
        hv.start_initial_replication(vm)
    after = find_replication(hv, vm)
    return StepOutcome(result={"state": after.state.value if after else "unknown"})


def _same_host(reported: str, expected: str) -> bool:
    # Hyper-V reports FQDNs; plans name hosts by their short names.
    short = reported.lower().split(".")[0]
    return short == expected.lower().split(".")[0]


def _params_missing(spec: StepSpec, name: str) -> Exception:
    return StepParamsError(f"step {spec.key} ({spec.kind}) needs param {name!r}; recompile")
