"""Every command the lab answers, by lower-case name."""

from __future__ import annotations

from lab.hyperv import cmdlets, dns, failover, relationship, replicaserver, replication, vmm
from lab.hyperv.context import Cmdlet

REGISTRY: dict[str, Cmdlet] = {
    c.signature.cmdlet.lower(): c
    for c in (
        *cmdlets.CMDLETS,
        *replication.CMDLETS,
        *failover.CMDLETS,
        *relationship.CMDLETS,
        *replicaserver.CMDLETS,
        *vmm.CMDLETS,
        *dns.CMDLETS,
    )
}


def lookup(name: str) -> Cmdlet | None:
    """The cmdlet called ``name`` (case-insensitive), if the lab implements it."""
    return REGISTRY.get(name.lower())
