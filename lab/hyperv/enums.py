"""The Hyper-V, VMM and DNS enumerations the lab serialises, by their real type names.

Values are :class:`~lab.objects.LabEnum` so the protocol layer can send them the way Windows
does (type name, name, number). Clients compare by *name*: numbering differs between module
versions, so the numbers here only need to be plausible.
"""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

from lab.objects import LabEnum

_HV = "Microsoft.HyperV.PowerShell."

E = TypeVar("E", bound=Enum)


class VMState(Enum):
    """``Microsoft.HyperV.PowerShell.VMState`` (the subset the lab moves through)."""

    Other = 1
    Running = 2
    Off = 3
    Stopping = 4
    Saved = 6
    Paused = 9
    Starting = 10


class ReplicationState(Enum):
    """``Microsoft.HyperV.PowerShell.VMReplicationState``."""

    Disabled = 0
    ReadyForInitialReplication = 1
    InitialReplicationInProgress = 2
    WaitingForInitialReplication = 3
    Replicating = 4
    PreparedForFailover = 5
    FailedOverWaitingCompletion = 6
    FailedOver = 7
    Suspended = 8
    Error = 9
    WaitingForStartResynchronize = 10
    Resynchronizing = 11
    ResynchronizeSuspended = 12
    RecoveryInProgress = 13
    FailbackInProgress = 14
    FailbackComplete = 15
    WaitingForUpdateCompletion = 16
    UpdateError = 17
    WaitingForRepurposeCompletion = 18
    PreparedForSyncReplication = 19
    PreparedForGroupReverseReplication = 20
    FiredrillInProgress = 21


class ReplicationHealth(Enum):
    """``Microsoft.HyperV.PowerShell.VMReplicationHealthState``."""

    NotApplicable = 0
    Normal = 1
    Warning = 2
    Critical = 3


class ReplicationMode(Enum):
    """``Microsoft.HyperV.PowerShell.VMReplicationMode``."""

    # "None" is the real member name; clients compare by it.
    None_ = 0
    Primary = 1
    Replica = 2
    TestReplica = 3
    ExtendedReplica = 4

    @property
    def label(self) -> str:
        """The name PowerShell shows (``None`` rather than the Python-safe ``None_``)."""
        return "None" if self is ReplicationMode.None_ else self.name


class AuthenticationType(Enum):
    """``Microsoft.HyperV.PowerShell.ReplicationAuthenticationType``."""

    Kerberos = 1
    Certificate = 2


class RelationshipType(Enum):
    """``Microsoft.HyperV.PowerShell.VMReplicationRelationshipType``."""

    Simple = 0
    Extended = 1


class SnapshotType(Enum):
    """``Microsoft.HyperV.PowerShell.SnapshotType``."""

    Standard = 0
    Recovery = 1
    Planned = 2
    Missing = 3
    Replica = 4
    AppConsistentReplica = 5
    SyncedReplica = 6


class SCVMStatus(Enum):
    """VMM's ``Microsoft.VirtualManager.Utils.VMComputerSystemState`` (the subset used)."""

    Running = 0
    PowerOff = 1
    Saved = 3
    Stopping = 106
    Starting = 105


_TYPE_NAMES: dict[type[Enum], str] = {
    VMState: _HV + "VMState",
    ReplicationState: _HV + "VMReplicationState",
    ReplicationHealth: _HV + "VMReplicationHealthState",
    ReplicationMode: _HV + "VMReplicationMode",
    AuthenticationType: _HV + "ReplicationAuthenticationType",
    SnapshotType: _HV + "SnapshotType",
    RelationshipType: _HV + "VMReplicationRelationshipType",
    SCVMStatus: "Microsoft.VirtualManager.Utils.VMComputerSystemState",
}


def lab_enum(member: Enum) -> LabEnum:
    """The wire form of ``member``: its real .NET type name, PowerShell name and number."""
    name = member.label if isinstance(member, ReplicationMode) else member.name
    return LabEnum(_TYPE_NAMES[type(member)], name, int(member.value))


def parse_member(enum: type[E], value: object) -> E:
    """Read an enum member from a name (any case), a number or a :class:`LabEnum`.

    Raises ``ValueError`` naming the valid names when nothing matches.
    """
    if isinstance(value, enum):
        return value
    if isinstance(value, LabEnum):
        value = value.name
    if isinstance(value, int) and not isinstance(value, bool):
        for member in enum:
            if member.value == value:
                return member
    if isinstance(value, str):
        wanted = "none_" if value.lower() == "none" and enum is ReplicationMode else value.lower()
        for member in enum:
            if member.name.lower() == wanted:
                return member
    names = ", ".join(m.name.rstrip("_") for m in enum)
    raise ValueError(f"{value!r} is not a valid {enum.__name__}; use one of: {names}")
