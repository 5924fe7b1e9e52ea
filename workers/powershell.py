"""The seam between Ferryman's adapters and PowerShell Remoting.

Adapters that run cmdlets on a Windows host (Hyper-V, VMM, Windows DNS) take a
:class:`PowerShellRunner`; ``workers.hyperv.psrp`` implements it over pypsrp, and tests may
pass the lab's endpoints through the same real client.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class PSError:
    """One error record: message, FullyQualifiedErrorId, category and target (as text)."""

    message: str
    fully_qualified_error_id: str = ""
    category: str = ""
    target: str = ""


@dataclass
class PSResult:
    """The outcome of one pipeline: output objects (as plain dicts) and error records.

    Output objects are flattened to ``{property: value}`` dicts; enum values arrive as their
    *names* (``"Replicating"``), never their numbers, because numbering differs between
    module versions.
    """

    output: list[dict[str, Any]] = field(default_factory=list)
    errors: list[PSError] = field(default_factory=list)
    had_errors: bool = False


class PowerShellRunner(Protocol):
    """Runs one cmdlet with named parameters on one host; never builds script text."""

    def run(
        self,
        cmdlet: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        switches: Sequence[str] = (),
        timeout: float | None = None,
    ) -> PSResult:
        """Invoke ``cmdlet`` with ``parameters`` and ``switches``.

        Raises a transient error (connection refused/reset, HTTP 5xx, WS-Man TimedOut) or a
        permanent one (authentication, a terminating error record) from ``workers.errors``.
        """
        ...

    def run_script(
        self, script: str, parameters: Mapping[str, Any] | None = None, *, timeout: float | None = None
    ) -> PSResult:
        """Run a plan's PowerShell script text (an operator-written action) with parameters."""
        ...
