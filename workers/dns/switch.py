"""Capture, switch, lower TTLs and restore records over RFC 2136 + TSIG.

Every change reads the records first and sends them as prerequisites, so an update never
overwrites a change someone else made in between (that answers :class:`DnsConflict`, which a
retry resolves). A switch to the records already there sends nothing, so a redelivered task
is harmless.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import dns.update

from workers.dns.errors import DnsConfigurationError, DnsNotApplied
from workers.dns.records import (
    ADDRESS_TYPES,
    RecordSet,
    Snapshot,
    absolute_name,
    parse_addresses,
    reverse_name,
)
from workers.dns.rfc2136 import find_zone, new_update, primary_server, read_rrset, send_update
from workers.dns.target import DnsTarget, Server
from workers.dns.tsig import TsigKey

DEFAULT_TTL = 300


@dataclass(frozen=True)
class SwitchResult:
    """The records before and after a switch, both as captured from the primary."""

    old: Snapshot
    new: Snapshot
    changed: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"old": self.old.to_dict(), "new": self.new.to_dict(), "changed": self.changed}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SwitchResult:
        """Inverse of :meth:`to_dict`."""
        return cls(
            Snapshot.from_dict(data["old"]), Snapshot.from_dict(data["new"]), data["changed"]
        )


def _zone_for(fqdn: str, target: DnsTarget, server: Server) -> str:
    """The target's zone for names inside it; otherwise ask the server (reverse zones)."""
    zone = target.zone.lower().rstrip(".")
    if fqdn == zone + "." or fqdn.endswith("." + zone + "."):
        return zone
    return find_zone(server, fqdn, timeout=target.timeout).rstrip(".")


def _read(target: DnsTarget, server: Server, wanted: list[tuple[str, str]]) -> list[RecordSet]:
    return [
        read_rrset(server, fqdn, rrtype, _zone_for(fqdn, target, server), timeout=target.timeout)
        for fqdn, rrtype in wanted
    ]


def capture(
    target: DnsTarget, names: list[str], rrtypes: tuple[str, ...] | list[str] = ADDRESS_TYPES
) -> Snapshot:
    """Read every (name, type) from the zone's primary, absent ones included."""
    server = primary_server(target)
    wanted = [(absolute_name(n, target.zone), t.upper()) for n in names for t in rrtypes]
    return Snapshot(target.zone, tuple(_read(target, server, wanted)), str(server))


def _send(
    target: DnsTarget, server: Server, key: TsigKey | None, update: dns.update.UpdateMessage
) -> None:
    # An UPDATE's zone section holds exactly the zone it was made for.
    zone = update.zone[0].name.to_text().rstrip(".")
    send_update(server, update, zone=zone, key=key, timeout=target.timeout)


def _require(update: dns.update.UpdateMessage, rrset: RecordSet) -> None:
    """Prerequisite: the set is still exactly what was captured."""
    if rrset.exists:
        update.present(rrset.name, rrset.rrtype, *rrset.values)
    else:
        update.absent(rrset.name, rrset.rrtype)


def _replace(
    update: dns.update.UpdateMessage, rrset: RecordSet, ttl: int, values: list[str]
) -> None:
    """Replace ``rrset`` (checked against its captured state) with ``values`` at ``ttl``."""
    _require(update, rrset)
    update.delete(rrset.name, rrset.rrtype)
    if values:
        update.add(rrset.name, ttl, rrset.rrtype, *values)


def _differs(rrset: RecordSet, values: list[str], ttl: int) -> bool:
    return list(rrset.values) != sorted(values) or (bool(values) and rrset.ttl != ttl)


def switch(
    target: DnsTarget,
    name: str,
    addresses: list[str],
    *,
    ttl: int | None = None,
    ptr: bool = False,
) -> SwitchResult:
    """Replace every A/AAAA of ``name`` with ``addresses`` (and their PTRs when ``ptr``).

    The TTL is ``ttl``, else the old records' TTL, else 300 s. Returns the records before
    (store it: it is what :func:`restore` puts back) and after, both read from the primary.
    """
    if not addresses:
        raise DnsConfigurationError(
            f"no address given for {name}; give at least one", zone=target.zone
        )
    wanted = parse_addresses(addresses)
    server = primary_server(target)
    key = target.load_key()
    fqdn = absolute_name(name, target.zone)
    forward = _read(target, server, [(fqdn, t) for t in ADDRESS_TYPES])
    reverse: list[RecordSet] = []
    if ptr:
        every = {a for r in forward for a in r.values} | {a for v in wanted.values() for a in v}
        reverse = _read(target, server, [(reverse_name(a), "PTR") for a in sorted(every)])
    old = Snapshot(target.zone, tuple(forward + reverse), str(server))
    ttls = [r.ttl for r in forward if r.exists]
    new_ttl = ttl if ttl is not None else (ttls[0] if ttls else DEFAULT_TTL)

    changed = False
    if any(_differs(r, wanted[r.rrtype], new_ttl) for r in forward):
        update = new_update(target.zone, key)
        for rrset in forward:
            _replace(update, rrset, new_ttl, wanted[rrset.rrtype])
        _send(target, server, key, update)
        changed = True
    if ptr:
        changed = _switch_ptrs(target, server, key, reverse, fqdn, wanted, new_ttl) or changed
    new = Snapshot(
        target.zone,
        tuple(_read(target, server, [(r.name, r.rrtype) for r in old.records])),
        str(server),
    )
    _check_applied(target, server, new, fqdn, wanted)
    return SwitchResult(old=old, new=new, changed=changed)


def _check_applied(
    target: DnsTarget, server: Server, new: Snapshot, fqdn: str, wanted: dict[str, list[str]]
) -> None:
    """A server may accept an update and silently skip parts of it (RFC 2136 3.4.2.2)."""
    served = new.addresses(fqdn)
    expected = sorted(a for values in wanted.values() for a in values)
    if served != expected:
        raise DnsNotApplied(
            f"DNS server {server} accepted the update of {fqdn} but serves "
            f"{', '.join(served) or 'no address'} instead of {', '.join(expected)}; another "
            "record at that name (a CNAME?) makes it ignore address records: fix the zone",
            zone=target.zone,
            server=str(server),
            key_ref=target.key_ref,
        )


def _switch_ptrs(
    target: DnsTarget,
    server: Server,
    key: TsigKey | None,
    reverse: list[RecordSet],
    fqdn: str,
    wanted: dict[str, list[str]],
    ttl: int,
) -> bool:
    """Point each new address's PTR at ``fqdn``; drop ``fqdn`` from old addresses' PTRs."""
    new_names = {reverse_name(a) for values in wanted.values() for a in values}
    updates: dict[str, dns.update.UpdateMessage] = {}
    for rrset in reverse:
        if rrset.name in new_names:
            values, set_ttl = [fqdn], ttl
        else:
            # Only our own name is removed: another host may share the old address's PTR set.
            values, set_ttl = [v for v in rrset.values if v != fqdn], rrset.ttl
        if not _differs(rrset, values, set_ttl):
            continue
        update = updates.setdefault(rrset.zone, new_update(rrset.zone, key))
        _replace(update, rrset, set_ttl, values)
    for update in updates.values():
        _send(target, server, key, update)
    return bool(updates)


def lower_ttl(target: DnsTarget, names: list[str], ttl: int) -> Snapshot:
    """Lower the TTL of each name's A/AAAA sets to ``ttl`` (ahead of a planned failover).

    Sets already at or below ``ttl`` are left alone. Returns the records as they were, so
    :func:`restore` can put the old TTLs back after the failover.
    """
    if ttl < 0:
        raise DnsConfigurationError(f"TTL {ttl} is negative; give seconds >= 0", zone=target.zone)
    server = primary_server(target)
    key = target.load_key()
    wanted = [(absolute_name(n, target.zone), t) for n in names for t in ADDRESS_TYPES]
    old = Snapshot(target.zone, tuple(_read(target, server, wanted)), str(server))
    to_lower = [r for r in old.records if r.exists and r.ttl > ttl]
    if to_lower:
        update = new_update(target.zone, key)
        for rrset in to_lower:
            _replace(update, rrset, ttl, list(rrset.values))
        _send(target, server, key, update)
    return old


def restore(target: DnsTarget, snapshot: Snapshot) -> None:
    """Put back exactly the captured records: values, TTLs, and absence.

    One UPDATE per zone, without prerequisites: restoring is the operator's or compensation's
    decision to return to a known state, whatever happened since. Running it twice is harmless.
    """
    server = primary_server(target)
    key = target.load_key()
    per_zone: dict[str, list[RecordSet]] = defaultdict(list)
    for rrset in snapshot.records:
        per_zone[rrset.zone].append(rrset)
    for zone, rrsets in per_zone.items():
        update = new_update(zone, key)
        for rrset in rrsets:
            update.delete(rrset.name, rrset.rrtype)
            if rrset.exists:
                update.add(rrset.name, rrset.ttl, rrset.rrtype, *rrset.values)
        _send(target, server, key, update)
