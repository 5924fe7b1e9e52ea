"""Ferryman's root exception and the transient/permanent split every package shares.

Each package adds its own family below :class:`FerrymanError`. Whether an error is worth
retrying is part of its type: retry policy reads ``isinstance(err, TransientError)``.
"""

from __future__ import annotations


class FerrymanError(Exception):
    """Base class for every error Ferryman raises on purpose; the message says what to do."""


class TransientError(FerrymanError):
    """A failure that may go away on its own (timeouts, resets, 5xx): retried with backoff."""


class PermanentError(FerrymanError):
    """A failure that retrying cannot fix (auth, missing VM, wrong state): fails at once."""


class ConfigurationError(PermanentError):
    """A setting, credential reference or file that must be fixed by the operator."""
