"""Run and step statuses, and the one transition table of each.

Every status change in the store goes through :func:`check_run` or :func:`check_step`, so an
illegal move (approving a finished run, re-running a succeeded step) raises instead of quietly
rewriting history.
"""

from __future__ import annotations

import enum
from typing import TypeVar

from plans.errors import FerrymanError

T = TypeVar("T", bound=enum.StrEnum)


class IllegalTransition(FerrymanError):
    """A status change the state machine does not allow; the message says what is allowed."""


class RunStateError(FerrymanError):
    """The operation does not fit the run's current status; the message says what does."""


class RunStatus(enum.StrEnum):
    """Where a run is in its life."""

    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"  # a manual gate is open; no worker slot is held
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    COMPENSATING = "compensating"  # a compensation run is undoing this run's steps
    COMPENSATED = "compensated"


class StepStatus(enum.StrEnum):
    """Where one recorded step is."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class ApprovalStatus(enum.StrEnum):
    """The state of a manual gate."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


R = RunStatus
RUN_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    R.PENDING: frozenset({R.RUNNING, R.FAILED, R.CANCELLED}),
    R.RUNNING: frozenset({R.WAITING, R.SUCCEEDED, R.FAILED, R.CANCELLED}),
    R.WAITING: frozenset({R.RUNNING, R.FAILED, R.CANCELLED}),
    # resume re-runs the failed steps; compensation undoes what was done
    R.FAILED: frozenset({R.RUNNING, R.COMPENSATING}),
    R.SUCCEEDED: frozenset({R.COMPENSATING}),
    R.CANCELLED: frozenset({R.COMPENSATING}),
    R.COMPENSATING: frozenset({R.COMPENSATED, R.FAILED}),
    R.COMPENSATED: frozenset(),
}

S = StepStatus
STEP_TRANSITIONS: dict[StepStatus, frozenset[StepStatus]] = {
    S.PENDING: frozenset({S.RUNNING, S.SKIPPED, S.CANCELLED}),
    # RUNNING -> RUNNING: a redelivered task (its worker died) starts the step again;
    # RUNNING -> PENDING: a transient error, the task will be retried
    S.RUNNING: frozenset({S.RUNNING, S.PENDING, S.SUCCEEDED, S.FAILED, S.CANCELLED}),
    S.FAILED: frozenset({S.PENDING, S.SKIPPED}),  # resume; skip (an operator checked it)
    S.SUCCEEDED: frozenset(),
    S.SKIPPED: frozenset(),
    S.CANCELLED: frozenset({S.PENDING}),
}

A = ApprovalStatus
APPROVAL_TRANSITIONS: dict[ApprovalStatus, frozenset[ApprovalStatus]] = {
    A.PENDING: frozenset({A.APPROVED, A.REJECTED, A.TIMED_OUT, A.CANCELLED}),
    A.APPROVED: frozenset(),
    # resume of a run stopped at a gate asks the operator again
    A.REJECTED: frozenset({A.PENDING}),
    A.TIMED_OUT: frozenset({A.PENDING}),
    A.CANCELLED: frozenset(),
}

TERMINAL_RUN = frozenset({R.SUCCEEDED, R.FAILED, R.CANCELLED, R.COMPENSATED})
DONE_STEP = frozenset({S.SUCCEEDED, S.SKIPPED})
SETTLED_STEP = frozenset({S.SUCCEEDED, S.SKIPPED, S.FAILED, S.CANCELLED})


def _check(table: dict[T, frozenset[T]], what: str, current: T, new: T) -> T:
    if new not in table[current]:
        allowed = ", ".join(sorted(table[current])) or "nothing (it is final)"
        raise IllegalTransition(f"{what} cannot go from {current} to {new}; allowed: {allowed}")
    return new


def check_run(current: RunStatus, new: RunStatus) -> RunStatus:
    """Return ``new`` if a run may move there from ``current``; raise otherwise."""
    return _check(RUN_TRANSITIONS, "a run", current, new)


def check_step(current: StepStatus, new: StepStatus) -> StepStatus:
    """Return ``new`` if a step may move there from ``current``; raise otherwise."""
    return _check(STEP_TRANSITIONS, "a step", current, new)


def check_approval(current: ApprovalStatus, new: ApprovalStatus) -> ApprovalStatus:
    """Return ``new`` if a gate may move there from ``current``; raise otherwise."""
    return _check(APPROVAL_TRANSITIONS, "a gate", current, new)
