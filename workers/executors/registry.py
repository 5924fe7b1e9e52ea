"""The executor registry: one function per StepKind, and :func:`run_step` dispatching on it.

=========================  =======================================  ===========================
kind (host)                does                                     does nothing when
=========================  =======================================  ===========================
shutdown_primary (prim.)   Stop-VM -Force, waits for Off            VM Off; best_effort: any
                                                                    failure is a warning
prepare_failover (prim.)   Start-VMFailover -Prepare                PreparedForFailover, or the
                                                                    host is already the replica
failover (replica)         Start-VMFailover [recovery point]        FailedOverWaiting.../
                                                                    FailedOver, or mode Primary
test_failover (replica)    Start-VMFailover -AsTest                 "<VM> - Test" exists
reverse (replica)          Set-VMReplication -Reverse               mode Primary
connect_network            Connect-VMNetworkAdapter (test VM in     every adapter on the switch;
                           a test run)                              switch None
start_vm                   [start_delay] Start-VM, waits Running    Running
wait_ip                    polls Hyper-V or VMM for an address      (read only)
update_dns                 switch + verify each record, undo keeps  records already point there
                           the previous records
restore_dns                put captured records back                zone already matches
test_cleanup (replica)     Stop-VMFailover: deletes the test VM     no test VM
commit (replica)           Complete-VMFailover                      FailedOver / mode Primary
cancel_failover (replica)  turn off, Stop-VMFailover                nothing failed over
set_as_replica (old prim.) [Stop-VM] Set-VMReplication -AsReplica   mode Replica
reverse_to (new prim.)     Set-VMReplication -Reverse -Replica...   mode Primary toward it
start_initial_replication  Start-VMInitialReplication               past ReadyForInitial...
script (VMM/any host)      the plan's script; errors: ScriptFailed  (never skipped)
health_check               Running and health not Critical          (read only)
compensate                 runs its input's undo record             as the undo action
enable_replication ...     protection runs: see executors.protection
=========================  =======================================  ===========================

A command whose answer was lost (:class:`~workers.errors.OutcomeUnknown`) is retried only by
a step that reads its effect back first; a script (or a compensation running an undo
script) fails instead and runs again only when an operator resumes it, unless the plan says
it is safe to run twice (``rerun_on_redelivery: true``).
"""

from __future__ import annotations

from workers.errors import OutcomeUnknown
from workers.executors import dns, failover, machine, protection, reversal, script
from workers.executors.base import StepFunction
from workers.executors.compensation import compensate_step
from workers.executors.context import StepContext
from workers.executors.errors import StepParamsError
from workflows.inputs import CompensateInput, ScriptInput, UndoScript
from workflows.steps import StepKind, StepOutcome, StepSpec

EXECUTORS: dict[StepKind, StepFunction] = {
    StepKind.SHUTDOWN_PRIMARY: failover.shutdown_primary,
    StepKind.PREPARE_FAILOVER: failover.prepare_failover,
    StepKind.FAILOVER: failover.failover,
    StepKind.TEST_FAILOVER: failover.test_failover,
    StepKind.REVERSE: reversal.reverse,
    StepKind.CONNECT_NETWORK: machine.connect_network,
    StepKind.START_VM: machine.start_vm,
    StepKind.WAIT_IP: machine.wait_ip,
    StepKind.UPDATE_DNS: dns.update_dns,
    StepKind.RESTORE_DNS: dns.restore_dns,
    StepKind.TEST_CLEANUP: failover.test_cleanup,
    StepKind.COMMIT: failover.commit,
    StepKind.CANCEL_FAILOVER: failover.cancel_failover,
    StepKind.SET_AS_REPLICA: reversal.set_as_replica,
    StepKind.REVERSE_TO: reversal.reverse_to,
    StepKind.START_INITIAL_REPLICATION: reversal.start_initial_replication,
    StepKind.SCRIPT: script.script,
    StepKind.HEALTH_CHECK: machine.health_check,
    # The engine's compensation runs carry an undo record in params["undo"].
    StepKind.COMPENSATE: compensate_step,
    StepKind.ENABLE_REPLICATION: protection.enable_replication,
    StepKind.INITIAL_REPLICATION: protection.initial_replication,
    StepKind.SET_REPLICATION: protection.set_replication,
    StepKind.REMOVE_REPLICATION: protection.remove_replication,
    StepKind.DELETE_REPLICA: protection.delete_replica,
}


def run_step(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """Execute one step idempotently; raises TransientError / PermanentError subclasses."""
    executor = EXECUTORS.get(spec.kind)
    if executor is None:
        raise StepParamsError(
            f"step {spec.key}: {spec.kind} steps are not executed by workers "
            "(a manual step is a gate the engine holds); recompile the run"
        )
    try:
        return executor(ctx, spec)
    except OutcomeUnknown as exc:
        if safe_to_repeat(spec):
            exc.retryable = True  # running again reads the effect and does nothing twice
            raise
        host = exc.host or spec.host or "its host"
        raise OutcomeUnknown(
            f"outcome unknown on {host}: check, then `ferryman runs resume {ctx.run_id}` or "
            f"`ferryman runs skip {ctx.run_id}` ({exc}; a {spec.kind} step cannot read back "
            "whether it took effect, so it was not run again)",
            host=host,
            doing=exc.doing,
        ) from exc


def safe_to_repeat(spec: StepSpec) -> bool:
    """Whether running the step again after a lost answer is harmless.

    Every Hyper-V and DNS step reads its effect back before acting again; an operator's
    script (and the compensation that runs a script's undo) cannot, unless the plan says the
    script is safe to run twice (``rerun_on_redelivery: true``).
    """
    params = spec.params
    if isinstance(params, ScriptInput):
        return params.rerun_on_redelivery
    return not (isinstance(params, CompensateInput) and isinstance(params.undo, UndoScript))
