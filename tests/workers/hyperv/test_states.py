"""Statuses are parsed by name, never by number."""

from __future__ import annotations

import pytest

from plans.errors import PermanentError
from workers.hyperv.states import (
    ReplicationHealth,
    ReplicationMode,
    ReplicationState,
    UnknownStatus,
    VMState,
)


def test_parse_by_name_any_case() -> None:
    assert ReplicationState.parse("replicating") is ReplicationState.REPLICATING
    assert ReplicationState.parse("FailedOverWaitingCompletion") is (
        ReplicationState.FAILED_OVER_WAITING_COMPLETION
    )
    assert ReplicationMode.parse("None") is ReplicationMode.NONE
    assert ReplicationHealth.parse(" Critical ") is ReplicationHealth.CRITICAL
    assert VMState.parse("Off") is VMState.OFF


def test_a_number_is_not_a_state() -> None:
    # Hyper-V renumbers its enums between versions; "4" must not silently mean Replicating.
    with pytest.raises(UnknownStatus) as info:
        ReplicationState.parse(4)
    assert isinstance(info.value, PermanentError)
    assert "Replicating" in str(info.value)


def test_every_design_state_is_known() -> None:
    names = [
        "Disabled",
        "ReadyForInitialReplication",
        "InitialReplicationInProgress",
        "WaitingForInitialReplication",
        "Replicating",
        "PreparedForFailover",
        "FailedOverWaitingCompletion",
        "FailedOver",
        "Suspended",
        "Error",
        "WaitingForStartResynchronize",
        "Resynchronizing",
        "ResynchronizeSuspended",
        "RecoveryInProgress",
        "FailbackInProgress",
        "FailbackComplete",
        "WaitingForUpdateCompletion",
        "UpdateError",
        "WaitingForRepurposeCompletion",
        "PreparedForSyncReplication",
        "PreparedForGroupReverseReplication",
        "FiredrillInProgress",
    ]
    assert [ReplicationState.parse(n).value for n in names] == names
