"""Errors the step executors raise on purpose, each saying what the operator should do.

Transient vs permanent is part of the type (the engine's retry policy reads it): a VM in the
wrong replication state, a missing VM, a failed script or a failed health check are permanent;
an address that has not appeared yet is transient (``workers.hyperv.ip.IpTimeout``).
"""

from __future__ import annotations

from plans.errors import PermanentError


class StepError(PermanentError):
    """Base class of the executors' permanent errors."""


class StepFailed(StepError):
    """A mutating cmdlet was refused; the message names the VM, host, cmdlet and state.

    ``cmdlet``, ``host`` and ``fully_qualified_error_id`` repeat the refusal's details for the
    engine's failure summary.
    """

    def __init__(
        self, message: str, *, cmdlet: str = "", host: str = "", fully_qualified_error_id: str = ""
    ) -> None:
        super().__init__(message)
        self.cmdlet = cmdlet
        self.host = host
        self.fully_qualified_error_id = fully_qualified_error_id


class VmNotFound(StepError):
    """The VM the step acts on does not exist on the host the plan names."""


class LeftoverTestFailover(StepError):
    """A test failover's test VM exists before the step first ran: an earlier test was not
    cleaned up; the message names the VM, host and how to clean it up."""


class InvalidReplicationState(StepError):
    """The VM's replication state does not allow the step; the message names the state."""


class ScriptFailed(StepError):
    """A plan's script ended with an error; the engine applies the action's ``on_error``."""

    def __init__(self, message: str, *, output: list[str] | None = None) -> None:
        super().__init__(message)
        self.output = list(output or [])


class HealthCheckFailed(StepError):
    """The VM is not running or its replication health is Critical."""


class StepParamsError(StepError):
    """A step's params are missing or malformed: a compiler bug or a hand-edited run."""
