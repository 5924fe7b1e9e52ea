"""What the audit trail records about a run."""

from __future__ import annotations

import enum


class EventKind(enum.StrEnum):
    """Kinds of audit events, in roughly the order a run produces them."""

    CREATED = "created"
    STAGE_STARTED = "stage_started"
    STAGE_RESENT = "stage_resent"  # a stage committed but never sent (a crash) is sent again
    UNITS_RESENT = "units_resent"  # a sent stage's waiting units went quiet: sent again
    CALLBACK_RECOVERED = "callback_recovered"  # a settled stage's lost callback: moved on
    STAGE_FINISHED = "stage_finished"
    STEP_RETRY = "step_retry"
    STEP_FAILED = "step_failed"
    STEP_TAKEN_OVER = "step_taken_over"  # a running step's worker stopped beating: sent again
    GATE_OPENED = "gate_opened"
    GATE_APPROVED = "gate_approved"
    GATE_REJECTED = "gate_rejected"
    GATE_TIMED_OUT = "gate_timed_out"
    RESUMED = "resumed"
    CANCELLED = "cancelled"
    COMPENSATION_STARTED = "compensation_started"
    FOLLOW_UP = "follow_up"
    FINISHED = "finished"


# What the recovery watch records (crash recovery a report lists on its own).
RECOVERIES = frozenset(
    {
        EventKind.STAGE_RESENT,
        EventKind.UNITS_RESENT,
        EventKind.CALLBACK_RECOVERED,
        EventKind.STEP_TAKEN_OVER,
    }
)
