"""Hyper-V Replica statuses as enums compared by *name*.

Hyper-V's PowerShell module numbers its enums differently between versions, so Ferryman never
stores or compares the numbers: values arrive from the remote host as names (``"Replicating"``)
and are parsed here with :meth:`parse`, which refuses an unknown name with a clear error.
"""

from __future__ import annotations

from enum import Enum
from typing import Self

from workers.errors import RemotePermanentError


class UnknownStatus(RemotePermanentError):
    """A host reported a status name this version of Ferryman does not know."""


class _NamedEnum(Enum):
    """An enum whose value is its PowerShell name, parsed case-insensitively."""

    @classmethod
    def parse(cls, name: object) -> Self:
        """The member called ``name`` (case-insensitive); an unknown name raises UnknownStatus."""
        text = str(name).strip()
        for member in cls:
            if member.value.lower() == text.lower():
                return member
        raise UnknownStatus(
            f"unknown {cls.__name__} {text!r} reported by the host; expected one of "
            f"{', '.join(m.value for m in cls)} (is the host's Hyper-V module newer than "
            "this Ferryman release?)"
        )


class ReplicationState(_NamedEnum):
    """``Get-VMReplication`` ``.State`` (Microsoft.HyperV.PowerShell.VMReplicationState)."""

    DISABLED = "Disabled"
    READY_FOR_INITIAL_REPLICATION = "ReadyForInitialReplication"
    INITIAL_REPLICATION_IN_PROGRESS = "InitialReplicationInProgress"
    WAITING_FOR_INITIAL_REPLICATION = "WaitingForInitialReplication"
    REPLICATING = "Replicating"
    PREPARED_FOR_FAILOVER = "PreparedForFailover"
    FAILED_OVER_WAITING_COMPLETION = "FailedOverWaitingCompletion"
    FAILED_OVER = "FailedOver"
    SUSPENDED = "Suspended"
    ERROR = "Error"
    WAITING_FOR_START_RESYNCHRONIZE = "WaitingForStartResynchronize"
    RESYNCHRONIZING = "Resynchronizing"
    RESYNCHRONIZE_SUSPENDED = "ResynchronizeSuspended"
    RECOVERY_IN_PROGRESS = "RecoveryInProgress"
    FAILBACK_IN_PROGRESS = "FailbackInProgress"
    FAILBACK_COMPLETE = "FailbackComplete"
    WAITING_FOR_UPDATE_COMPLETION = "WaitingForUpdateCompletion"
    UPDATE_ERROR = "UpdateError"
    WAITING_FOR_REPURPOSE_COMPLETION = "WaitingForRepurposeCompletion"
    PREPARED_FOR_SYNC_REPLICATION = "PreparedForSyncReplication"
    PREPARED_FOR_GROUP_REVERSE_REPLICATION = "PreparedForGroupReverseReplication"
    FIREDRILL_IN_PROGRESS = "FiredrillInProgress"


class ReplicationHealth(_NamedEnum):
    """``Get-VMReplication`` ``.Health``."""

    NOT_APPLICABLE = "NotApplicable"
    NORMAL = "Normal"
    WARNING = "Warning"
    CRITICAL = "Critical"


class ReplicationMode(_NamedEnum):
    """``Get-VMReplication`` ``.Mode`` (``.ReplicationMode`` on a VM)."""

    NONE = "None"
    PRIMARY = "Primary"
    REPLICA = "Replica"
    TEST_REPLICA = "TestReplica"
    EXTENDED_REPLICA = "ExtendedReplica"


class VMState(_NamedEnum):
    """``Get-VM`` ``.State`` (Microsoft.HyperV.PowerShell.VMState), the common values."""

    OTHER = "Other"
    RUNNING = "Running"
    OFF = "Off"
    STOPPING = "Stopping"
    SAVED = "Saved"
    PAUSED = "Paused"
    STARTING = "Starting"
    RESET = "Reset"
    SAVING = "Saving"
    PAUSING = "Pausing"
    RESUMING = "Resuming"
    FAST_SAVED = "FastSaved"
    FAST_SAVING = "FastSaving"
    FORCE_SHUTDOWN = "ForceShutdown"
    FORCE_REBOOT = "ForceReboot"
    HIBERNATED = "Hibernated"
    COMPONENT_SERVICING = "ComponentServicing"
    RUNNING_CRITICAL = "RunningCritical"
    OFF_CRITICAL = "OffCritical"
    STOPPING_CRITICAL = "StoppingCritical"
    SAVED_CRITICAL = "SavedCritical"
    PAUSED_CRITICAL = "PausedCritical"
    STARTING_CRITICAL = "StartingCritical"
    RESET_CRITICAL = "ResetCritical"
    SAVING_CRITICAL = "SavingCritical"
    PAUSING_CRITICAL = "PausingCritical"
    RESUMING_CRITICAL = "ResumingCritical"
    FAST_SAVED_CRITICAL = "FastSavedCritical"
    FAST_SAVING_CRITICAL = "FastSavingCritical"
