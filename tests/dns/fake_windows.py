"""A small in-memory Windows DNS Server behind the PowerShellRunner protocol, for tests.

It answers the four cmdlets WindowsDns uses with objects shaped like the real ones
(``HostName``, ``RecordType``, ``TimeToLive`` as a TimeSpan string, ``RecordData`` with
``IPv4Address``/``IPv6Address``) and records every call.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from workers.dns.windows import timespan, ttl_seconds
from workers.errors import CmdletFailed
from workers.powershell import PSError, PSResult

FIELD = {"A": "IPv4Address", "AAAA": "IPv6Address"}


@dataclass
class Call:
    """One cmdlet invocation as the runner received it."""

    cmdlet: str
    parameters: dict[str, Any]
    switches: tuple[str, ...]


@dataclass
class FakeWindowsDnsServer:
    """Zones of records; ``raise_not_found`` makes a missing name a terminating error."""

    zones: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    raise_not_found: bool = False
    fail: dict[str, str] = field(default_factory=dict)  # cmdlet -> error message

    def add(self, zone: str, name: str, rrtype: str, value: str, ttl: int = 3600) -> None:
        """Seed a record."""
        self.zones.setdefault(zone, []).append(
            {
                "DistinguishedName": f"DC={name},DC={zone},cn=MicrosoftDNS,DC=DomainDnsZones",
                "HostName": name,
                "RecordClass": "IN",
                "RecordType": rrtype,
                "Timestamp": None,
                "TimeToLive": timespan(ttl),
                "RecordData": {FIELD[rrtype]: value},
            }
        )

    def values(self, zone: str, name: str, rrtype: str) -> list[tuple[str, int]]:
        """(address, ttl seconds) of matching records, sorted."""
        return sorted(
            (r["RecordData"][FIELD[rrtype]], ttl_seconds(r["TimeToLive"]))
            for r in self.zones.get(zone, [])
            if r["HostName"] == name and r["RecordType"] == rrtype
        )

    def mutations(self) -> list[str]:
        """The cmdlets called that change records."""
        return [c.cmdlet for c in self.calls if not c.cmdlet.startswith("Get-")]

    # The PowerShellRunner protocol

    def run(
        self,
        cmdlet: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        switches: Sequence[str] = (),
        timeout: float | None = None,
    ) -> PSResult:
        params = dict(parameters or {})
        self.calls.append(Call(cmdlet, copy.deepcopy(params), tuple(switches)))
        if cmdlet in self.fail:
            return _error(self.fail[cmdlet], f"WIN32 9999,{cmdlet}")
        zone = params["ZoneName"]
        if zone not in self.zones:
            return _error(f"The zone {zone} was not found", f"WIN32 9601,{cmdlet}")
        handler = getattr(self, "_" + cmdlet.replace("-", "_").lower())
        result: PSResult = handler(self.zones[zone], params, tuple(switches))
        return result

    def run_pipeline(
        self,
        commands: Sequence[tuple[str, Mapping[str, Any], Sequence[str]]],
        *,
        timeout: float | None = None,
    ) -> PSResult:
        """A one-command pipeline is :meth:`run`; the DNS adapter chains no cmdlets, so a
        longer pipeline fails the test rather than being answered by guesswork."""
        if len(commands) != 1:
            chain = " | ".join(cmdlet for cmdlet, _, _ in commands) or "nothing"
            raise AssertionError(f"the DNS adapter must not pipe cmdlets (got {chain})")
        [(cmdlet, parameters, switches)] = commands
        return self.run(cmdlet, parameters, switches=switches, timeout=timeout)

    def run_script(
        self,
        script: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> PSResult:
        raise AssertionError("the DNS adapter must not build scripts")

    def _get_dnsserverresourcerecord(
        self, records: list[dict[str, Any]], p: dict[str, Any], switches: tuple[str, ...]
    ) -> PSResult:
        found = [
            copy.deepcopy(r)
            for r in records
            if r["HostName"] == p["Name"] and r["RecordType"] == p["RRType"]
        ]
        if found:
            return PSResult(output=found)
        message = f"Failed to get {p['Name']} record in {p['ZoneName']} zone on server DNS01."
        error_id = "WIN32 9714,Get-DnsServerResourceRecord"
        if self.raise_not_found:
            raise CmdletFailed(message, fully_qualified_error_id=error_id)
        return _error(message, error_id)

    def _add(self, records: list[dict[str, Any]], p: dict[str, Any], rrtype: str) -> PSResult:
        value = str(ipaddress.ip_address(p[FIELD[rrtype]]))
        if any(
            r["HostName"] == p["Name"] and r["RecordData"].get(FIELD[rrtype]) == value
            for r in records
        ):
            return _error(
                "Resource record already exists.", "WIN32 9711,Add-DnsServerResourceRecordA"
            )
        zone = p["ZoneName"]
        self.add(zone, p["Name"], rrtype, value, ttl_seconds(p.get("TimeToLive", "01:00:00")))
        return PSResult()

    def _add_dnsserverresourcerecorda(
        self, records: list[dict[str, Any]], p: dict[str, Any], switches: tuple[str, ...]
    ) -> PSResult:
        return self._add(records, p, "A")

    def _add_dnsserverresourcerecordaaaa(
        self, records: list[dict[str, Any]], p: dict[str, Any], switches: tuple[str, ...]
    ) -> PSResult:
        return self._add(records, p, "AAAA")

    def _set_dnsserverresourcerecord(
        self, records: list[dict[str, Any]], p: dict[str, Any], switches: tuple[str, ...]
    ) -> PSResult:
        old, new = p["OldInputObject"], p["NewInputObject"]
        if (old["HostName"], old["RecordType"]) != (new["HostName"], new["RecordType"]):
            return _error("Cannot change the name or type of a record.", "InvalidArgument")
        for i, record in enumerate(records):
            if record == old:
                records[i] = copy.deepcopy(new)
                return PSResult()
        return _error("The old record was not found.", "WIN32 9714,Set-DnsServerResourceRecord")

    def _remove_dnsserverresourcerecord(
        self, records: list[dict[str, Any]], p: dict[str, Any], switches: tuple[str, ...]
    ) -> PSResult:
        assert "Force" in switches, "Remove without -Force would prompt on a real server"
        rrtype = p["RRType"]
        before = len(records)
        records[:] = [
            r
            for r in records
            if not (
                r["HostName"] == p["Name"]
                and r["RecordType"] == rrtype
                and r["RecordData"][FIELD[rrtype]] == p["RecordData"]
            )
        ]
        if len(records) == before:
            return _error("Record not found.", "WIN32 9714,Remove-DnsServerResourceRecord")
        return PSResult()


def _error(message: str, error_id: str) -> PSResult:
    return PSResult(errors=[PSError(message, error_id, "NotSpecified", "")], had_errors=True)
