"""Talking to authoritative DNS servers: queries, RFC 2136 UPDATE with TSIG, error mapping.

Updates go over TCP to the zone's primary (configured, or the SOA MNAME); answers are mapped
to the DNS error family, so a caller sees :class:`DnsRefused` or :class:`DnsTimeout`, never a
dnspython exception.
"""

from __future__ import annotations

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import dns.tsig
import dns.update

from workers.dns.errors import (
    DnsBadKey,
    DnsBadRequest,
    DnsConflict,
    DnsError,
    DnsNotAuth,
    DnsNotZone,
    DnsRefused,
    DnsServerFailure,
    DnsTimeout,
    DnsTransientError,
)
from workers.dns.records import RecordSet
from workers.dns.target import DnsTarget, Server
from workers.dns.tsig import ALGORITHMS, TsigKey

# dnspython's names for the TSIG errors a server reports, as RFC 8945 names them.
_TSIG_ERRORS = {
    "PeerBadKey": "BADKEY",
    "PeerBadSignature": "BADSIG",
    "PeerBadTime": "BADTIME",
    "PeerBadTruncation": "BADTRUNC",
}

_CONFLICT_RCODES = {
    dns.rcode.YXDOMAIN,
    dns.rcode.YXRRSET,
    dns.rcode.NXDOMAIN,
    dns.rcode.NXRRSET,
}


def query(
    server: Server, name: str, rrtype: str, *, timeout: float, tcp: bool = True, zone: str = ""
) -> dns.message.Message:
    """One non-recursive query; transport failures become transient DNS errors."""
    msg = dns.message.make_query(name, rrtype)
    msg.flags &= ~dns.flags.RD  # authoritative servers only: never ask them to recurse
    try:
        if tcp:
            return dns.query.tcp(msg, server.address(), port=server.port, timeout=timeout)
        response, _ = dns.query.udp_with_fallback(
            msg, server.address(), port=server.port, timeout=timeout
        )
        return response
    except dns.exception.Timeout:
        raise DnsTimeout(
            f"DNS server {server} did not answer a query for {name} {rrtype} within "
            f"{timeout:g} s; check that it is up and reachable, then retry",
            zone=zone,
            server=str(server),
        ) from None
    except (OSError, EOFError, dns.exception.DNSException) as exc:
        raise DnsTransientError(
            f"query for {name} {rrtype} to DNS server {server} failed ({exc!r}); "
            "check that it is up and reachable, then retry",
            zone=zone,
            server=str(server),
        ) from None


def read_rrset(server: Server, name: str, rrtype: str, zone: str, *, timeout: float) -> RecordSet:
    """The record set ``name``/``rrtype`` as ``server`` serves it (empty when absent)."""
    response = query(server, name, rrtype, timeout=timeout, zone=zone)
    rcode = response.rcode()
    if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        _raise_for_rcode(rcode, "query", server=server, zone=zone, key=None, key_ref="")
    if not response.flags & dns.flags.AA:
        raise DnsNotAuth(
            f"DNS server {server} is not authoritative for {name} (zone {zone}); "
            "point the target's primary at the zone's primary server",
            zone=zone,
            server=str(server),
        )
    wanted = dns.rdatatype.from_text(rrtype)
    for rrset in response.answer:
        if rrset.rdtype == wanted and rrset.name == dns.name.from_text(name):
            values = tuple(sorted(rr.to_text().lower() for rr in rrset))
            return RecordSet(name.lower(), rrtype, int(rrset.ttl), values, zone)
    return RecordSet(name.lower(), rrtype, 0, (), zone)


def find_zone(server: Server, name: str, *, timeout: float) -> str:
    """The zone ``name`` belongs to on ``server``, from the SOA in its answer."""
    response = query(server, name, "SOA", timeout=timeout)
    for section in (response.answer, response.authority):
        for rrset in section:
            if rrset.rdtype == dns.rdatatype.SOA:
                return str(rrset.name.to_text().lower())
    raise DnsNotZone(
        f"DNS server {server} serves no zone containing {name}; create the zone there "
        "(for PTR records, the reverse zone) or leave PTR updates off",
        server=str(server),
    )


def _resolve_host(host: str, target: DnsTarget, via: Server | None) -> list[str]:
    """Addresses of a server host name: asked of ``via`` when in-zone, else the system."""
    if via is not None and dns.name.from_text(host).is_subdomain(target.origin):
        found: list[str] = []
        for rrtype in ("A", "AAAA"):
            rrset = read_rrset(via, host, rrtype, target.zone, timeout=target.timeout)
            found.extend(rrset.values)
        if found:
            return found
    try:
        return [str(a) for a in dns.resolver.resolve_name(host).addresses()]
    except dns.exception.DNSException as exc:
        raise DnsTransientError(
            f"cannot resolve {host}, a server of zone {target.zone} ({exc}); "
            "configure the target's servers as host:port",
            zone=target.zone,
        ) from None


def _zone_rrset(target: DnsTarget, rrtype: str) -> tuple[list[str], Server | None]:
    """The zone apex's ``rrtype`` values, asked of a configured server or the system."""
    known = target.primary or (target.servers[0] if target.servers else None)
    if known is not None:
        via = Server.parse(known, target.port)
        return list(
            read_rrset(via, target.zone + ".", rrtype, target.zone, timeout=target.timeout).values
        ), via
    try:
        answer = dns.resolver.resolve(target.zone, rrtype, lifetime=target.timeout)
    except dns.exception.DNSException as exc:
        raise DnsTransientError(
            f"cannot look up the {rrtype} records of zone {target.zone} ({exc}); "
            "configure the target's primary and servers as host:port",
            zone=target.zone,
        ) from None
    return [rr.to_text() for rr in answer], None


def primary_server(target: DnsTarget) -> Server:
    """Where updates go: the configured primary, else the zone's SOA MNAME on ``target.port``."""
    if target.primary:
        return Server.parse(target.primary)
    soa, via = _zone_rrset(target, "SOA")
    if not soa:
        raise DnsNotZone(
            f"zone {target.zone} has no SOA record; check the zone name", zone=target.zone
        )
    mname = soa[0].split()[0]
    return Server(_resolve_host(mname, target, via)[0], target.port)


def authoritative_servers(target: DnsTarget) -> list[Server]:
    """Every server verification must see: configured ``servers``, else the zone's NS hosts."""
    if target.servers:
        return [Server.parse(s) for s in target.servers]
    hosts, via = _zone_rrset(target, "NS")
    servers: list[Server] = []
    for host in sorted(hosts):
        for address in _resolve_host(host, target, via):
            server = Server(address, target.port)
            if server not in servers:
                servers.append(server)
    return servers


def new_update(zone: str, key: TsigKey | None) -> dns.update.UpdateMessage:
    """An empty UPDATE for ``zone``, signed with ``key`` when there is one."""
    if key is None:
        return dns.update.UpdateMessage(zone)
    return dns.update.UpdateMessage(
        zone,
        keyring=key.keyring(),
        keyname=dns.name.from_text(key.name),
        keyalgorithm=ALGORITHMS[key.algorithm],
    )


def send_update(
    server: Server,
    update: dns.update.UpdateMessage,
    *,
    zone: str,
    key: TsigKey | None,
    timeout: float,
) -> None:
    """Send an UPDATE over TCP and raise the matching DNS error unless it was applied."""
    key_ref = key.reference if key else "(unsigned)"
    try:
        response = dns.query.tcp(update, server.address(), port=server.port, timeout=timeout)
    except dns.exception.Timeout:
        raise DnsTimeout(
            f"DNS server {server} did not answer the update of zone {zone} within "
            f"{timeout:g} s; retry, and check the server if it persists",
            zone=zone,
            server=str(server),
            key_ref=key_ref,
        ) from None
    except dns.tsig.PeerError as exc:
        what = _TSIG_ERRORS.get(type(exc).__name__, type(exc).__name__)
        raise _bad_key(what, server, zone, key, key_ref) from None
    except (dns.tsig.BadSignature, dns.tsig.BadKey, dns.tsig.BadAlgorithm) as exc:
        what = f"its answer failed our check: {type(exc).__name__}"
        raise _bad_key(what, server, zone, key, key_ref) from None
    except (OSError, EOFError) as exc:
        raise DnsTransientError(
            f"cannot send the update of zone {zone} to DNS server {server} ({exc!r}); "
            "check that it is up and reachable, then retry",
            zone=zone,
            server=str(server),
            key_ref=key_ref,
        ) from None
    except dns.exception.DNSException as exc:
        # e.g. an unsigned answer to a signed request: the server did not accept our key
        raise _bad_key(str(exc) or type(exc).__name__, server, zone, key, key_ref) from None
    rcode = response.rcode()
    if rcode != dns.rcode.NOERROR:
        _raise_for_rcode(rcode, "update", server=server, zone=zone, key=key, key_ref=key_ref)


def _bad_key(what: str, server: Server, zone: str, key: TsigKey | None, key_ref: str) -> DnsBadKey:
    name = key.name if key else "(none)"
    return DnsBadKey(
        f"DNS server {server} rejected the TSIG signature ({what}) on the update of zone "
        f"{zone} with key {name} from {key_ref}: the key name, secret or algorithm does not "
        "match the server's (or the clocks differ by more than 5 minutes); fix the key file",
        zone=zone,
        server=str(server),
        key_ref=key_ref,
    )


def _raise_for_rcode(
    rcode: dns.rcode.Rcode,
    action: str,
    *,
    server: Server,
    zone: str,
    key: TsigKey | None,
    key_ref: str,
) -> None:
    name = dns.rcode.to_text(rcode)
    where = f"DNS server {server} answered {name} to the {action} of zone {zone}"
    signed = f" signed with key {key.name} from {key_ref}" if key else ""
    kwargs = {"zone": zone, "server": str(server), "key_ref": key_ref}
    error: DnsError
    if action == "query" and rcode in (dns.rcode.REFUSED, dns.rcode.NOTAUTH):
        error = DnsNotAuth(
            f"{where}: it does not serve zone {zone}; check the zone name and that the "
            "target's primary/servers are the zone's authoritative servers",
            **kwargs,
        )
    elif rcode == dns.rcode.REFUSED:
        error = DnsRefused(
            f"{where}{signed}: its policy does not allow this; grant the key the zone in "
            "update-policy (or allow-update), or use a key that may update it",
            **kwargs,
        )
    elif rcode == dns.rcode.NOTAUTH:
        error = DnsNotAuth(
            f"{where}{signed}: it is not authoritative for the zone or did not accept the "
            "key; send updates to the zone's primary and check the key",
            **kwargs,
        )
    elif rcode == dns.rcode.NOTZONE:
        error = DnsNotZone(
            f"{where}: a name is outside the zone; check the zone name and record names",
            **kwargs,
        )
    elif rcode in _CONFLICT_RCODES:
        error = DnsConflict(
            f"{where}: the records changed since they were captured; retry (it captures "
            "them again)",
            **kwargs,
        )
    elif rcode == dns.rcode.SERVFAIL:
        error = DnsServerFailure(f"{where}: the server failed; retry later", **kwargs)
    else:
        error = DnsBadRequest(
            f"{where}: the request was rejected; this is a bug or an unsupported server",
            **kwargs,
        )
    raise error
