"""Executors that fail a VM over and back out of it: shutdown, prepare, failover, test
failover and its cleanup, commit, and cancelling a failover or a prepare.

Each reads the VM and its replication first and returns ``changed=False`` when the step's effect
is already there (a redelivered task), so no VM is shut down or failed over twice. A state that
allows neither the step nor a skip raises :class:`InvalidReplicationState` saying what to do.
"""

from __future__ import annotations

from plans.errors import TransientError
from workers.errors import CmdletFailed, RemotePermanentError
from workers.executors.base import (
    act_checked,
    act_first,
    host_of,
    input_of,
    leftover_cleanup,
    refused_as_step_error,
    vm_of,
)
from workers.executors.context import StepContext
from workers.executors.errors import InvalidReplicationState, LeftoverTestFailover, StepError
from workers.executors.lookup import (
    OFF,
    find_vm,
    invalid_state,
    require_replication,
    require_vm,
    state_text,
)
from workers.hyperv.hyperv import HyperVHost, name_of_test_vm
from workers.hyperv.states import ReplicationMode as Mode
from workers.hyperv.states import ReplicationState as RS
from workflows.inputs import (
    CancelFailover,
    CancelPrepare,
    FailoverInput,
    ShutdownPrimaryInput,
    SourceToRestart,
    StartVm,
    StopTestFailover,
)
from workflows.steps import StepOutcome, StepSpec
from workflows.waiting import wait_until

# Replica states Start-VMFailover accepts (workflows/ARCHITECTURE.md, the state table).
_FAILOVER_FROM = frozenset({RS.REPLICATING, RS.RESYNCHRONIZING, RS.SUSPENDED})


def shutdown_primary(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """Stop-VM on the primary; with ``best_effort`` an unreachable primary is only a warning."""
    vm, host = vm_of(spec), host_of(spec)
    params = input_of(spec, ShutdownPrimaryInput)
    best_effort, timeout = params.best_effort, params.timeout
    hv = ctx.hyperv(host)
    try:
        info = require_vm(hv, spec, vm)
        if info.state in OFF:
            return StepOutcome(result={"state": info.state.value}, changed=False)
        with refused_as_step_error(
            spec,
            host,
            "Stop-VM",
            lambda: state_text(hv, vm),
            "Shut the VM down by hand, then resume",
        ):
            stopped = hv.stop_vm(vm, force=True, passthru=True)
        # Stop-VM returns once the guest is off and -Passthru shows it; a host that answers
        # before (or sends nothing back) is asked again until it is
        off = True if stopped is not None and stopped.state in OFF else None
        if off is None:
            off = wait_until(
                lambda: _off_or_none(hv, vm), timeout=timeout, interval=ctx.poll_interval
            )
        if off is None:
            raise InvalidReplicationState(
                f"VM {vm} on {host} did not reach Off within {timeout:g}s after Stop-VM; "
                "check the guest's shutdown, turn it off by hand, then resume the run"
            )
    except (TransientError, RemotePermanentError, StepError) as exc:
        if not best_effort:
            raise
        # Unplanned failover: the primary site may be gone; failing over must not wait for it.
        warning = f"could not shut down {vm} on {host} (continuing, best effort): {exc}"
        return StepOutcome(result={"warning": warning}, changed=False)
    return StepOutcome(
        result={"state": "Off", "shut_down": True, "host": host},
        undo=StartVm(host=host, vm=vm),
    )


def _off_or_none(hv: HyperVHost, vm: str) -> bool | None:
    info = find_vm(hv, vm)
    return True if info is not None and info.state in OFF else None


def prepare_failover(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """Start-VMFailover -Prepare on the (shut down) primary."""
    vm, host = vm_of(spec), host_of(spec)
    hv = ctx.hyperv(host)
    return act_first(
        ctx,
        lambda: hv.start_failover(vm, prepare=True),
        lambda _none: _prepared(host, vm),
        lambda refused: _prepare_checked(spec, hv, vm, host, refused),
    )


def _prepared(host: str, vm: str) -> StepOutcome:
    return StepOutcome(
        result={"state": RS.PREPARED_FOR_FAILOVER.value},
        undo=CancelPrepare(host=host, vm=vm),
    )


def _prepare_checked(
    spec: StepSpec, hv: HyperVHost, vm: str, host: str, refused: CmdletFailed | None
) -> StepOutcome:
    repl = require_replication(hv, spec, vm)
    if repl.state is RS.PREPARED_FOR_FAILOVER:
        return StepOutcome(result={"state": repl.state.value}, changed=False)
    if repl.mode is Mode.REPLICA:
        # The failover and reverse already happened: this host is the replica now.
        return StepOutcome(result={"state": repl.state.value, "mode": "Replica"}, changed=False)
    if repl.state is not RS.REPLICATING:
        raise invalid_state(
            spec,
            hv,
            vm,
            "Start-VMFailover -Prepare",
            repl,
            "it needs Replicating; resume replication (Resume-VMReplication) or use an "
            "unplanned failover",
        )
    info = require_vm(hv, spec, vm)
    if info.state not in OFF:
        raise invalid_state(
            spec,
            hv,
            vm,
            "Start-VMFailover -Prepare",
            repl,
            f"the VM is {info.state.value}; shut it down first (shutdown_primary step)",
        )
    act_checked(
        spec,
        host,
        "Start-VMFailover -Prepare",
        lambda: state_text(hv, vm),
        "Check the VM's replication health on the primary, then resume the run",
        lambda: hv.start_failover(vm, prepare=True),
        refused,
    )
    return _prepared(host, vm)


def failover(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """Start-VMFailover on the replica (the latest recovery point)."""
    vm, host = vm_of(spec), host_of(spec)
    hv = ctx.hyperv(host)
    point = input_of(spec, FailoverInput).recovery_point or None
    if point == "latest":
        point = None
    return act_first(
        ctx,
        lambda: hv.start_failover(vm, recovery_snapshot=point),
        lambda _none: _failed_over(ctx, host, vm, point),
        lambda refused: _failover_checked(ctx, spec, hv, vm, host, point, refused),
    )


def _failed_over(ctx: StepContext, host: str, vm: str, point: str | None) -> StepOutcome:
    return StepOutcome(
        result={"state": RS.FAILED_OVER_WAITING_COMPLETION.value, "recovery_point": point},
        undo=_failover_undo(ctx, host, vm),
    )


def _failover_checked(
    ctx: StepContext,
    spec: StepSpec,
    hv: HyperVHost,
    vm: str,
    host: str,
    point: str | None,
    refused: CmdletFailed | None,
) -> StepOutcome:
    repl = require_replication(hv, spec, vm)
    if repl.state in (RS.FAILED_OVER_WAITING_COMPLETION, RS.FAILED_OVER) or (
        repl.mode is Mode.PRIMARY
    ):
        return StepOutcome(
            result={"state": repl.state.value, "mode": repl.mode.value},
            undo=_failover_undo(ctx, host, vm) if repl.mode is Mode.REPLICA else None,
            changed=False,
        )
    if repl.state not in _FAILOVER_FROM:
        raise invalid_state(
            spec,
            hv,
            vm,
            "Start-VMFailover",
            repl,
            "it needs Replicating, Resynchronizing or Suspended with at least one completed "
            "replication; wait for replication to catch up, then resume",
        )
    info = require_vm(hv, spec, vm)
    if info.state not in OFF:
        raise invalid_state(
            spec,
            hv,
            vm,
            "Start-VMFailover",
            repl,
            f"the replica VM is {info.state.value}; turn it off on {host}, then resume",
        )
    act_checked(
        spec,
        host,
        "Start-VMFailover",
        lambda: state_text(hv, vm),
        "A replica needs at least one completed replication; check Get-VMReplication on "
        "the replica host, then resume the run",
        lambda: hv.start_failover(vm, recovery_snapshot=point),
        refused,
    )
    return _failed_over(ctx, host, vm, point)


def _failover_undo(ctx: StepContext, host: str, vm: str) -> CancelFailover:
    shutdown = ctx.prior.get("shutdown_primary", {})
    restart = None
    if shutdown.get("shut_down") and shutdown.get("host"):
        restart = SourceToRestart(host=str(shutdown["host"]), vm=vm)
    return CancelFailover(host=host, vm=vm, restart_source=restart)


def test_failover(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """Start-VMFailover -AsTest on the replica: creates "<VM> - Test"."""
    vm, host = vm_of(spec), host_of(spec)
    hv = ctx.hyperv(host)
    test_vm = name_of_test_vm(vm)
    undo = StopTestFailover(host=host, vm=vm)
    return act_first(
        ctx,
        lambda: hv.start_failover(vm, as_test=True),
        lambda _none: StepOutcome(result={"test_vm": test_vm}, undo=undo),
        lambda refused: _test_failover_checked(ctx, spec, hv, vm, host, refused),
    )


def _test_failover_checked(
    ctx: StepContext,
    spec: StepSpec,
    hv: HyperVHost,
    vm: str,
    host: str,
    refused: CmdletFailed | None,
) -> StepOutcome:
    test_vm = name_of_test_vm(vm)
    undo = StopTestFailover(host=host, vm=vm)
    if find_vm(hv, test_vm) is not None:
        if ctx.attempt > 1:
            # An earlier start of this step made it (a retry, a redelivery after a crash, a
            # resume): adopt it; the cleanup record is still needed though nothing ran now.
            return StepOutcome(
                result={"test_vm": test_vm, "existing": True}, undo=undo, changed=False
            )
        # On the step's first start the test VM is not this run's: a test failover nobody
        # cleaned up, or one made by hand. Adopting it would test an old copy of the VM and
        # then delete what someone else may still be using.
        raise LeftoverTestFailover(
            f"VM {vm}: the test VM {test_vm!r} already exists on {host}, left by an earlier "
            "test failover that was not cleaned up (or made by hand), so this test would not "
            f"test today's replica. Clean it up first: {leftover_cleanup(vm, host)}; then start "
            "the test again"
        )
    repl = require_replication(hv, spec, vm)
    if repl.state is not RS.REPLICATING or repl.mode is not Mode.REPLICA:
        raise invalid_state(
            spec,
            hv,
            vm,
            "Start-VMFailover -AsTest",
            repl,
            "a test failover needs the replica Replicating (not resynchronizing); wait for "
            "replication to recover, then resume",
        )
    act_checked(
        spec,
        host,
        "Start-VMFailover -AsTest",
        lambda: state_text(hv, vm),
        "Check that the replica has a completed replication, then resume the run",
        lambda: hv.start_failover(vm, as_test=True),
        refused,
    )
    return StepOutcome(result={"test_vm": test_vm}, undo=undo)


def test_cleanup(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """Stop-VMFailover on the replica: deletes "<VM> - Test"; nothing to do without it."""
    vm, host = vm_of(spec), host_of(spec)
    hv = ctx.hyperv(host)
    test_vm = name_of_test_vm(vm)
    if find_vm(hv, test_vm) is None:
        return StepOutcome(result={"test_vm": None}, changed=False)
    with refused_as_step_error(
        spec,
        host,
        "Stop-VMFailover",
        lambda: state_text(hv, vm),
        f"Delete {test_vm!r} by hand with Stop-VMFailover -VMName {vm}, then resume",
    ):
        hv.stop_failover(vm)
    return StepOutcome(result={"test_vm": None, "deleted": test_vm})


def commit(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """Complete-VMFailover on the replica (unplanned; irreversible)."""
    vm, host = vm_of(spec), host_of(spec)
    hv = ctx.hyperv(host)
    repl = require_replication(hv, spec, vm)
    if repl.state is RS.FAILED_OVER or repl.mode is Mode.PRIMARY:
        return StepOutcome(result={"state": repl.state.value}, changed=False)
    if repl.state is not RS.FAILED_OVER_WAITING_COMPLETION:
        raise invalid_state(
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
        lambda: state_text(hv, vm),
        "Check the VM on the replica host, then resume the run",
    ):
        hv.complete_failover(vm)
    return StepOutcome(result={"state": RS.FAILED_OVER.value})


def cancel_failover(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """Stop-VMFailover on an uncommitted failover (turning the failed-over VM off first)."""
    vm, host = vm_of(spec), host_of(spec)
    hv = ctx.hyperv(host)
    repl = require_replication(hv, spec, vm)
    if repl.state is not RS.FAILED_OVER_WAITING_COMPLETION:
        if repl.state is RS.FAILED_OVER or repl.mode is Mode.PRIMARY:
            raise invalid_state(
                spec,
                hv,
                vm,
                "Stop-VMFailover",
                repl,
                "the failover was committed or reversed and cannot be cancelled; fail back instead",
            )
        return StepOutcome(result={"state": repl.state.value}, changed=False)
    info = require_vm(hv, spec, vm)
    if info.state not in OFF:
        # The failed-over copy is discarded by the cancel; a clean shutdown buys nothing.
        hv.stop_vm(vm, turn_off=True)
    with refused_as_step_error(
        spec,
        host,
        "Stop-VMFailover",
        lambda: state_text(hv, vm),
        "Cancel the failover by hand with Stop-VMFailover, then resume",
    ):
        hv.stop_failover(vm)
    return StepOutcome(result={"state": RS.REPLICATING.value})


def cancel_prepare(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """Stop-VMFailover on a primary left PreparedForFailover (compensation only)."""
    vm, host = vm_of(spec), host_of(spec)
    hv = ctx.hyperv(host)
    repl = require_replication(hv, spec, vm)
    if repl.state is not RS.PREPARED_FOR_FAILOVER:
        return StepOutcome(result={"state": repl.state.value}, changed=False)
    with refused_as_step_error(
        spec,
        host,
        "Stop-VMFailover",
        lambda: state_text(hv, vm),
        "Cancel the prepared failover by hand with Stop-VMFailover, then resume",
    ):
        hv.stop_failover(vm)
    return StepOutcome(result={"state": RS.REPLICATING.value})
