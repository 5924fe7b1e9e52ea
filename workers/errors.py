"""Errors raised by workers and their adapters (Hyper-V over PSRP, DNS)."""

from __future__ import annotations

from plans.errors import PermanentError, TransientError


class RemoteTransientError(TransientError):
    """The remote end could not be reached or answered 'try later': retry with backoff."""


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
