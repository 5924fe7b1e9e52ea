"""Record sets and snapshots: what a zone held, in a form a run can store and restore.

A :class:`Snapshot` records, for every (name, type) it was asked about, the exact TTL and
values, *including absence* (an empty record set), so restoring it deletes what a switch
added as well as putting back what it replaced. Both are plain JSON via ``to_dict``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import dns.name
import dns.reversename

from workers.dns.errors import DnsConfigurationError

ADDRESS_TYPES = ("A", "AAAA")


def absolute_name(name: str, zone: str) -> str:
    """``name`` made absolute in ``zone``: ``sql-01`` -> ``sql-01.corp.example.``.

    A name ending in a dot is already absolute; ``@`` is the zone apex.
    """
    origin = dns.name.from_text(zone)
    if name in ("@", ""):
        return origin.to_text().lower()
    return dns.name.from_text(name, origin).to_text().lower()


def literal_labels(name: dns.name.Name) -> list[str]:
    """The labels of ``name`` as a person wrote them: no presentation escapes (``\\$``,
    ``\\(``, ``\\;`` ...) and IDNA A-labels (``xn--``) back in Unicode.

    ``to_text()`` and ``to_unicode()`` both escape ``" ( ) . ; \\ @ $``: right for a zone
    file or dnspython, wrong for a system that takes names as plain text (the Windows DNS
    Server cmdlets). A label that plain text cannot carry (a dot inside it, or bytes that are
    not UTF-8) raises :class:`DnsConfigurationError`.
    """
    labels = []
    for raw in name.labels:
        if raw == b"":
            continue  # the root label: absolute names end with it
        try:
            text = raw[4:].decode("punycode") if raw.lower().startswith(b"xn--") else raw.decode()
        except UnicodeError:
            text = None
        if text is None or "." in text:
            shown = dns.name.Name([raw]).to_text()
            raise DnsConfigurationError(
                f"the DNS label {shown!r} of {name} cannot be written as plain text (a dot "
                "inside a label, or bytes that are not UTF-8); rename the record in the plan"
            )
        labels.append(text)
    return labels


def parse_addresses(addresses: list[str]) -> dict[str, list[str]]:
    """Split addresses into ``{"A": [...], "AAAA": [...]}``, canonical and sorted."""
    split: dict[str, set[str]] = {"A": set(), "AAAA": set()}
    for text in addresses:
        try:
            ip = ipaddress.ip_address(text.strip())
        except ValueError:
            raise DnsConfigurationError(
                f"{text!r} is not an IPv4 or IPv6 address; give addresses like 10.20.1.11"
            ) from None
        split["A" if ip.version == 4 else "AAAA"].add(str(ip))
    return {rrtype: sorted(values) for rrtype, values in split.items()}


def reverse_name(address: str) -> str:
    """The PTR owner name of an address: ``10.20.1.11`` -> ``11.1.20.10.in-addr.arpa.``."""
    return dns.reversename.from_address(address).to_text().lower()


@dataclass(frozen=True)
class RecordSet:
    """All records of one type at one name, as the primary served them.

    ``values`` empty means the name had no records of this type; ``ttl`` is then 0.
    """

    name: str
    rrtype: str
    ttl: int
    values: tuple[str, ...]
    zone: str

    @property
    def exists(self) -> bool:
        """True when the name had at least one record of this type."""
        return bool(self.values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "rrtype": self.rrtype,
            "ttl": self.ttl,
            "values": list(self.values),
            "zone": self.zone,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RecordSet:
        """Inverse of :meth:`to_dict`."""
        return cls(
            name=str(data["name"]),
            rrtype=str(data["rrtype"]),
            ttl=int(data["ttl"]),
            values=tuple(str(v) for v in data["values"]),
            zone=str(data["zone"]),
        )


@dataclass(frozen=True)
class Snapshot:
    """Record sets captured together from one server, with when and where."""

    zone: str
    records: tuple[RecordSet, ...]
    server: str = ""
    captured_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def get(self, name: str, rrtype: str) -> RecordSet | None:
        """The captured set for ``name`` (relative to the zone or absolute) and ``rrtype``."""
        fqdn = absolute_name(name, self.zone)
        for rrset in self.records:
            if rrset.name == fqdn and rrset.rrtype == rrtype:
                return rrset
        return None

    def addresses(self, name: str) -> list[str]:
        """Every A and AAAA value captured for ``name``, sorted."""
        found: list[str] = []
        for rrtype in ADDRESS_TYPES:
            rrset = self.get(name, rrtype)
            if rrset is not None:
                found.extend(rrset.values)
        return sorted(found)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; holds no secret."""
        return {
            "zone": self.zone,
            "server": self.server,
            "captured_at": self.captured_at,
            "records": [r.to_dict() for r in self.records],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Snapshot:
        """Inverse of :meth:`to_dict`."""
        return cls(
            zone=str(data["zone"]),
            records=tuple(RecordSet.from_dict(r) for r in data["records"]),
            server=str(data.get("server", "")),
            captured_at=str(data.get("captured_at", "")),
        )
