"""The bridge from the lab's domain (``lab.world.Lab``) to the protocol layer's backend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lab.objects import Command, InvokeResult
from lab.server.auth import Account
from lab.server.backend import HostSpec, LabBackend, Role


class WorldBackend:
    """Adapts a ``lab.world.Lab`` to :class:`lab.server.backend.LabBackend`."""

    def __init__(self, lab: Any) -> None:
        self.lab = lab
        self._hosts = [HostSpec(h.name, h.site, Role(h.role), h.port) for h in lab.topology.hosts]

    def hosts(self) -> Sequence[HostSpec]:
        """Every host of the topology."""
        return self._hosts

    def host_is_up(self, host: str) -> bool:
        """Whether the domain has the host up."""
        return bool(self.lab.host_is_up(host))

    def invoke(self, host: str, commands: Sequence[Command]) -> InvokeResult:
        """Run one pipeline in the domain."""
        result: InvokeResult = self.lab.invoke(host, list(commands))
        return result

    def admin(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        """One admin API call."""
        status, answer = self.lab.admin(method, path, body)
        return int(status), answer


@dataclass
class World:
    """A started domain with what the server needs to expose it."""

    lab: Any
    backend: LabBackend
    account: Account
    admin_port: int | None

    def close(self) -> None:
        """Stop the domain's own background work, if it has any."""
        close = getattr(self.lab, "close", None)
        if callable(close):
            close()


def open_world(topology: Any, *, time_scale: float | None = None) -> World:
    """Load ``topology`` and start the domain for it."""
    from lab.topology import load_topology
    from lab.world import Lab  # the domain; imported late so the protocol layer stands alone

    loaded = load_topology(topology)
    lab = Lab(loaded, time_scale=time_scale)
    creds = loaded.credentials
    account = Account(creds.username, creds.password, creds.domain)
    return World(lab, WorldBackend(lab), account, loaded.admin_port)
