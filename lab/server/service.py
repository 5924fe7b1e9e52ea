"""The whole lab on the network: one WinRM endpoint per host plus the admin API.

:class:`LabServer` owns every listener and thread it starts and stops them all in
:meth:`LabServer.stop`. Hosts follow the domain's up/down state: a watcher re-reads it a few
times a second, and every admin call re-reads it before answering.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from lab.server.admin import AdminAPI, admin_server
from lab.server.auth import Account, Authenticator, AuthMode, UserFile
from lab.server.backend import LabBackend, Role
from lab.server.certificate import LabCertificate
from lab.server.endpoint import EndpointStats, HostEndpoint
from lab.server.http import LabHTTPServer

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
WILDCARDS = ("0.0.0.0", "::", "")


class PortInUse(OSError):
    """A port the lab must listen on is taken; the message names it and what to do."""


def advertised(listen: str) -> str:
    """The host name clients put in URLs for a lab listening on ``listen``: the address
    itself, or this machine's name when it listens on every address."""
    return socket.gethostname() if listen in WILDCARDS else listen


@dataclass(frozen=True)
class Endpoint:
    """How a client reaches one lab host (what ``ferryman lab serve --json`` prints)."""

    host: str
    site: str
    role: str
    url: str
    auth: str
    username: str
    password: str
    ca_bundle: str | None = None  # HTTPS only: the lab CA to trust instead of turning checks off

    @property
    def port(self) -> int:
        """The TCP port of :attr:`url`."""
        return int(self.url.rsplit(":", 1)[1].split("/", 1)[0])

    def to_json(self) -> dict[str, Any]:
        """The JSON object printed for this endpoint."""
        data = asdict(self)
        if data["ca_bundle"] is None:
            del data["ca_bundle"]
        return data


class LabServer:
    """Serves ``backend`` over WS-Management/PSRP (see module docstring).

    With ``fixed_ports`` the hosts' and admin API's ports come from the backend (the
    topology); otherwise every listener gets a free ephemeral port. ``listen``: the address
    every listener binds (loopback unless told); ``advertise``: the host name in the URLs
    (default: the listen address, or this machine's name for a wildcard address).
    """

    def __init__(
        self,
        backend: LabBackend,
        account: Account,
        *,
        auth: AuthMode | str = AuthMode.BASIC,
        admin_port: int | None = None,
        fixed_ports: bool = True,
        watch_interval: float = 0.05,
        listen: str = LOOPBACK,
        advertise: str | None = None,
    ) -> None:
        self.backend = backend
        self.account = account
        self.auth = AuthMode(auth)
        self._fixed_ports = fixed_ports
        self._admin_port = (admin_port or 0) if fixed_ports else 0
        self._watch_interval = watch_interval
        self.listen = listen
        self.advertise = advertise or advertised(listen)
        self._user_file: UserFile | None = None
        self._certificate: LabCertificate | None = None
        self._hosts: dict[str, HostEndpoint] = {}
        self._admin: LabHTTPServer | None = None
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._sync_lock = threading.Lock()
        self.endpoints: dict[str, Endpoint] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> LabServer:
        """Open every listener; on any failure close what was opened and re-raise."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        if self.auth in (AuthMode.NTLM, AuthMode.HTTPS):
            self._user_file = UserFile(self.account)
        ssl_context = None
        if self.auth is AuthMode.HTTPS:
            self._certificate = LabCertificate()
            ssl_context = self._certificate.server_context()
        authenticator = Authenticator(self.auth, self.account, self._user_file)
        for spec in self.backend.hosts():
            port = (spec.port or 0) if self._fixed_ports else 0
            endpoint = HostEndpoint(spec, self.backend, authenticator, ssl_context, port)
            endpoint.listen, endpoint.advertise = self.listen, self.advertise
            self._hosts[spec.host] = endpoint
            # Bind every port first (down hosts too) so each host keeps one URL for the
            # lab's lifetime; the sync below closes the listeners of hosts that are down.
            with self._naming_port(port, f"host {spec.host}"):
                endpoint.up()
            self.endpoints[spec.host] = Endpoint(
                host=spec.host,
                site=spec.site,
                role=Role(spec.role).value,
                url=endpoint.url,
                auth=self.auth.value,
                username=self.account.username,
                password=self.account.password,
                ca_bundle=self._certificate.ca_path if self._certificate else None,
            )
        self.sync_hosts()
        with self._naming_port(self._admin_port, "the admin API"):
            self._admin = admin_server(
                AdminAPI(self.backend, self.sync_hosts), self._admin_port, self.listen
            )
        self._admin.start()
        self._watcher = threading.Thread(target=self._watch, name="lab-host-watcher", daemon=True)
        self._watcher.start()

    @contextmanager
    def _naming_port(self, port: int, what: str) -> Iterator[None]:
        """Turn "Address already in use" into an error naming the port and its user."""
        try:
            yield
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            error = PortInUse(
                f"port {port} on {self.listen} ({what}) is already in use: stop what listens "
                "there, or choose other ports (--port-base, --ephemeral-ports)"
            )
            error.errno = errno.EADDRINUSE
            raise error from None

    def stop(self) -> None:
        """Close every listener, connection and shell; remove the NTLM file and TLS keys."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
            self._watcher = None
        if self._admin is not None:
            self._admin.stop()
            self._admin = None
        for endpoint in self._hosts.values():
            endpoint.down()
        if self._user_file is not None:
            self._user_file.remove()
            self._user_file = None
        if self._certificate is not None:
            self._certificate.remove()
            self._certificate = None

    def __enter__(self) -> LabServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- state -------------------------------------------------------------------------------

    @property
    def admin_url(self) -> str:
        """Base URL of the admin API, e.g. ``http://127.0.0.1:40123``."""
        if self._admin is None:
            raise RuntimeError("the lab server is not running; call start() first")
        return f"http://{self.advertise}:{self._admin.port}"

    def stats(self, host: str) -> EndpointStats:
        """Request counters of one host's endpoint."""
        return self._hosts[host].service.stats

    def sync_hosts(self) -> None:
        """Open or close each host's listener to match the domain's up/down state."""
        with self._sync_lock:
            for name, endpoint in self._hosts.items():
                if self._stop.is_set():
                    return
                try:
                    up = self.backend.host_is_up(name)
                except Exception:
                    log.exception("reading whether %s is up failed", name)
                    continue
                if up and not endpoint.listening:
                    endpoint.up()
                elif not up and endpoint.listening:
                    endpoint.down()

    def _watch(self) -> None:
        while not self._stop.wait(self._watch_interval):
            self.sync_hosts()
