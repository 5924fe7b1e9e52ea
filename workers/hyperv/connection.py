"""Where and how to reach one Windows host over WinRM: :class:`PsrpEndpoint`.

An endpoint carries a credential *reference*; the password is read only in
:meth:`PsrpEndpoint.open_wsman`, at the moment a connection is built, and is handed straight to
pypsrp. It never appears in a repr, a log line or an exception message.
"""

from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import SplitResult, urlsplit

from pypsrp.wsman import WSMan

from plans.credentials import SecretRef
from plans.errors import ConfigurationError
from workers.hyperv import transport
from workflows.steps import HostRef

# pypsrp's WSMan() registers its XML namespace prefixes in ElementTree's process-wide map every
# time (``register_namespace``: a pass over the map, then delete and add). Two threads doing it at
# once break each other's pass ("dictionary keys changed during iteration", or a KeyError), so a
# group of VMs opening sessions together would fail some of them: transports are built one at
# a time. Building one makes no network call, so the lock is held only for microseconds.
_WSMAN_LOCK = threading.Lock()


def new_wsman(server: str, **options: Any) -> WSMan:
    """``pypsrp.wsman.WSMan(server, **options)``, built under the process-wide lock."""
    with _WSMAN_LOCK:
        return WSMan(server, **options)


class AuthMethod(Enum):
    """WinRM authentication protocols pypsrp supports for a username/password login."""

    BASIC = "basic"
    NTLM = "ntlm"
    NEGOTIATE = "negotiate"
    KERBEROS = "kerberos"
    CREDSSP = "credssp"


@dataclass(frozen=True)
class PsrpEndpoint:
    """One host's WinRM endpoint; hashable, so it keys the runspace-pool cache.

    ``url`` is ``http(s)://HOST:PORT/wsman``. ``verify_tls`` and ``ca_bundle`` apply to https.
    Timeouts are in seconds: ``connect_timeout`` for the TCP/TLS connect, ``operation_timeout``
    the WS-Man OperationTimeout a server may hold a Receive open, ``read_timeout`` the HTTP read
    limit (kept above the operation timeout so a long-poll is not cut short).
    """

    host: str
    url: str
    auth: AuthMethod
    username: str
    password_ref: SecretRef
    verify_tls: bool = True
    ca_bundle: str | None = None
    connect_timeout: float = 10.0
    operation_timeout: int = 20
    read_timeout: float = 30.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(
                f"endpoint of host {self.host}: url {self.url!r} must look like "
                "https://HOST:5986/wsman or http://HOST:5985/wsman"
            )
        if self.auth is AuthMethod.BASIC and parts.scheme == "http" and not _is_loopback(parts):
            # Basic sends the password in clear text; WinRM only allows it over https for a
            # reason. The lab on loopback is the one exception.
            raise ConfigurationError(
                f"endpoint of host {self.host}: basic authentication over plain http would send "
                "the password in clear text; use https or ntlm/negotiate/kerberos"
            )
        if self.read_timeout <= self.operation_timeout:
            raise ConfigurationError(
                f"endpoint of host {self.host}: read_timeout ({self.read_timeout}s) must exceed "
                f"operation_timeout ({self.operation_timeout}s)"
            )

    def open_wsman(self) -> WSMan:
        """Build pypsrp's WSMan transport, resolving the password now (not before)."""
        parts = urlsplit(self.url)
        ssl = parts.scheme == "https"
        cert_validation: bool | str = self.verify_tls
        if ssl and self.verify_tls and self.ca_bundle:
            cert_validation = self.ca_bundle
        # Basic cannot wrap messages; over https TLS already protects them, over loopback http
        # (the lab) there is nothing to protect. The other protocols seal messages on http.
        encryption = "never" if self.auth is AuthMethod.BASIC else "auto"
        wsman = new_wsman(
            parts.hostname or "",
            port=parts.port,
            path=parts.path.lstrip("/") or "wsman",
            ssl=ssl,
            auth=self.auth.value,
            username=self.username,
            password=self.password_ref.resolve(),
            # pypsrp hands this to requests' ``verify``, which also takes a CA bundle path.
            cert_validation=cert_validation,
            encryption=encryption,
            connection_timeout=int(max(1, self.connect_timeout)),
            read_timeout=int(max(1, self.read_timeout)),
            operation_timeout=self.operation_timeout,
            no_proxy=True,
            # pypsrp retries a Receive that hit the HTTP read timeout with this backoff; keep it
            # short because Ferryman's own retry policy (per error type) sits above this.
            reconnection_backoff=0.2,
        )
        # messages after the first on a connection go out without requests' per-request work
        return transport.lean(wsman)

    @classmethod
    def from_ref(cls, ref: HostRef) -> PsrpEndpoint:
        """The endpoint a :class:`~workflows.steps.HostRef` describes: the one way a host
        reference becomes an endpoint (the password stays a reference).

        The HTTP read limit is the operation timeout plus 10 s, so a long-poll Receive the
        server holds for the operation timeout is never cut short.
        """
        try:
            auth = AuthMethod(ref.auth.lower())
        except ValueError:
            known = ", ".join(m.value for m in AuthMethod)
            raise ConfigurationError(
                f"host {ref.name}: auth {ref.auth!r} is not supported; use one of {known}"
            ) from None
        operation_timeout = max(1, int(ref.operation_timeout))
        return cls(
            host=ref.name,
            url=ref.url,
            auth=auth,
            username=ref.username,
            password_ref=SecretRef.parse(ref.password_ref),
            verify_tls=ref.verify_tls,
            ca_bundle=ref.ca_bundle,
            connect_timeout=ref.connect_timeout,
            operation_timeout=operation_timeout,
            read_timeout=float(operation_timeout + 10),
        )

    def __str__(self) -> str:
        return f"{self.host} ({self.url}, {self.auth.value} as {self.username})"


def _is_loopback(parts: SplitResult) -> bool:
    hostname = parts.hostname or ""
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False
