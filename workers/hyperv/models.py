"""Typed views of Hyper-V and VMM cmdlet output, read from PSRP output dicts.

Readers accept the property names the real cmdlets use and parse enums by name, times from
their CLIXML text, and are strict only where a wrong guess would be dangerous (a missing
replication state is an error, not "Disabled").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from workers.errors import RemotePermanentError
from workers.hyperv.states import ReplicationHealth, ReplicationMode, ReplicationState, VMState


@dataclass(frozen=True)
class VMInfo:
    """``Get-VM``: a VM on one Hyper-V host (``host`` as the host reports its name, which
    Hyper-V upper-cases: compare host names case-insensitively)."""

    name: str
    id: str
    state: VMState
    host: str
    replication_state: ReplicationState | None = None
    replication_mode: ReplicationMode | None = None
    replication_health: ReplicationHealth | None = None

    @classmethod
    def from_output(cls, obj: Mapping[str, Any]) -> VMInfo:
        """Read one ``Microsoft.HyperV.PowerShell.VirtualMachine``."""
        return cls(
            name=str(require(obj, "Name", "VMName")),
            id=str(first(obj, "Id", "VMId") or ""),
            state=VMState.parse(require(obj, "State")),
            host=str(first(obj, "ComputerName") or ""),
            replication_state=_optional(ReplicationState, first(obj, "ReplicationState")),
            replication_mode=_optional(ReplicationMode, first(obj, "ReplicationMode")),
            replication_health=_optional(ReplicationHealth, first(obj, "ReplicationHealth")),
        )


@dataclass(frozen=True)
class ReplicationInfo:
    """``Get-VMReplication``: one VM's replication relationship as seen from one host."""

    vm_name: str
    state: ReplicationState
    health: ReplicationHealth
    mode: ReplicationMode
    primary_server: str
    replica_server: str
    frequency: int
    last_replication_time: datetime | None

    @classmethod
    def from_output(cls, obj: Mapping[str, Any]) -> ReplicationInfo:
        """Read one ``Microsoft.HyperV.PowerShell.VMReplication``."""
        frequency = first(obj, "FrequencySec", "ReplicationFrequencySec", "Frequency")
        return cls(
            vm_name=str(require(obj, "VMName", "Name")),
            state=ReplicationState.parse(require(obj, "State", "ReplicationState")),
            health=ReplicationHealth.parse(require(obj, "Health", "ReplicationHealth")),
            mode=ReplicationMode.parse(require(obj, "Mode", "ReplicationMode")),
            primary_server=str(first(obj, "PrimaryServer", "PrimaryServerName") or ""),
            replica_server=str(first(obj, "ReplicaServer", "ReplicaServerName") or ""),
            frequency=int(frequency) if frequency not in (None, "") else 0,
            last_replication_time=parse_time(first(obj, "LastReplicationTime")),
        )


@dataclass(frozen=True)
class Adapter:
    """``Get-VMNetworkAdapter``: one virtual NIC, its switch and the guest's addresses."""

    name: str
    switch: str | None
    ip_addresses: tuple[str, ...]
    id: str
    mac_address: str = ""

    @classmethod
    def from_output(cls, obj: Mapping[str, Any]) -> Adapter:
        """Read one ``Microsoft.HyperV.PowerShell.VMNetworkAdapter``."""
        switch = first(obj, "SwitchName")
        return cls(
            name=str(first(obj, "Name") or ""),
            switch=str(switch) if switch else None,
            ip_addresses=tuple(str(a) for a in as_list(first(obj, "IPAddresses"))),
            id=str(first(obj, "Id", "AdapterId") or ""),
            mac_address=str(first(obj, "MacAddress") or ""),
        )


@dataclass(frozen=True)
class RecoveryPoint:
    """``Get-VMSnapshot`` on a replica: a point ``Start-VMFailover`` can recover to."""

    name: str
    id: str
    snapshot_type: str
    created: datetime | None
    vm_name: str = ""

    @classmethod
    def from_output(cls, obj: Mapping[str, Any]) -> RecoveryPoint:
        """Read one ``Microsoft.HyperV.PowerShell.VMSnapshot``."""
        return cls(
            vm_name=str(first(obj, "VMName") or ""),
            name=str(require(obj, "Name")),
            id=str(first(obj, "Id") or ""),
            snapshot_type=str(first(obj, "SnapshotType") or ""),
            created=parse_time(first(obj, "CreationTime")),
        )


class UnexpectedOutput(RemotePermanentError):
    """A cmdlet's output lacked a property Ferryman needs (an unsupported module version?)."""


def first(obj: Mapping[str, Any], *names: str) -> Any:
    """The value of the first of ``names`` present (case-insensitive), else None."""
    lowered = {k.lower(): v for k, v in obj.items()}
    for name in names:
        if name.lower() in lowered and lowered[name.lower()] is not None:
            return lowered[name.lower()]
    return None


def require(obj: Mapping[str, Any], *names: str) -> Any:
    """Like :func:`first` but a missing property raises :class:`UnexpectedOutput`."""
    value = first(obj, *names)
    if value is None:
        raise UnexpectedOutput(
            f"cmdlet output has no {' or '.join(names)} property (has: {', '.join(obj) or 'none'})"
            "; check the host's Hyper-V/VMM module version"
        )
    return value


def as_list(value: Any) -> list[Any]:
    """A property that PowerShell may send as one value, a list, or nothing."""
    if value is None or value == "":
        return []
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


_FRACTION = re.compile(r"\.(\d+)")


def parse_time(value: Any) -> datetime | None:
    """A CLIXML DateTime (``2026-11-29T14:30:00.1234567+00:00`` or ``...Z``) as aware UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        text = str(value).strip().replace("Z", "+00:00")
        # .NET writes 7 fractional digits; Python reads at most 6.
        text = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), text, count=1)
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _optional(enum_cls: Any, value: Any) -> Any:
    return None if value in (None, "") else enum_cls.parse(value)
