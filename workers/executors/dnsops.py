"""What the DNS executors need from a zone target, and the RFC 2136 implementation of it.

UPDATE_DNS and RESTORE_DNS work on one zone target at a time through :class:`DnsOps`. The
default factory binds a target (the JSON the compiler writes from the fabric's ``dns_zones``:
``zone, kind, primary, servers, tsig_key, algorithm, timeout, verify_timeout``) to the DNS
adapter, ``workers.dns``. Snapshots travel as the adapter's JSON so they fit in an undo record.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from plans.credentials import SecretRef
from plans.errors import ConfigurationError
from workers.dns.errors import DnsVerificationTimeout
from workers.dns.records import ADDRESS_TYPES, Snapshot, parse_addresses
from workers.dns.switch import capture, restore, switch
from workers.dns.target import DnsTarget
from workers.dns.verify import verify
from workers.dns.windows import WindowsDns
from workers.powershell import PowerShellRunner


class DnsOps(Protocol):
    """Switch, verify and restore the address records of names in one zone."""

    zone: str

    def switch(
        self, name: str, addresses: list[str], *, ttl: int | None, ptr: bool
    ) -> tuple[dict[str, Any], bool]:
        """Point ``name`` at ``addresses``; return the records before (JSON) and whether
        anything was sent (False when they already pointed there)."""
        ...

    def verify(self, name: str, addresses: list[str]) -> dict[str, Any]:
        """Wait until every authoritative server answers ``addresses``; the per-server result."""
        ...

    def restore(self, snapshot: Mapping[str, Any]) -> bool:
        """Put a snapshot back and verify it; False when the zone already matched it."""
        ...


class Rfc2136Zone:
    """:class:`DnsOps` over RFC 2136 + TSIG (BIND and anything else that speaks it)."""

    def __init__(self, target: DnsTarget, *, verify_timeout: float = 60.0) -> None:
        self.target = target
        self.zone = target.zone
        self.verify_timeout = verify_timeout

    def switch(
        self, name: str, addresses: list[str], *, ttl: int | None, ptr: bool
    ) -> tuple[dict[str, Any], bool]:
        """See :meth:`DnsOps.switch`."""
        done = switch(self.target, name, addresses, ttl=ttl, ptr=ptr)
        return done.old.to_dict(), done.changed

    def verify(self, name: str, addresses: list[str]) -> dict[str, Any]:
        """See :meth:`DnsOps.verify`."""
        return verify(self.target, name, addresses, timeout=self.verify_timeout).to_dict()

    def restore(self, snapshot: Mapping[str, Any]) -> bool:
        """See :meth:`DnsOps.restore`."""
        wanted = Snapshot.from_dict(dict(snapshot))
        if self._matches(wanted):
            return False
        restore(self.target, wanted)
        for name in _forward_names(wanted):
            verify(self.target, name, wanted.addresses(name), timeout=self.verify_timeout)
        return True

    def _matches(self, wanted: Snapshot) -> bool:
        for rrset in wanted.records:
            now = capture(self.target, [rrset.name], [rrset.rrtype]).records[0]
            if sorted(now.values) != sorted(rrset.values):
                return False
            if rrset.exists and now.ttl != rrset.ttl:
                return False
        return True


def _forward_names(snapshot: Snapshot) -> list[str]:
    names = {r.name for r in snapshot.records if r.rrtype in ADDRESS_TYPES}
    return sorted(names)


def target_from_params(params: Mapping[str, Any]) -> DnsTarget:
    """The adapter's DnsTarget for a zone target written by the compiler."""
    zone = str(params.get("zone") or "")
    if not zone:
        raise ConfigurationError("a DNS target without a zone name; recompile the run")
    key_file: str | None = None
    key_ref = params.get("tsig_key")
    if key_ref:
        ref = SecretRef.parse(str(key_ref))
        if ref.scheme != "file":
            raise ConfigurationError(
                f"zone {zone}: tsig_key must be a file: reference to a tsig-keygen key file, "
                f"not {ref}"
            )
        key_file = ref.target
    servers = params.get("servers")
    return DnsTarget(
        zone=zone,
        primary=str(params["primary"]) if params.get("primary") else None,
        servers=[str(s) for s in servers] if servers else None,
        key_file=key_file,
        algorithm=str(params.get("algorithm") or "hmac-sha256"),
        timeout=float(params.get("timeout") or 5.0),
    )


class WindowsZone:
    """:class:`DnsOps` on a site's Windows DNS Server through its cmdlets (over PSRP)."""

    def __init__(
        self, runner: PowerShellRunner, zone: str, host: str, *, verify_timeout: float = 60.0
    ) -> None:
        self.dns = WindowsDns(runner, zone)
        self.zone = zone
        self.host = host
        self.verify_timeout = verify_timeout

    def switch(
        self, name: str, addresses: list[str], *, ttl: int | None, ptr: bool
    ) -> tuple[dict[str, Any], bool]:
        """See :meth:`DnsOps.switch` (PTR records are not managed on Windows DNS)."""
        if ptr:
            raise ConfigurationError(
                f"zone {self.zone}: PTR updates through Windows DNS are not supported; set "
                "ptr: false for this record or serve the zone over RFC 2136"
            )
        done = self.dns.switch(name, addresses, ttl=ttl)
        return done.old.to_dict(), done.changed

    def verify(self, name: str, addresses: list[str]) -> dict[str, Any]:
        """Read the records back from the DNS Server until they match (AD replicates them)."""
        split = parse_addresses(addresses)
        expected = sorted(a for values in split.values() for a in values)
        deadline = time.monotonic() + self.verify_timeout
        while True:
            found = self.dns.capture([name]).addresses(name)
            if found == expected:
                return {"name": name, "ok": True, "answers": [{"server": self.host}]}
            if time.monotonic() >= deadline:
                raise DnsVerificationTimeout(
                    f"{name} in {self.zone} on {self.host} answers {', '.join(found) or 'nothing'}"
                    f", not {', '.join(expected)}; check the DNS Server, then resume",
                    zone=self.zone,
                    server=self.host,
                    stale={self.host: found},
                )
            time.sleep(0.5)

    def restore(self, snapshot: Mapping[str, Any]) -> bool:
        """See :meth:`DnsOps.restore`."""
        wanted = Snapshot.from_dict(dict(snapshot))
        names = _forward_names(wanted)
        now = self.dns.capture(names)
        if all(now.addresses(n) == wanted.addresses(n) for n in names) and all(
            (now.get(r.name, r.rrtype) or r).ttl == r.ttl for r in wanted.records if r.exists
        ):
            return False
        self.dns.restore(wanted)
        return True


RunnerFor = Callable[[str], PowerShellRunner]


def default_dns_ops(params: Mapping[str, Any], runner_for: RunnerFor) -> DnsOps:
    """DnsOps for a zone target: ``kind`` rfc2136 (default) or windows (via ``params.vmm``)."""
    kind = str(params.get("kind") or "rfc2136")
    verify_timeout = float(params.get("verify_timeout") or 60.0)
    zone = str(params.get("zone") or "")
    if kind == "rfc2136":
        return Rfc2136Zone(target_from_params(params), verify_timeout=verify_timeout)
    if kind == "windows":
        host = params.get("vmm") or params.get("host")
        if not host:
            raise ConfigurationError(
                f"zone {zone}: a windows zone needs the site whose VMM server runs the DNS "
                "cmdlets (dns_zones.{zone}.site); recompile the run"
            )
        return WindowsZone(runner_for(str(host)), zone, str(host), verify_timeout=verify_timeout)
    raise ConfigurationError(f"zone {zone}: DNS kind {kind!r} is unknown; use rfc2136 or windows")
