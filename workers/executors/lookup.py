"""Reads that tolerate absence: "is the VM (or its test VM, or its replication) there?".

``HyperVHost.get_vm`` and ``get_replication`` fail with :class:`CmdletFailed` when there is
nothing to read; an idempotent step needs "not there" as an answer, not an error, so these
helpers turn exactly the not-found errors into None and let every other error through.
"""

from __future__ import annotations

from workers.errors import CmdletFailed
from workers.hyperv.hyperv import HyperVHost
from workers.hyperv.models import ReplicationInfo, VMInfo

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
