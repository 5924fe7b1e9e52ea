"""Errors raised by workers and their adapters (Hyper-V over PSRP, DNS).

Whether a failed step may run again is read from its error by :func:`retryable`: transient
errors are retried, except an :class:`OutcomeUnknown` whose ``retryable`` flag is off.
"""

from __future__ import annotations

from plans.errors import PermanentError, TransientError


class RemoteTransientError(TransientError):
    """The remote end could not be reached or answered 'try later': retry with backoff."""


class OutcomeUnknown(RemoteTransientError):
    """A command reached the host and its answer was lost (HTTP 5xx, a reset or a timeout
    after the Command was sent): it may or may not have run.

    ``retryable`` is the flag the retry policy reads. A step that reads its effect back
    before acting (every Hyper-V and DNS step) sets it: running again finds the work done.
    A script, and any step whose effect cannot be read back, leaves it off and fails, so it
    runs at most once per start: an operator checks the host, then resumes or skips the step.
    """

    outcome_unknown = True  # the retry policy never retries it for a script

    def __init__(self, message: str, *, host: str = "", doing: str = "") -> None:
        super().__init__(message)
        self.host = host
        self.doing = doing
        self.retryable = False


def retryable(error: BaseException) -> bool:
    """Whether the step that raised ``error`` may simply run again (with backoff)."""
    return isinstance(error, TransientError) and getattr(error, "retryable", True)


class RemotePermanentError(PermanentError):
    """The remote end refused or reported a definite error; retrying will not help."""


class AuthenticationError(RemotePermanentError):
    """Credentials were rejected; fix the credential reference, do not retry."""


class CmdletFailed(RemotePermanentError):
    """A cmdlet ended with a terminating error record."""

    def __init__(
        self,
        message: str,
        *,
        host: str = "",
        cmdlet: str = "",
        fully_qualified_error_id: str = "",
        category: str = "",
        target: str = "",
    ) -> None:
        super().__init__(message)
        self.host = host
        self.cmdlet = cmdlet
        self.fully_qualified_error_id = fully_qualified_error_id
        self.category = category
        self.target = target
