"""Ferryman's root exception and the transient/permanent split every package shares.

Each package adds its own family below :class:`FerrymanError`. Whether an error is worth
retrying is part of its type: the workers' one retry policy reads ``retryable`` (True for
:class:`TransientError`) and ``outcome_unknown`` (the request may have taken effect: retried only
by a step that can read its effect back).
"""

from __future__ import annotations


class FerrymanError(Exception):
    """Base class for every error Ferryman raises on purpose; the message says what to do."""

    retryable: bool = False  # may go away on its own: the retry policy tries again
    # the failure came after the request was sent, so its effect is unknown: a step that
    # cannot read its effect back (a script) must not be retried without an operator
    outcome_unknown: bool = False


class TransientError(FerrymanError):
    """A failure that may go away on its own (timeouts, resets, 5xx): retried with backoff."""

    retryable = True


class PermanentError(FerrymanError):
    """A failure that retrying cannot fix (auth, missing VM, wrong state): fails at once."""


class ConfigurationError(PermanentError):
    """A setting, credential reference or file that must be fixed by the operator."""
