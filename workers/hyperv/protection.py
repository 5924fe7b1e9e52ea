"""Typed protection cmdlets on one Hyper-V host: read a relationship's settings and statistics,
change its settings, remove it, complete an offline initial replication, and the Replica
server's storage (its default location and the authorization entry of a primary server).

Like :class:`~workers.hyperv.hyperv.HyperVHost`, every call is one cmdlet with named
parameters, and any error record fails it with :class:`~workers.errors.CmdletFailed`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from workers.hyperv.hyperv import HyperVHost, escape_wildcards, failed, named
from workers.hyperv.models import first, parse_time, require

# Settings as the protection profile names them -> Set-VMReplication's parameters.
SET_PARAMETERS = {
    "frequency": "ReplicationFrequencySec",
    "recovery_history": "RecoveryHistory",
    "vss_hours": "VSSSnapshotFrequencyHour",
    "compression": "CompressionEnabled",
    "authentication": "AuthenticationType",
    "port": "ReplicaServerPort",
}


@dataclass(frozen=True)
class Relationship:
    """``Get-VMReplication`` with the settings, plus ``Measure-VMReplication``'s backlog."""

    vm: str
    state: str
    mode: str
    health: str
    primary_server: str
    replica_server: str
    frequency: int
    recovery_history: int
    vss_hours: int
    compression: bool
    authentication: str
    port: int
    last_replication: datetime | None
    pending_bytes: int = 0

    @classmethod
    def from_output(cls, obj: Mapping[str, Any], pending: int = 0) -> Relationship:
        """Read one ``Microsoft.HyperV.PowerShell.VMReplication``."""
        return cls(
            vm=str(require(obj, "VMName", "Name")),
            state=str(require(obj, "State", "ReplicationState")),
            mode=str(require(obj, "Mode", "ReplicationMode")),
            health=str(require(obj, "Health", "ReplicationHealth")),
            primary_server=str(first(obj, "PrimaryServer", "PrimaryServerName") or ""),
            replica_server=str(first(obj, "ReplicaServer", "ReplicaServerName") or ""),
            frequency=int(first(obj, "FrequencySec", "ReplicationFrequencySec") or 0),
            recovery_history=int(first(obj, "RecoveryHistory") or 0),
            vss_hours=int(first(obj, "VSSSnapshotFrequencyHour") or 0),
            compression=bool(first(obj, "CompressionEnabled")),
            authentication=str(first(obj, "AuthenticationType", "AuthType") or ""),
            port=int(first(obj, "ReplicaServerPort", "ReplicaPort") or 0),
            last_replication=parse_time(first(obj, "LastReplicationTime")),
            pending_bytes=pending,
        )


class ProtectionHost:
    """Protection cmdlets on one Hyper-V host (a :class:`HyperVHost`'s runner and name)."""

    def __init__(self, host: HyperVHost) -> None:
        self.host = host

    def relationships(self, vm: str | None = None) -> list[Relationship]:
        """Every relationship on the host (or ``vm``'s), with pending bytes from Measure."""
        params: dict[str, Any] = {} if vm is None else {"VMName": escape_wildcards(vm)}
        found = self.host._call("Get-VMReplication", params).output
        stats = self.host._call("Measure-VMReplication", params).output
        pending = {
            str(first(s, "VMName", "Name")).lower(): int(first(s, "PendingReplicationSize") or 0)
            for s in stats
        }
        out = [
            Relationship.from_output(o, pending.get(str(first(o, "VMName", "Name")).lower(), 0))
            for o in found
        ]
        return out if vm is None else [r for r in out if r.vm.casefold() == vm.casefold()]

    def relationship(self, vm: str) -> Relationship | None:
        """``vm``'s relationship on this host, or None when it does not replicate."""
        vms = named(self.host._call("Get-VM", {"Name": escape_wildcards(vm)}).output, vm, ("Name",))
        if not vms or str(first(vms[0], "ReplicationState") or "Disabled") == "Disabled":
            return None
        found = self.relationships(vm)
        return found[0] if found else None

    def clock(self) -> datetime | None:
        """The host's own clock now (``Get-Date -Format o``: the round-trip text, with its UTC
        offset), as aware UTC; what a replication's age is measured against, so the caller's
        clock, zone or skew never enters it."""
        found = self.host._call("Get-Date", {"Format": "o"}).output
        return parse_time(first(found[0], "Value")) if found else None

    def has_vm(self, vm: str) -> bool:
        """Whether a VM called ``vm`` is on this host (Hyper-V's "unable to find" error, a
        non-terminating one, is the answer no, not a failure)."""
        result = self.host.runner.run("Get-VM", {"Name": escape_wildcards(vm)})
        if named(result.output, vm, ("Name", "VMName")):
            return True
        if result.errors and not all(_not_found(e.fully_qualified_error_id) for e in result.errors):
            raise failed(self.host.host_name, "Get-VM", result)
        return False

    def set_settings(self, vm: str, settings: Mapping[str, Any]) -> None:
        """``Set-VMReplication`` with the given profile settings (by profile name)."""
        params: dict[str, Any] = {"VMName": escape_wildcards(vm)}
        for name, value in settings.items():
            if name == "vss_hours" and not value:
                continue  # 0 is "off": Hyper-V takes no value for it, only its absence
            params[SET_PARAMETERS[name]] = value
        self.host._call("Set-VMReplication", params)

    def remove_replication(self, vm: str) -> None:
        """``Remove-VMReplication``: this end stops replicating."""
        self.host._call("Remove-VMReplication", {"VMName": escape_wildcards(vm)})

    def remove_vm(self, vm: str) -> None:
        """``Remove-VM -Force``: deletes the VM (a replica, once replication is removed)."""
        self.host._call("Remove-VM", {"Name": escape_wildcards(vm), "Force": True})

    def import_initial(self, vm: str, path: str) -> None:
        """``Import-VMInitialReplication -Path`` on the replica: completes an offline copy."""
        self.host._call(
            "Import-VMInitialReplication", {"VMName": escape_wildcards(vm), "Path": path}
        )

    def default_storage(self) -> str:
        """The Replica server's ``DefaultStorageLocation``."""
        (server,) = self.host._call("Get-VMReplicationServer", {}).output[:1] or ({},)
        return str(first(server, "DefaultStorageLocation") or "")

    def storage_for(self, primary: str) -> str | None:
        """Where replicas from ``primary`` are stored, by its authorization entry (if any)."""
        entries = self.host._call(
            "Get-VMReplicationAuthorizationEntry", {"AllowedPrimaryServer": primary}
        ).output
        return str(first(entries[0], "ReplicaStorageLocation")) if entries else None

    def authorize(self, primary: str, location: str, trust_group: str) -> bool:
        """Replicas from ``primary`` go to ``location``: create or change its authorization
        entry; False when it already says so."""
        current = self.storage_for(primary)
        if current == location:
            return False
        params = {"AllowedPrimaryServer": primary, "ReplicaStorageLocation": location}
        if current is None:
            self.host._call(
                "New-VMReplicationAuthorizationEntry", {**params, "TrustGroup": trust_group}
            )
        else:
            self.host._call("Set-VMReplicationAuthorizationEntry", params)
        return True


def _not_found(error_id: str) -> bool:
    """Whether a Get-VM error id says the VM is not there (InvalidParameter/ObjectNotFound)."""
    return error_id.startswith(("InvalidParameter,", "ObjectNotFound"))
