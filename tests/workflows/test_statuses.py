"""The transition tables: legal moves pass, illegal ones raise with what is allowed."""

from __future__ import annotations

import pytest

from workflows.statuses import (
    IllegalTransition,
    RunStatus,
    StepStatus,
    check_run,
    check_step,
)


def test_legal_run_moves() -> None:
    assert check_run(RunStatus.RUNNING, RunStatus.WAITING) is RunStatus.WAITING
    assert check_run(RunStatus.FAILED, RunStatus.RUNNING) is RunStatus.RUNNING  # resume


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (RunStatus.SUCCEEDED, RunStatus.RUNNING),
        (RunStatus.COMPENSATED, RunStatus.RUNNING),
        (RunStatus.CANCELLED, RunStatus.WAITING),
        (RunStatus.PENDING, RunStatus.SUCCEEDED),
    ],
)
def test_illegal_run_moves_raise(current: RunStatus, new: RunStatus) -> None:
    with pytest.raises(IllegalTransition, match=f"from {current} to {new}; allowed"):
        check_run(current, new)


def test_a_succeeded_step_is_final() -> None:
    with pytest.raises(IllegalTransition, match="it is final"):
        check_step(StepStatus.SUCCEEDED, StepStatus.RUNNING)
    assert check_step(StepStatus.RUNNING, StepStatus.RUNNING) is StepStatus.RUNNING  # redelivery
