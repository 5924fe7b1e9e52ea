"""Reading a VM's state: absence as an answer, requirements as errors, state as text.

``HyperVHost.get_vm`` and ``get_replication`` fail with :class:`CmdletFailed` when there is
nothing to read; an idempotent step needs "not there" as an answer, not an error, so these
helpers turn exactly the not-found errors into None and let every other error through.
"""

from __future__ import annotations

from workers.errors import CmdletFailed
from workers.executors.errors import InvalidReplicationState, VmNotFound
from workers.hyperv.hyperv import HyperVHost
from workers.hyperv.models import Adapter, ReplicationInfo, VMInfo
from workers.hyperv.states import VMState
from workflows.steps import StepSpec

OFF = frozenset({VMState.OFF, VMState.OFF_CRITICAL})

# Message fragments Hyper-V (and the lab) use when the object does not exist or is not
# replicated; compared in lower case.
_ABSENT = ("unable to find", "was not found", "found no vm", "not found", "objectnotfound")
_NOT_REPLICATED = ("replication is not enabled", "not enabled for replication")


def is_not_found(exc: CmdletFailed) -> bool:
    """Whether a cmdlet error says the object does not exist (by category or message)."""
    if exc.category == "ObjectNotFound" or exc.fully_qualified_error_id == "ObjectNotFound":
        return True
    text = str(exc).lower()
    return any(fragment in text for fragment in _ABSENT)


def find_vm(hv: HyperVHost, name: str) -> VMInfo | None:
    """The VM called ``name`` on the host, or None when there is none."""
    try:
        info = hv.get_vm(name)
    except CmdletFailed as exc:
        if is_not_found(exc):
            return None
        raise
    return info if info.name == name else None


def find_replication(hv: HyperVHost, vm: str) -> ReplicationInfo | None:
    """The VM's replication, or None when the VM is missing or not replicated."""
    try:
        return hv.get_replication(vm)
    except CmdletFailed as exc:
        text = str(exc).lower()
        if is_not_found(exc) or any(fragment in text for fragment in _NOT_REPLICATED):
            return None
        raise


def vm_not_found(hv: HyperVHost, spec: StepSpec, name: str, hint: str = "") -> VmNotFound:
    """The :class:`VmNotFound` for ``name``: the host, the step and what to check."""
    todo = hint or "check the fabric's primary/replica hosts for this VM"
    return VmNotFound(f"VM {name!r} is not on host {hv.host_name} (step {spec.kind}); {todo}")


def require_vm(hv: HyperVHost, spec: StepSpec, name: str, hint: str = "") -> VMInfo:
    """The VM ``name``, or :class:`VmNotFound` naming the host, the step and what to check."""
    info = find_vm(hv, name)
    if info is None:
        raise vm_not_found(hv, spec, name, hint)
    return info


def require_adapters(hv: HyperVHost, spec: StepSpec, name: str, hint: str = "") -> list[Adapter]:
    """The VM's network adapters (``Get-VMNetworkAdapter``), with no ``Get-VM`` before it.

    Hyper-V answers the read for a VM it does not have with the same not-found error as
    ``Get-VM`` ("unable to find a virtual machine"), so that error becomes the
    :class:`VmNotFound` :func:`require_vm` gives; every other error goes through.
    """
    try:
        return hv.get_network_adapters(name)
    except CmdletFailed as exc:
        if is_not_found(exc):
            raise vm_not_found(hv, spec, name, hint) from exc
        raise


def require_replication(hv: HyperVHost, spec: StepSpec, vm: str) -> ReplicationInfo:
    """The VM's replication; a missing VM or a VM without replication is an error."""
    repl = find_replication(hv, vm)
    if repl is None:
        require_vm(hv, spec, vm)
        raise InvalidReplicationState(
            f"VM {vm} on {hv.host_name} is not replicated (state Disabled); {spec.kind} needs "
            "Hyper-V Replica enabled: enable protection first"
        )
    return repl


def describe(vm: VMInfo | None, repl: ReplicationInfo | None) -> str:
    """The state a message reports: ``VM Off, replication Replicating (mode Replica), ...``."""
    parts = [f"VM {vm.state.value}" if vm else "VM not found"]
    if repl is not None:
        parts.append(f"replication {repl.state.value} (mode {repl.mode.value})")
        parts.append(f"health {repl.health.value}")
    elif vm is not None and vm.replication_state is not None:
        parts.append(f"replication {vm.replication_state.value}")
    return ", ".join(parts)


def state_text(hv: HyperVHost, vm: str) -> str:
    """:func:`describe` of the VM as the host reports it now."""
    info = find_vm(hv, vm)
    return describe(info, find_replication(hv, vm) if info is not None else None)


def invalid_state(
    spec: StepSpec, hv: HyperVHost, vm: str, cmdlet: str, repl: ReplicationInfo, todo: str
) -> InvalidReplicationState:
    """The error for a cmdlet the VM's replication state does not allow, with what to do."""
    return InvalidReplicationState(
        f"{cmdlet} for VM {vm} on {hv.host_name} is not possible in replication "
        f"{repl.state.value}, mode {repl.mode.value} (step {spec.kind}); {todo}"
    )


def same_host(reported: str, expected: str) -> bool:
    """Whether a server name Hyper-V reports (often an FQDN) is the plan's host name."""
    return reported.lower().split(".")[0] == expected.lower().split(".")[0]
