"""``ferryman dns``: switch and show records from a runbook or an admin's shell.

The root CLI attaches :data:`dns_group`. Errors print one line saying what to fix and exit 1.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from plans.errors import FerrymanError
from plans.names import dns_name_problem, host_port_problem
from workers.dns.records import RecordSet, Snapshot
from workers.dns.switch import capture, switch
from workers.dns.target import DnsTarget
from workers.dns.tsig import DEFAULT_ALGORITHM
from workers.dns.verify import VerifyResult, verify

T = TypeVar("T")


def _guarded(action: Callable[[], T]) -> T:
    """Run ``action``; a Ferryman error becomes click's one-line error with exit status 1."""
    try:
        return action()
    except FerrymanError as exc:
        raise click.ClickException(str(exc)) from None


def _server(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Refuse a HOST[:PORT] (or a comma-separated list of them) that does not parse."""
    for part in (value or "").split(","):
        problem = host_port_problem(part) if part.strip() else None
        if problem:
            raise click.BadParameter(problem)
    return value


def _zone(ctx: click.Context, param: click.Parameter, value: str) -> str:
    problem = dns_name_problem(value, what="zone")
    if problem:
        raise click.BadParameter(problem)
    return value


def _lines(prefix: str, snapshot: Snapshot) -> list[str]:
    rows = []
    for rrset in snapshot.records:
        rows.extend(_record_lines(prefix, rrset))
    return rows


def _record_lines(prefix: str, rrset: RecordSet) -> list[str]:
    if not rrset.exists:
        return [f"{prefix}{rrset.name} {rrset.rrtype} (none)"]
    return [f"{prefix}{rrset.name} {rrset.ttl} IN {rrset.rrtype} {v}" for v in rrset.values]


@click.group("dns")
def dns() -> None:
    """Switch and inspect DNS records over RFC 2136 + TSIG."""


dns_group = dns


@dns.command("switch")
@click.option("--server", required=True, callback=_server, help="The zone's primary, HOST[:PORT].")
@click.option("--zone", required=True, callback=_zone, help="The zone, e.g. corp.example.")
@click.option(
    "--key-file",
    required=True,
    type=click.Path(dir_okay=False),
    help="TSIG key file as tsig-keygen writes it.",
)
@click.option("--key-name", default=None, help="Which key, when the file holds several.")
@click.option("--algorithm", default=DEFAULT_ALGORITHM, show_default=True)
@click.option("--name", required=True, help="Record name, relative to the zone or absolute.")
@click.option("--address", "addresses", multiple=True, required=True, help="New address.")
@click.option(
    "--ttl", type=click.IntRange(0, 2**31 - 1), default=None, help="TTL in seconds (RFC 2181)."
)
@click.option("--ptr", is_flag=True, help="Also point the addresses' PTR records at the name.")
@click.option("--verify", "do_verify", is_flag=True, help="Wait until every server answers.")
@click.option(
    "--servers",
    default=None,
    callback=_server,
    help="Servers to verify, HOST:PORT,... (default NS).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0, 86400, min_open=True),
    default=30.0,
    show_default=True,
    help="Verify timeout in seconds (at most a day).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def switch_command(
    server: str,
    zone: str,
    key_file: str,
    key_name: str | None,
    algorithm: str,
    name: str,
    addresses: tuple[str, ...],
    ttl: int | None,
    ptr: bool,
    do_verify: bool,
    servers: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Replace NAME's A/AAAA records with the given addresses; print old and new."""
    target = DnsTarget(
        zone=zone,
        primary=server,
        servers=[s for s in servers.split(",") if s.strip()] if servers else None,
        key_file=key_file,
        algorithm=algorithm,
        key_name=key_name,
    )
    result = _guarded(lambda: switch(target, name, list(addresses), ttl=ttl, ptr=ptr))
    checked: VerifyResult | None = None
    if do_verify:
        checked = _guarded(lambda: verify(target, name, list(addresses), timeout=timeout))
    if as_json:
        out: dict[str, Any] = result.to_dict()
        out["verify"] = checked.to_dict() if checked else None
        click.echo(json.dumps(out, indent=2))
        return
    click.echo("\n".join(_lines("old: ", result.old)))
    click.echo("\n".join(_lines("new: ", result.new)))
    if not result.changed:
        click.echo("unchanged: the records already held these addresses")
    if checked is not None:
        where = ", ".join(a.server for a in checked.answers)
        click.echo(f"verified on {where} in {checked.elapsed:.2f} s")


@dns.command("show")
@click.option(
    "--server", required=True, callback=_server, help="An authoritative server, HOST[:PORT]."
)
@click.option("--zone", required=True, callback=_zone, help="The zone, e.g. corp.example.")
@click.option("--name", "names", multiple=True, required=True, help="Record name.")
@click.option(
    "--type", "rrtypes", multiple=True, default=("A", "AAAA"), show_default=True, help="Type."
)
@click.option("--json", "as_json", is_flag=True, help="Print the snapshot as JSON.")
def show_command(
    server: str, zone: str, names: tuple[str, ...], rrtypes: tuple[str, ...], as_json: bool
) -> None:
    """Print NAME's records as the server serves them."""
    target = DnsTarget(zone=zone, primary=server)
    snapshot = _guarded(lambda: capture(target, list(names), [t.upper() for t in rrtypes]))
    if as_json:
        click.echo(json.dumps(snapshot.to_dict(), indent=2))
    else:
        click.echo("\n".join(_lines("", snapshot)))
