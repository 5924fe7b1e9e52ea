"""Step executors: what a worker does for each step of a run, idempotently.

``context(...)`` builds a :class:`StepContext` from a task's JSON; :func:`run_step` runs one
:class:`~workflows.steps.StepSpec` through the executor registered for its kind and returns a
:class:`~workflows.steps.StepOutcome` (result, undo record, changed); :func:`compensate`
executes an undo record. A step's first start acts at once and reads only to explain a
refusal; any later start (a retry, a redelivery, a resume) reads state first and does nothing
when its effect is already there, so a redelivered task never changes a VM twice.
"""

from workers.executors.compensation import compensate
from workers.executors.context import StepContext, context
from workers.executors.errors import (
    HealthCheckFailed,
    InvalidReplicationState,
    LeftoverTestFailover,
    ScriptFailed,
    StepError,
    StepFailed,
    StepParamsError,
    VmNotFound,
)
from workers.executors.registry import EXECUTORS, run_step

__all__ = [
    "EXECUTORS",
    "HealthCheckFailed",
    "InvalidReplicationState",
    "LeftoverTestFailover",
    "ScriptFailed",
    "StepContext",
    "StepError",
    "StepFailed",
    "StepParamsError",
    "VmNotFound",
    "compensate",
    "context",
    "run_step",
]
