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
    """Runs typed cmdlets with named parameters on one host; never builds script text.

    All three methods are required: a recovery point can only reach ``Start-VMFailover``
    through :meth:`run_pipeline` (a host refuses a client's copy of a snapshot as a parameter
    value), so a runner without it cannot fail over to a chosen point and is a type error.
    """

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

    def run_pipeline(
        self,
        commands: Sequence[tuple[str, Mapping[str, Any], Sequence[str]]],
        *,
        timeout: float | None = None,
    ) -> PSResult:
        """Invoke cmdlets chained into one pipeline: each ``(cmdlet, parameters, switches)``
        receives the previous one's output objects as pipeline input, in the same runspace.

        This is how a cmdlet gets a *live* object that a client cannot send back, e.g.
        ``Get-VMSnapshot ... | Start-VMFailover``. The result is the last cmdlet's output and
        every command's error records; errors are raised as in :meth:`run`.
        """
        ...

    def run_script(
        self,
        script: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> PSResult:
        """Run a plan's PowerShell script text (an operator-written action) with parameters."""
        ...
