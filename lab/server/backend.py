"""What the protocol layer needs from the lab's domain, and nothing more.

The domain (``lab.world.Lab``) has no network code; the server reaches it only through this
protocol, so tests can also put a small fake behind real WS-Management.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from lab.objects import Command, InvokeResult


class Role(StrEnum):
    """What a lab host plays: a VMM server or a Hyper-V host."""

    VMM = "vmm"
    HYPERV = "hyperv"


@dataclass(frozen=True)
class HostSpec:
    """One host the lab serves an endpoint for."""

    host: str
    site: str
    role: Role
    port: int | None = None  # fixed port from the topology; None picks a free one


class LabBackend(Protocol):
    """The domain behind the endpoints.

    ``invoke`` raises :class:`lab.objects.CmdletError` for a terminating error and
    :class:`lab.objects.TransportFault` for an injected transport fault.
    """

    def hosts(self) -> Sequence[HostSpec]:
        """Every host that gets an endpoint."""
        ...

    def host_is_up(self, host: str) -> bool:
        """False while the host is down (its endpoint then refuses connections)."""
        ...

    def invoke(self, host: str, commands: Sequence[Command], *, user: str = "") -> InvokeResult:
        """Run one pipeline on ``host`` for the authenticated ``user``."""
        ...

    def admin(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        """Answer one admin API call with an HTTP status and a JSON-able body."""
        ...
