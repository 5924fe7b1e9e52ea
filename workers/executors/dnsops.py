"""What the DNS executors need from a zone target, and the RFC 2136 implementation of it.

UPDATE_DNS and RESTORE_DNS work on one zone target at a time through :class:`DnsOps`. The
default factory binds a target (:class:`~workflows.inputs.ZoneTarget`, the fabric's
``dns_zones`` entry as the compiler resolved it) to the DNS adapter, ``workers.dns``.
Snapshots travel as the adapter's JSON so they fit in an undo record.
"""

from __future__ import annotations

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
from workflows.inputs import ZoneTarget
from workflows.waiting import wait_until

# Windows DNS: seconds between reads of a switched record (AD-integrated zones replicate
# between DNS servers, but the server Ferryman asks has the record at once: the first read
# normally matches)
WINDOWS_VERIFY_INTERVAL = 0.2


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


def zone_target(target: ZoneTarget | Mapping[str, Any]) -> ZoneTarget:
    """A zone target (one given as JSON is validated)."""
    if isinstance(target, ZoneTarget):
        return target
    if not target.get("zone") and not target.get("name"):
        raise ConfigurationError("a DNS target without a zone name; recompile the run")
    try:
        return ZoneTarget.model_validate(dict(target))
    except ValueError as exc:
        raise ConfigurationError(f"DNS target {dict(target)!r}: {exc}; recompile the run") from None


def target_from_params(target: ZoneTarget | Mapping[str, Any]) -> DnsTarget:
    """The adapter's DnsTarget for a zone target written by the compiler."""
    params = zone_target(target)
    zone = params.zone
    key_file: str | None = None
    key_ref = params.tsig_key
    if key_ref:
        ref = SecretRef.parse(str(key_ref))
        if ref.scheme != "file":
            raise ConfigurationError(
                f"zone {zone}: tsig_key must be a file: reference to a tsig-keygen key file, "
                f"not {ref}"
            )
        key_file = ref.target
    return DnsTarget(
        zone=zone,
        primary=params.primary or None,
        servers=list(params.servers) if params.servers else None,
        key_file=key_file,
        algorithm=params.algorithm or "hmac-sha256",
        timeout=params.timeout or 5.0,
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
        found: list[str] = []

        def matches() -> bool | None:
            found[:] = self.dns.capture([name]).addresses(name)
            return True if found == expected else None

        if wait_until(matches, timeout=self.verify_timeout, interval=WINDOWS_VERIFY_INTERVAL):
            return {"name": name, "ok": True, "answers": [{"server": self.host}]}
        raise DnsVerificationTimeout(
            f"{name} in {self.zone} on {self.host} answers {', '.join(found) or 'nothing'}"
            f", not {', '.join(expected)}; check the DNS Server, then resume",
            zone=self.zone,
            server=self.host,
            stale={self.host: list(found)},
        )

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


def default_dns_ops(target: ZoneTarget | Mapping[str, Any], runner_for: RunnerFor) -> DnsOps:
    """DnsOps for a zone target: ``kind`` rfc2136 (default) or windows (via its ``vmm``)."""
    if isinstance(target, Mapping) and target.get("kind", "rfc2136") not in ("rfc2136", "windows"):
        zone = target.get("zone") or target.get("name")
        raise ConfigurationError(
            f"zone {zone}: DNS kind {target['kind']!r} is unknown; use rfc2136 or windows"
        )
    params = zone_target(target)
    kind, zone = params.kind, params.zone
    verify_timeout = params.verify_timeout or 60.0
    if kind == "rfc2136":
        return Rfc2136Zone(target_from_params(params), verify_timeout=verify_timeout)
    if kind == "windows":
        host = params.vmm
        if not host:
            raise ConfigurationError(
                f"zone {zone}: a windows zone needs the site whose VMM server runs the DNS "
                "cmdlets (dns_zones.{zone}.site); recompile the run"
            )
        return WindowsZone(runner_for(str(host)), zone, str(host), verify_timeout=verify_timeout)
    raise ConfigurationError(f"zone {zone}: DNS kind {kind!r} is unknown; use rfc2136 or windows")
