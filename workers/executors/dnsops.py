"""What the DNS executors need from a zone target, and the RFC 2136 implementation of it.

UPDATE_DNS and RESTORE_DNS work on one zone target at a time through :class:`DnsOps`. The
default factory binds a target (the JSON the compiler writes from the fabric's ``dns_zones``:
``zone, kind, primary, servers, tsig_key, algorithm, timeout, verify_timeout``) to the DNS
adapter, ``workers.dns``. Snapshots travel as the adapter's JSON so they fit in an undo record.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from plans.credentials import SecretRef
from plans.errors import ConfigurationError
from workers.dns.records import ADDRESS_TYPES, Snapshot
from workers.dns.switch import capture, restore, switch
from workers.dns.target import DnsTarget
from workers.dns.verify import verify


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


def default_dns_factory(params: Mapping[str, Any]) -> DnsOps:
    """DnsOps for a zone target; ``kind`` rfc2136 (the default) is supported."""
    kind = str(params.get("kind") or "rfc2136")
    if kind != "rfc2136":
        raise ConfigurationError(
            f"zone {params.get('zone', '?')}: DNS kind {kind!r} is not supported by the step "
            "executors yet; use kind rfc2136 for zones a run updates"
        )
    verify_timeout = float(params.get("verify_timeout") or 60.0)
    return Rfc2136Zone(target_from_params(params), verify_timeout=verify_timeout)
