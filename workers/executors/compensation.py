"""Compensation: executing the undo records the executors return.

An undo record is JSON: ``{"action": ..., "host": ..., "vm": ..., ...}``. Each action runs
through the same idempotent executor a forward step would use, so compensating twice, or
compensating something already undone by hand, changes nothing the second time.

=========================  ========================================================
action                     what it does
=========================  ========================================================
``stop_test_failover``     Stop-VMFailover on the replica: deletes "<VM> - Test"
``cancel_failover``        turn the failed-over VM off, Stop-VMFailover; then
                           Start-VM on ``restart_source`` (if Ferryman shut it down)
``cancel_prepare``         Stop-VMFailover on a primary left PreparedForFailover
``start_vm``               Start-VM (the source VM Ferryman shut down)
``stop_vm``                turn a started VM off
``connect_network``        back to the previous switch (None: disconnected)
``restore_dns``            put back the records UPDATE_DNS captured
``script``                 the action's undo script
``remove_replication``     Remove-VMReplication on both ends (protection enabled)
``set_replication``        Set-VMReplication back to the settings found before
=========================  ========================================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from workers.executors import dns, failover, machine, protection, script
from workers.executors.context import StepContext
from workers.executors.errors import StepParamsError
from workflows.steps import StepKind, StepOutcome, StepSpec

_ACTIONS: dict[str, tuple[StepKind, Callable[[StepContext, StepSpec], StepOutcome]]] = {
    "stop_test_failover": (StepKind.TEST_CLEANUP, failover.test_cleanup),
    "cancel_failover": (StepKind.CANCEL_FAILOVER, failover.cancel_failover),
    "cancel_prepare": (StepKind.CANCEL_FAILOVER, failover.cancel_prepare),
    "start_vm": (StepKind.START_VM, machine.start_vm),
    "stop_vm": (StepKind.START_VM, machine.stop_vm),
    "connect_network": (StepKind.CONNECT_NETWORK, machine.restore_network),
    "restore_dns": (StepKind.RESTORE_DNS, dns.restore_dns),
    "script": (StepKind.SCRIPT, script.script),
    "remove_replication": (StepKind.REMOVE_REPLICATION, protection.remove_replication),
    "set_replication": (StepKind.SET_REPLICATION, protection.set_replication),
}


def _spec(action: str, kind: StepKind, undo: Mapping[str, Any]) -> StepSpec:
    params = {k: v for k, v in undo.items() if k not in ("action", "host", "vm")}
    vm = undo.get("vm") or undo.get("vm_name")
    if kind in (StepKind.START_VM, StepKind.CONNECT_NETWORK):
        # Compensation names its VM exactly; never re-derive the test VM's name.
        params.setdefault("vm_name", vm)
    return StepSpec(
        key=f"undo:{action}:{vm or undo.get('name', '')}",
        kind=kind,
        vm=str(vm) if vm else None,
        host=str(undo["host"]) if undo.get("host") else None,
        params=params,
    )


def compensate(ctx: StepContext, undo: dict[str, Any]) -> None:
    """Execute one undo record (idempotent); raises like a step would."""
    outcome_of(ctx, undo)


def outcome_of(ctx: StepContext, undo: Mapping[str, Any]) -> StepOutcome:
    """Execute one undo record and return what it did (``changed=False``: nothing to undo)."""
    action = str(undo.get("action", ""))
    entry = _ACTIONS.get(action)
    if entry is None:
        known = ", ".join(sorted(_ACTIONS))
        raise StepParamsError(f"unknown undo action {action!r} (known: {known})")
    kind, executor = entry
    outcome = executor(ctx, _spec(action, kind, undo))
    restart = undo.get("restart_source") if action == "cancel_failover" else None
    if isinstance(restart, Mapping):
        # A planned failover left the source PreparedForFailover; undo that before starting it.
        outcome_of(ctx, {"action": "cancel_prepare", **restart})
        started = outcome_of(ctx, {"action": "start_vm", **restart})
        outcome.result["restarted_source"] = started.changed
        outcome.changed = outcome.changed or started.changed
    return outcome


def compensate_step(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """A COMPENSATE step: run the undo record in ``params["undo"]``."""
    undo = spec.params.get("undo")
    if not isinstance(undo, Mapping):
        raise StepParamsError(f"step {spec.key}: compensate needs params.undo (an undo record)")
    return outcome_of(ctx, undo)
