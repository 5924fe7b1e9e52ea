"""What a fabric's DNS zone resolves to: the zone, its primary, its servers and its key."""

from __future__ import annotations

import socket
from dataclasses import asdict, dataclass, fields
from typing import Any

import dns.name

from workers.dns.errors import DnsConfigurationError
from workers.dns.tsig import DEFAULT_ALGORITHM, TsigKey, load_key_file

DNS_PORT = 53


@dataclass(frozen=True)
class Server:
    """One DNS server endpoint. ``str(server)`` is ``host:port`` (``[v6]:port`` for IPv6)."""

    host: str
    port: int = DNS_PORT

    @classmethod
    def parse(cls, text: str, default_port: int = DNS_PORT) -> Server:
        """Parse ``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address."""
        text = text.strip()
        host, port = text, default_port
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            if rest.startswith(":"):
                port = _port(rest[1:], text)
        elif text.count(":") == 1:
            host, _, port_text = text.partition(":")
            port = _port(port_text, text)
        if not host:
            raise DnsConfigurationError(f"DNS server {text!r} has no host; write HOST[:PORT]")
        return cls(host, port)

    def address(self) -> str:
        """The IP address to send to: the host itself, or its first resolved address."""
        try:
            infos = socket.getaddrinfo(self.host, self.port, proto=socket.IPPROTO_UDP)
        except OSError as exc:
            raise DnsConfigurationError(
                f"cannot resolve DNS server {self} ({exc}); configure it as an address"
            ) from None
        return str(infos[0][4][0])

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise DnsConfigurationError(f"DNS server {whole!r} has an invalid port; write HOST[:PORT]")
    return int(text)


@dataclass(frozen=True)
class DnsTarget:
    """One zone and how to reach and change it.

    ``primary`` is the server that takes updates (``host:port``); when None it is the zone's
    SOA MNAME. ``servers`` are the authoritative servers verification polls; when None they
    are the zone's NS records. Servers found through SOA/NS records are reached on ``port``.
    ``key_file`` is the path of a ``tsig-keygen`` key file, or ``file:PATH`` / ``env:NAME``
    (a reference, never the secret); its ``algorithm`` clause wins, and ``algorithm`` applies
    to keys without one.
    """

    zone: str
    primary: str | None = None
    servers: list[str] | None = None
    key_file: str | None = None
    algorithm: str = DEFAULT_ALGORITHM
    timeout: float = 5.0
    key_name: str | None = None
    port: int = DNS_PORT

    def __post_init__(self) -> None:
        if not self.zone.strip(".").strip():
            raise DnsConfigurationError("a DNS target needs a zone name, e.g. corp.example")
        if self.timeout <= 0:
            raise DnsConfigurationError(
                f"zone {self.zone}: timeout must be a positive number of seconds",
                zone=self.zone,
            )
        for text in [self.primary, *(self.servers or [])]:
            if text is not None:
                Server.parse(text)  # refuse a malformed host:port now, not mid-failover

    @property
    def origin(self) -> dns.name.Name:
        """The zone as an absolute dnspython name."""
        return dns.name.from_text(self.zone)

    @property
    def key_ref(self) -> str:
        """How errors name the key: its file's path (never the secret)."""
        return self.key_file or ""

    def load_key(self) -> TsigKey | None:
        """Read the TSIG key now (at use, not at import or construction)."""
        if self.key_file is None:
            return None
        return load_key_file(self.key_file, name=self.key_name, default_algorithm=self.algorithm)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (no secrets: the key is a file reference)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DnsTarget:
        """Inverse of :meth:`to_dict`; unknown keys are refused by name."""
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise DnsConfigurationError(
                f"DNS target has unknown settings {', '.join(unknown)}; "
                f"known: {', '.join(f.name for f in fields(cls))}"
            )
        return cls(**data)
