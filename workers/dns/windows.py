"""The same capture/switch/restore on a site's Windows DNS Server, through its cmdlets.

Cmdlets are run through a :class:`~workers.powershell.PowerShellRunner` (typed calls, never
script text): ``Get-DnsServerResourceRecord`` to read, ``Add-DnsServerResourceRecordA``/``AAAA``
and ``Remove-DnsServerResourceRecord -RecordData`` to change. New addresses are added before
old ones are removed, so the name never goes without an address. ``Set-DnsServerResourceRecord``
is not used: its ``-OldInputObject``/``-NewInputObject`` take the server's own CimInstance
objects, which a typed remote call cannot hand it (a hashtable, or the client's deserialised
copy, fails PowerShell's argument transformation). A record whose TTL alone changes is
therefore removed and added again. Snapshots are the same
:class:`~workers.dns.records.Snapshot` as the RFC 2136 path.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import dns.name

from workers.dns.errors import DnsConfigurationError, DnsPermanentError
from workers.dns.records import (
    ADDRESS_TYPES,
    RecordSet,
    Snapshot,
    absolute_name,
    literal_labels,
    parse_addresses,
)
from workers.dns.switch import DEFAULT_TTL, SwitchResult
from workers.errors import CmdletFailed
from workers.powershell import PowerShellRunner, PSResult

# "Failed to get the zone scope / record": the name has no records of that type.
NOT_FOUND_ERROR = "WIN32 9714"
_DATA_FIELD = {"A": "IPv4Address", "AAAA": "IPv6Address"}
_ADD_CMDLET = {"A": "Add-DnsServerResourceRecordA", "AAAA": "Add-DnsServerResourceRecordAAAA"}
_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d+):(\d+):(\d+)(?:\.\d+)?$")
# CLIXML carries TimeSpan as an xs:duration (``PT5M``, ``P1DT1M1S``); pypsrp hands over the text.
_DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)(?:\.\d+)?S)?)?$")


class DnsCmdletError(DnsPermanentError):
    """A Windows DNS Server cmdlet reported an error record."""


def timespan(seconds: int) -> str:
    """Seconds as a .NET TimeSpan string (``300`` -> ``00:05:00``), as the cmdlets take TTLs."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}.{clock}" if days else clock


def ttl_seconds(value: Any) -> int:
    """A record's TimeToLive as seconds: a number, ``timedelta``, TimeSpan text, xs:duration
    text (how CLIXML carries a TimeSpan), or a TimeSpan's properties as a dict."""
    if isinstance(value, timedelta):
        return int(value.total_seconds())
    if isinstance(value, dict):
        if "TotalSeconds" in value:
            return int(float(value["TotalSeconds"]))
        parts = {k: int(value.get(k, 0)) for k in ("Days", "Hours", "Minutes", "Seconds")}
        return (
            parts["Days"] * 86400 + parts["Hours"] * 3600 + parts["Minutes"] * 60 + parts["Seconds"]
        )
    if isinstance(value, int | float):
        return int(value)
    text = str(value).strip()
    duration = _DURATION.match(text)
    if duration and text != "P" and not text.endswith("T"):
        days, hours, minutes, secs = (int(g or 0) for g in duration.groups())
        return days * 86400 + hours * 3600 + minutes * 60 + secs
    match = _TIMESPAN.match(text)
    if not match:
        raise DnsConfigurationError(f"cannot read TimeToLive {value!r} from Windows DNS")
    days, hours, minutes, secs = (int(g or 0) for g in match.groups())
    return days * 86400 + hours * 3600 + minutes * 60 + secs


def record_value(record: dict[str, Any], rrtype: str) -> str:
    """The address in one record object (``RecordData.IPv4Address`` or ``IPv6Address``)."""
    data = record.get("RecordData")
    field = _DATA_FIELD[rrtype]
    raw = data.get(field) if isinstance(data, dict) else data
    if raw is None:
        raw = record.get(field)
    try:
        return str(ipaddress.ip_address(str(raw).strip()))
    except ValueError:
        raise DnsConfigurationError(
            f"cannot read the {rrtype} address of a Windows DNS record ({raw!r})"
        ) from None


@dataclass
class _Found:
    """A record as read: its canonical value and TTL."""

    value: str
    ttl: int


class WindowsDns:
    """Capture, switch and restore A/AAAA records of one zone on a Windows DNS Server."""

    def __init__(
        self, runner: PowerShellRunner, zone: str, *, timeout: float | None = None
    ) -> None:
        self.runner = runner
        self.zone = zone.rstrip(".")
        self.timeout = timeout

    def _relative(self, fqdn: str) -> str:
        """The cmdlets' ``-Name`` for ``fqdn``: relative to the zone, as plain text.

        ``fqdn`` is in DNS presentation form (what :func:`absolute_name` and snapshots hold:
        ``rec\\$\\(x\\).corp.example.``); the cmdlets take names literally, so the labels
        are decoded (``rec$(x)``) rather than passing the escapes on as part of the name.
        """
        name = dns.name.from_text(fqdn)
        origin = dns.name.from_text(self.zone)
        if name == origin:
            return "@"
        if not name.is_subdomain(origin):
            raise DnsConfigurationError(
                f"record {fqdn} is not in zone {self.zone}; give a name relative to the zone "
                "or an FQDN ending in it",
                zone=self.zone,
            )
        relative = ".".join(literal_labels(name.relativize(origin)))
        if relative == "@":
            # "@" is how the cmdlets spell the apex: a label "@" would name the zone itself.
            raise DnsConfigurationError(
                f"record {fqdn}: a record named '@' cannot be told apart from the zone apex "
                "on Windows DNS; rename it in the plan",
                zone=self.zone,
            )
        return relative

    def _run(
        self, cmdlet: str, parameters: dict[str, Any], switches: tuple[str, ...] = ()
    ) -> PSResult:
        result = self.runner.run(cmdlet, parameters, switches=switches, timeout=self.timeout)
        self._check(cmdlet, result)
        return result

    def _check(self, cmdlet: str, result: PSResult) -> None:
        """Raise :class:`DnsCmdletError` when the pipeline reported any error record."""
        if not (result.errors or result.had_errors):
            return
        first = result.errors[0] if result.errors else None
        detail = f"{first.message} ({first.fully_qualified_error_id})" if first else "failed"
        raise DnsCmdletError(
            f"{cmdlet} on zone {self.zone} reported: {detail}; check the record and the "
            "DNS server's event log",
            zone=self.zone,
        )

    def _read(self, fqdn: str, rrtype: str) -> list[_Found]:
        params = {"ZoneName": self.zone, "Name": self._relative(fqdn), "RRType": rrtype}
        try:
            result = self.runner.run("Get-DnsServerResourceRecord", params, timeout=self.timeout)
        except CmdletFailed as exc:
            if NOT_FOUND_ERROR in exc.fully_qualified_error_id:
                return []
            raise
        if any(NOT_FOUND_ERROR in e.fully_qualified_error_id for e in result.errors):
            return []
        self._check("Get-DnsServerResourceRecord", result)
        return [
            _Found(record_value(obj, rrtype), ttl_seconds(obj.get("TimeToLive", 0)))
            for obj in result.output
            if str(obj.get("RecordType", rrtype)) == rrtype
        ]

    def _rrset(self, fqdn: str, rrtype: str, found: list[_Found]) -> RecordSet:
        values = tuple(sorted({f.value for f in found}))
        ttl = found[0].ttl if found else 0
        return RecordSet(fqdn, rrtype, ttl, values, self.zone)

    def capture(
        self, names: list[str], rrtypes: tuple[str, ...] | list[str] = ADDRESS_TYPES
    ) -> Snapshot:
        """Read every (name, type); absent ones are captured as empty sets."""
        records = []
        for name in names:
            fqdn = absolute_name(name, self.zone)
            for rrtype in rrtypes:
                self._check_type(rrtype)
                records.append(self._rrset(fqdn, rrtype, self._read(fqdn, rrtype)))
        return Snapshot(self.zone, tuple(records), server="windows")

    def switch(self, name: str, addresses: list[str], *, ttl: int | None = None) -> SwitchResult:
        """Replace every A/AAAA of ``name`` with ``addresses``; returns old and new records."""
        if not addresses:
            raise DnsConfigurationError(
                f"no address given for {name}; give at least one", zone=self.zone
            )
        wanted = parse_addresses(addresses)
        old = self.capture([name])
        ttls = [r.ttl for r in old.records if r.exists]
        new_ttl = ttl if ttl is not None else (ttls[0] if ttls else DEFAULT_TTL)
        fqdn = absolute_name(name, self.zone)
        changed = False
        for rrtype in ADDRESS_TYPES:
            changed = self._apply(fqdn, rrtype, wanted[rrtype], new_ttl) or changed
        return SwitchResult(old=old, new=self.capture([name]), changed=changed)

    def restore(self, snapshot: Snapshot) -> None:
        """Put back exactly the captured A/AAAA sets (values, TTL, absence)."""
        for rrset in snapshot.records:
            self._check_type(rrset.rrtype)
            self._apply(rrset.name, rrset.rrtype, list(rrset.values), rrset.ttl)

    def _check_type(self, rrtype: str) -> None:
        if rrtype not in _DATA_FIELD:
            raise DnsConfigurationError(
                f"Windows DNS switching handles A and AAAA records, not {rrtype}",
                zone=self.zone,
            )

    def _apply(self, fqdn: str, rrtype: str, values: list[str], ttl: int) -> bool:
        """Make ``fqdn``/``rrtype`` exactly ``values`` at ``ttl``; True when anything changed."""
        current = self._read(fqdn, rrtype)
        name = self._relative(fqdn)
        stale = [f.value for f in current if f.value not in values]
        missing = [v for v in values if v not in {f.value for f in current}]
        retimed = [f.value for f in current if f.value in values and f.ttl != ttl]
        # new addresses first, then the old ones go: the name never goes without an address
        for value in missing:
            self._add(name, rrtype, value, ttl)
        for value in stale:
            self._remove(name, rrtype, value)
        # the same data cannot be there twice, so a new TTL is a remove and an add; with
        # other addresses of the name in place meanwhile, unless it is the only one
        for value in retimed:
            self._remove(name, rrtype, value)
            self._add(name, rrtype, value, ttl)
        return bool(missing or stale or retimed)

    def _add(self, name: str, rrtype: str, value: str, ttl: int) -> None:
        params = {"ZoneName": self.zone, "Name": name, _DATA_FIELD[rrtype]: value}
        self._run(_ADD_CMDLET[rrtype], {**params, "TimeToLive": timespan(ttl)})

    def _remove(self, name: str, rrtype: str, value: str) -> None:
        params = {"ZoneName": self.zone, "Name": name, "RRType": rrtype, "RecordData": value}
        self._run("Remove-DnsServerResourceRecord", params, ("Force",))
