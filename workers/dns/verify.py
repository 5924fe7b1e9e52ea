"""Verification that every authoritative server answers what a switch set.

A switch is only done when users see it: the primary changes at once, but secondaries follow
by NOTIFY and zone transfer, sometimes late. :func:`verify` polls each server until it
answers exactly the expected addresses, and names the servers still stale when time runs out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dns.flags
import dns.rcode
import dns.rdatatype

from workers.dns.errors import DnsError, DnsVerificationTimeout
from workers.dns.records import ADDRESS_TYPES, absolute_name, parse_addresses
from workers.dns.rfc2136 import authoritative_servers, query
from workers.dns.target import DnsTarget, Server
from workflows.waiting import wait_until


@dataclass(frozen=True)
class ServerAnswer:
    """What one server answered on its latest poll."""

    server: str
    addresses: list[str]
    ok: bool
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "server": self.server,
            "addresses": list(self.addresses),
            "ok": self.ok,
            "error": self.error,
        }


@dataclass
class VerifyResult:
    """Per server, what it answered; ``ok`` only when every server answered ``expected``."""

    name: str
    expected: list[str]
    answers: list[ServerAnswer] = field(default_factory=list)
    attempts: int = 0
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every authoritative server answered the expected set."""
        return bool(self.answers) and all(a.ok for a in self.answers)

    @property
    def stale(self) -> list[ServerAnswer]:
        """The servers that have not (yet) answered the expected set."""
        return [a for a in self.answers if not a.ok]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "expected": list(self.expected),
            "ok": self.ok,
            "attempts": self.attempts,
            "elapsed": round(self.elapsed, 3),
            "answers": [a.to_dict() for a in self.answers],
        }


def ask(
    server: Server, fqdn: str, expected: list[str], *, zone: str, timeout: float
) -> ServerAnswer:
    """Ask one server for ``fqdn``'s A and AAAA and compare with ``expected``."""
    found: list[str] = []
    try:
        for rrtype in ADDRESS_TYPES:
            response = query(server, fqdn, rrtype, timeout=timeout, tcp=False, zone=zone)
            if response.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                error = f"answered {dns.rcode.to_text(response.rcode())}"
                return ServerAnswer(str(server), sorted(found), False, error)
            if not response.flags & dns.flags.AA:
                return ServerAnswer(str(server), sorted(found), False, "not authoritative")
            wanted = dns.rdatatype.from_text(rrtype)
            for rrset in response.answer:
                if rrset.rdtype == wanted:
                    found.extend(rr.to_text().lower() for rr in rrset)
    except DnsError as exc:
        return ServerAnswer(str(server), sorted(found), False, str(exc))
    found = sorted(set(found))
    return ServerAnswer(str(server), found, found == expected)


def verify(
    target: DnsTarget,
    name: str,
    addresses: list[str],
    *,
    timeout: float,
    interval: float = 0.2,
    on_attempt: Callable[[VerifyResult], None] | None = None,
) -> VerifyResult:
    """Poll every authoritative server until each answers exactly ``addresses``.

    Servers are ``target.servers`` or the zone's NS records. ``on_attempt`` is called after
    each round with the result so far (for progress reporting). Raises a transient
    :class:`DnsVerificationTimeout` naming the stale servers when ``timeout`` runs out.
    """
    split = parse_addresses(addresses)
    expected = sorted(a for values in split.values() for a in values)
    fqdn = absolute_name(name, target.zone)
    servers = authoritative_servers(target)
    start = time.monotonic()
    deadline = start + timeout
    answers: dict[Server, ServerAnswer] = {}
    result = VerifyResult(name=fqdn, expected=expected)

    def every_server_answers() -> VerifyResult | None:
        for server in servers:
            previous = answers.get(server)
            if previous is not None and previous.ok:
                continue  # an authoritative server that has the new data keeps it
            remaining = max(deadline - time.monotonic(), 0.05)
            answers[server] = ask(
                server, fqdn, expected, zone=target.zone, timeout=min(target.timeout, remaining)
            )
        result.attempts += 1
        result.answers = [answers[s] for s in servers]
        result.elapsed = time.monotonic() - start
        if on_attempt is not None:
            on_attempt(result)
        return result if result.ok else None

    if wait_until(every_server_answers, timeout=timeout, interval=interval) is not None:
        return result
    stale = {a.server: a.addresses or [a.error or "(no records)"] for a in result.stale}
    described = "; ".join(f"{server} answered {', '.join(got)}" for server, got in stale.items())
    raise DnsVerificationTimeout(
        f"{fqdn} did not reach {', '.join(expected)} on every authoritative server within "
        f"{timeout:g} s: {described}. The secondaries may be lagging (check NOTIFY and zone "
        "transfers from the primary); retry verification later",
        zone=target.zone,
        server=", ".join(stale),
        key_ref=target.key_ref,
        stale=stale,
    )
