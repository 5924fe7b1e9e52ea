"""Executors that turn replication around: reverse after a planned failover, and after an
unplanned one the old primary as replica, reverse to it, and the initial replication.

Each skips when the relationship already points the way the step leads; a relationship that
points somewhere else is refused rather than silently "fixed".
"""

from __future__ import annotations

from workers.errors import CmdletFailed
from workers.executors.base import (
    act_checked,
    act_first,
    host_of,
    input_of,
    refused_as_step_error,
    vm_of,
)
from workers.executors.context import StepContext
from workers.executors.errors import InvalidReplicationState
from workers.executors.lookup import (
    OFF,
    find_replication,
    find_vm,
    invalid_state,
    require_replication,
    require_vm,
    same_host,
    state_text,
)
from workers.hyperv.hyperv import HyperVHost
from workers.hyperv.states import ReplicationMode as Mode
from workers.hyperv.states import ReplicationState as RS
from workflows.inputs import ReverseInput, ReverseToInput, SetAsReplicaInput
from workflows.steps import StepOutcome, StepSpec
from workflows.waiting import wait_until


def reverse(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """Set-VMReplication -Reverse on the failed-over replica (planned failover)."""
    vm, host = vm_of(spec), host_of(spec)
    hv = ctx.hyperv(host)
    expected = input_of(spec, ReverseInput).replica_server
    # Reversing cannot be undone by a cancel: going back is a failback. A fresh reverse of a
    # planned failover replicates back to the primary the VM came from: the plan's host.
    return act_first(
        ctx,
        lambda: hv.set_replication_reverse(vm),
        lambda _none: StepOutcome(result={"mode": "Primary", "replica_server": expected or ""}),
        lambda refused: _reverse_checked(spec, hv, vm, host, expected, refused),
    )


def _reverse_checked(
    spec: StepSpec,
    hv: HyperVHost,
    vm: str,
    host: str,
    expected: str | None,
    refused: CmdletFailed | None,
) -> StepOutcome:
    repl = require_replication(hv, spec, vm)
    if repl.mode is Mode.PRIMARY:
        if expected and not same_host(repl.replica_server, str(expected)):
            raise invalid_state(
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
        raise invalid_state(
            spec,
            hv,
            vm,
            "Set-VMReplication -Reverse",
            repl,
            "reverse needs FailedOverWaitingCompletion on the replica (run the failover "
            "step first)",
        )
    act_checked(
        spec,
        host,
        "Set-VMReplication -Reverse",
        lambda: state_text(hv, vm),
        "Check that the old primary is reachable and prepared, then resume the run",
        lambda: hv.set_replication_reverse(vm),
        refused,
    )
    after = find_replication(hv, vm)
    return StepOutcome(
        result={"mode": "Primary", "replica_server": after.replica_server if after else ""}
    )


def set_as_replica(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """Set-VMReplication -AsReplica on the old primary (after an unplanned failover).

    An old primary that came back up running is shut down first: its data is about to be
    replaced by the initial replication from the new primary, and -AsReplica needs it off.
    """
    vm, host = vm_of(spec), host_of(spec)
    timeout = input_of(spec, SetAsReplicaInput).timeout
    hv = ctx.hyperv(host)
    repl = find_replication(hv, vm)
    if repl is not None and repl.mode is Mode.REPLICA:
        return StepOutcome(result={"mode": "Replica"}, changed=False)
    info = require_vm(hv, spec, vm)
    shut_down = False
    if info.state not in OFF:
        with refused_as_step_error(
            spec,
            host,
            "Stop-VM",
            lambda: state_text(hv, vm),
            "Turn the old primary off by hand, then resume the run",
        ):
            hv.stop_vm(vm, force=True)
        shut_down = True
        if wait_until(lambda: _off(hv, vm), timeout=timeout, interval=ctx.poll_interval) is None:
            raise InvalidReplicationState(
                f"old primary {vm} on {host} did not reach Off within {timeout:g}s after "
                "Stop-VM; turn it off by hand, then resume the run"
            )
    with refused_as_step_error(
        spec,
        host,
        "Set-VMReplication -AsReplica",
        lambda: state_text(hv, vm),
        "Make sure the old primary VM is off and not failed over, then resume the run",
    ):
        hv.set_replication_as_replica(vm)
    return StepOutcome(result={"mode": "Replica", "shut_down": shut_down})


def _off(hv: HyperVHost, vm: str) -> bool | None:
    info = find_vm(hv, vm)
    return True if info is not None and info.state in OFF else None


def reverse_to(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """Set-VMReplication -Reverse -ReplicaServerName on the committed new primary."""
    vm, host = vm_of(spec), host_of(spec)
    replica_server = input_of(spec, ReverseToInput).replica_server
    hv = ctx.hyperv(host)
    repl = require_replication(hv, spec, vm)
    if repl.mode is Mode.PRIMARY:
        if not same_host(repl.replica_server, replica_server):
            raise invalid_state(
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
        lambda: state_text(hv, vm),
        f"Run set_as_replica on {replica_server} first and commit the failover, then resume",
    ):
        hv.set_replication_reverse(vm, replica_server)
    return StepOutcome(result={"replica_server": replica_server})


def start_initial_replication(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """Start-VMInitialReplication on the new primary; skip once it has started."""
    vm, host = vm_of(spec), host_of(spec)
    hv = ctx.hyperv(host)
    repl = require_replication(hv, spec, vm)
    if repl.state is not RS.READY_FOR_INITIAL_REPLICATION:
        if repl.mode is Mode.PRIMARY and repl.state is not RS.DISABLED:
            return StepOutcome(result={"state": repl.state.value}, changed=False)
        raise invalid_state(
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
        lambda: state_text(hv, vm),
        "Check the replica server's Hyper-V Replica listener, then resume the run",
    ):
        hv.start_initial_replication(vm)
    after = find_replication(hv, vm)
    return StepOutcome(result={"state": after.state.value if after else "unknown"})
