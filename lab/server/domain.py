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

    def invoke(self, host: str, commands: Sequence[Command], *, user: str = "") -> InvokeResult:
        """Run one pipeline in the domain (``user`` goes to the audit log)."""
        result: InvokeResult = self.lab.invoke(host, list(commands), user=user)
        return result

    def admin(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        """One admin API call."""
        if body is not None and not isinstance(body, dict):
            return 400, {"error": "the admin API takes a JSON object as the request body"}
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
        """Stop the domain's background ticker."""
        self.lab.close()


def open_world(topology: Any, *, time_scale: float | None = None) -> World:
    """Load ``topology`` (path, dict or loaded) and start the domain's ticker."""
    from lab.world import Lab  # the domain; imported late so the protocol layer stands alone

    lab = Lab.from_topology(topology, time_scale=time_scale)
    account = Account(lab.username, lab.password, lab.domain)
    lab.start()
    return World(lab, WorldBackend(lab), account, lab.admin_port)
