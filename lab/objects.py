"""The neutral object model between the lab's Hyper-V/VMM domain and its PSRP server.

The domain (``lab.hyperv``) answers pipelines with these objects; the protocol layer
(``lab.server``) turns them into CLIXML the way a Windows host serialises real cmdlet
output over PowerShell Remoting (adapted properties, enums as named values, type names
such as ``Microsoft.HyperV.PowerShell.VirtualMachine``), and turns :class:`CmdletError`
into a real ``ErrorRecord``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class LabEnum:
    """An enum value as PowerShell serialises it: type name, name and integer value."""

    type_name: str
    name: str
    value: int

    def __str__(self) -> str:
        return self.name


@dataclass
class LabObject:
    """A cmdlet output object: its type names (most derived first) and its properties.

    Property values are ``None``, ``bool``, ``int``, ``float``, ``str``, ``datetime``,
    ``timedelta``, ``uuid.UUID``, :class:`LabEnum`, :class:`LabObject` or lists of them.
    """

    type_names: list[str]
    properties: dict[str, Any]
    to_string: str | None = None


@dataclass(frozen=True)
class Command:
    """One command of a pipeline as the client sent it.

    ``parameters`` keeps the order and the shape PSRP delivers: ``(name, value)`` with
    ``name`` None for a positional argument; a switch arrives as ``(name, True)`` or
    ``(name, None)``. ``is_script`` is True for ``AddScript`` text (then ``name`` is the text).
    """

    name: str
    parameters: list[tuple[str | None, Any]] = field(default_factory=list)
    is_script: bool = False


@dataclass
class ErrorInfo:
    """What an ErrorRecord carries: message, FullyQualifiedErrorId, category, target."""

    message: str
    fully_qualified_error_id: str
    category: str = "InvalidOperation"  # a System.Management.Automation.ErrorCategory name
    target_object: Any = None
    exception_type: str = "Microsoft.HyperV.PowerShell.VirtualizationException"


class CmdletError(Exception):
    """A terminating error: the pipeline ends Failed with this ErrorRecord."""

    def __init__(self, info: ErrorInfo) -> None:
        super().__init__(info.message)
        self.info = info


class TransportFault(Exception):
    """An injected transport-level fault the protocol layer must act out.

    ``kind`` is ``"http500"`` (answer the request with HTTP 500) or ``"reset"`` (drop the
    TCP connection without an answer).
    """

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


@dataclass
class InvokeResult:
    """Output objects, non-terminating errors (Write-Error) and other stream records."""

    output: list[Any] = field(default_factory=list)
    errors: list[ErrorInfo] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    verbose: list[str] = field(default_factory=list)
