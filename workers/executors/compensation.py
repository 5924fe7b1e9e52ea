"""Compensation: executing the undo records the executors return.

An undo record is one model per action (:data:`~workflows.inputs.UndoRecord`). Each runs
through the same idempotent code a forward step uses, so compensating twice, or compensating
something already undone by hand, changes nothing the second time.

=========================  ========================================================
record (action)            what it does
=========================  ========================================================
``StopTestFailover``       Stop-VMFailover on the replica: deletes "<VM> - Test"
``CancelFailover``         turn the failed-over VM off, Stop-VMFailover; then
                           Stop-VMFailover and Start-VM on ``restart_source``
                           (the source VM, if Ferryman shut it down)
``CancelPrepare``          Stop-VMFailover on a primary left PreparedForFailover
``StartVm``                Start-VM (the source VM Ferryman shut down)
``StopVm``                 turn a started VM off
``RestoreNetwork``         back to the previous switch (None: disconnected)
``RestoreDns``             put back the records UPDATE_DNS captured
``UndoScript``             the action's undo script (at most once, like any script)
``RemoveReplication``      Remove-VMReplication on both ends (protection enabled)
``RestoreReplication...``  Set-VMReplication back to the settings found before
=========================  ========================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workers.executors import dns, failover, machine, protection, script
from workers.executors.base import input_of
from workers.executors.context import StepContext
from workflows.inputs import (
    CancelFailover,
    CancelPrepare,
    CompensateInput,
    RemoveReplication,
    RemoveReplicationInput,
    RestoreDns,
    RestoreNetwork,
    RestoreReplicationSettings,
    ScriptInput,
    SetReplicationInput,
    StartVm,
    StopTestFailover,
    StopVm,
    UndoRecord,
    UndoScript,
    undo_record,
)
from workflows.steps import StepKind, StepOutcome, StepSpec


def _spec(undo: UndoRecord, kind: StepKind, vm: str) -> StepSpec:
    """The step an undo record runs as: its key, the forward kind its messages name, its VM."""
    return StepSpec(f"undo:{undo.action}:{vm}", kind, vm, getattr(undo, "host", None))


def compensate(ctx: StepContext, undo: UndoRecord | Mapping[str, Any]) -> None:
    """Execute one undo record (idempotent); raises like a step would."""
    outcome_of(ctx, undo)


def outcome_of(ctx: StepContext, undo: UndoRecord | Mapping[str, Any]) -> StepOutcome:
    """Execute one undo record and return what it did (``changed=False``: nothing to undo)."""
    record = undo_record(undo)
    match record:
        case StopTestFailover():
            return failover.test_cleanup(ctx, _spec(record, StepKind.TEST_CLEANUP, record.vm))
        case CancelFailover():
            return _cancel_failover(ctx, record)
        case CancelPrepare():
            return failover.cancel_prepare(ctx, _spec(record, StepKind.CANCEL_FAILOVER, record.vm))
        case StartVm():
            step = _spec(record, StepKind.START_VM, record.vm)
            return machine.power_on(ctx, step, record.host, record.vm)
        case StopVm():
            return machine.stop_vm(ctx, record)
        case RestoreNetwork():
            step = _spec(record, StepKind.CONNECT_NETWORK, record.vm)
            return machine.restore_network(ctx, step, record)
        case RestoreDns():
            return dns.restore_snapshots(ctx, record.snapshots)
        case UndoScript():
            params = ScriptInput(
                script=record.script,
                parameters=record.parameters,
                timeout=record.timeout,
                name=record.name,
            )
            return script.script(ctx, _spec_script(record, params))
        case RemoveReplication():
            remove = RemoveReplicationInput(replica_host=record.replica_host)
            step = StepSpec(
                f"undo:{record.action}:{record.vm}",
                StepKind.REMOVE_REPLICATION,
                record.vm,
                record.host,
                remove,
            )
            return protection.remove_replication(ctx, step)
        case RestoreReplicationSettings():
            back = SetReplicationInput(settings=record.settings)
            step = StepSpec(
                f"undo:{record.action}:{record.vm}",
                StepKind.SET_REPLICATION,
                record.vm,
                record.host,
                back,
            )
            return protection.set_replication(ctx, step)


def _spec_script(record: UndoScript, params: ScriptInput) -> StepSpec:
    return StepSpec(f"undo:script:{record.name}", StepKind.SCRIPT, None, record.host, params)


def _cancel_failover(ctx: StepContext, record: CancelFailover) -> StepOutcome:
    outcome = failover.cancel_failover(ctx, _spec(record, StepKind.CANCEL_FAILOVER, record.vm))
    restart = record.restart_source
    if restart is not None:
        # A planned failover left the source PreparedForFailover; undo that before starting it.
        outcome_of(ctx, CancelPrepare(host=restart.host, vm=restart.vm))
        started = outcome_of(ctx, StartVm(host=restart.host, vm=restart.vm))
        outcome.result["restarted_source"] = started.changed
        outcome.changed = outcome.changed or started.changed
    return outcome


def compensate_step(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """A COMPENSATE step: run the undo record its input carries."""
    return outcome_of(ctx, input_of(spec, CompensateInput).undo)
