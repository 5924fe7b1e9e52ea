"""The lab in-process, for tests and demos: ``with running_lab(topology) as handle: ...``.

Everything listens on 127.0.0.1 with ephemeral ports (unless the topology fixes them) and is
closed when the ``with`` block ends: listeners, connections, threads, the NTLM user file and
the TLS key material.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from lab.server.domain import open_world
from lab.server.endpoint import EndpointStats
from lab.server.service import Endpoint, LabServer

__all__ = ["Endpoint", "LabHandle", "running_lab"]


@dataclass
class LabHandle:
    """A running lab: its domain object, endpoints and admin API."""

    lab: Any  # lab.world.Lab: the domain, for direct inspection in tests
    server: LabServer
    endpoints: dict[str, Endpoint]
    admin_url: str

    @property
    def password(self) -> str:
        """The lab login's password (generated at start unless the topology names one)."""
        return self.server.account.password

    def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Call the admin API over HTTP; returns (status, decoded JSON)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.admin_url + path,
            data=data,
            method=method.upper(),
            headers={"Content-Type": "application/json"},
        )
        # The admin API is on loopback: never send it through a proxy from the environment.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=30) as response:
                return response.status, _decode(response.read())
        except urllib.error.HTTPError as err:
            return err.code, _decode(err.read())

    def stats(self, host: str) -> EndpointStats:
        """Request counters of one host's endpoint."""
        return self.server.stats(host)


def _decode(raw: bytes) -> Any:
    return json.loads(raw) if raw.strip() else None


@contextmanager
def running_lab(
    topology: Any,
    *,
    auth: str = "basic",
    time_scale: float | None = None,
    fixed_ports: bool = False,
) -> Iterator[LabHandle]:
    """Start the lab for ``topology`` (a path, a dict or a loaded topology) and serve it.

    ``auth`` is ``basic`` (Basic over HTTP), ``ntlm`` (NTLM with message encryption over
    HTTP) or ``https`` (Basic over TLS; trust ``endpoint.ca_bundle`` or turn checks off).
    ``time_scale`` overrides the topology's (real seconds per lab second). Ports are
    ephemeral unless ``fixed_ports`` asks for the topology's (as ``ferryman lab serve`` does).
    """
    world = open_world(topology, time_scale=time_scale)
    try:
        server = LabServer(
            world.backend,
            world.account,
            auth=auth,
            admin_port=world.admin_port,
            fixed_ports=fixed_ports,
        )
        with server:
            yield LabHandle(world.lab, server, dict(server.endpoints), server.admin_url)
    finally:
        world.close()


def pypsrp_options(endpoint: Endpoint) -> dict[str, Any]:
    """Keyword arguments for ``pypsrp.wsman.WSMan`` / ``pypsrp.client.Client`` (host aside)."""
    options: dict[str, Any] = {
        "port": endpoint.port,
        "username": endpoint.username,
        "password": endpoint.password,
        "no_proxy": True,
    }
    if endpoint.auth == "basic":
        options.update(ssl=False, auth="basic", encryption="never")
    elif endpoint.auth == "ntlm":
        options.update(ssl=False, auth="ntlm")
    else:
        options.update(ssl=True, auth="basic", cert_validation=endpoint.ca_bundle or True)
    return options
