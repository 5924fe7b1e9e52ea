"""Record sets and snapshots as data: names, addresses, JSON round trips."""

from __future__ import annotations

import json

import pytest

from workers.dns import DnsConfigurationError, DnsTarget, RecordSet, Server, Snapshot
from workers.dns.records import absolute_name, parse_addresses, reverse_name


def test_names_are_made_absolute_in_the_zone() -> None:
    assert absolute_name("sql-01", "corp.example") == "sql-01.corp.example."
    assert absolute_name("SQL-01.corp.example.", "corp.example") == "sql-01.corp.example."
    assert absolute_name("@", "corp.example") == "corp.example."


def test_addresses_split_by_family_and_canonicalised() -> None:
    split = parse_addresses(["10.20.1.11", "FD00:0020::0011", "10.20.1.11", "10.20.1.2"])
    assert split == {"A": ["10.20.1.11", "10.20.1.2"], "AAAA": ["fd00:20::11"]}
    with pytest.raises(DnsConfigurationError, match="sql-01"):
        parse_addresses(["sql-01"])


def test_reverse_names() -> None:
    assert reverse_name("10.20.1.11") == "11.1.20.10.in-addr.arpa."
    assert reverse_name("fd00::11").endswith(".d.f.ip6.arpa.")


def test_snapshot_round_trips_through_json_and_answers_lookups() -> None:
    snap = Snapshot(
        "corp.example",
        (
            RecordSet("www.corp.example.", "A", 300, ("10.10.3.31", "10.10.3.32"), "corp.example"),
            RecordSet("www.corp.example.", "AAAA", 0, (), "corp.example"),
        ),
        server="127.0.0.1:5300",
    )
    again = Snapshot.from_dict(json.loads(json.dumps(snap.to_dict())))
    assert again == snap
    assert again.addresses("www") == ["10.10.3.31", "10.10.3.32"]
    aaaa = again.get("www.corp.example.", "AAAA")
    assert aaaa is not None and not aaaa.exists
    assert again.get("sql-01", "A") is None


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1", "127.0.0.1", 53),
        ("127.0.0.1:5353", "127.0.0.1", 5353),
        ("[::1]:5353", "::1", 5353),
        ("::1", "::1", 53),
        ("ns1.corp.example", "ns1.corp.example", 53),
    ],
)
def test_server_parsing(text: str, host: str, port: int) -> None:
    server = Server.parse(text)
    assert (server.host, server.port) == (host, port)
    assert Server.parse(str(server)) == server


@pytest.mark.parametrize("text", ["127.0.0.1:http", "127.0.0.1:70000", ":53"])
def test_bad_servers_are_refused(text: str) -> None:
    with pytest.raises(DnsConfigurationError, match="HOST"):
        Server.parse(text)


def test_target_round_trips_and_refuses_bad_settings() -> None:
    target = DnsTarget("corp.example", primary="127.0.0.1:5300", servers=["127.0.0.1:5301"])
    assert DnsTarget.from_dict(json.loads(json.dumps(target.to_dict()))) == target
    with pytest.raises(DnsConfigurationError, match="tsig_key"):
        DnsTarget.from_dict({**target.to_dict(), "tsig_key": "x"})
    with pytest.raises(DnsConfigurationError, match="zone name"):
        DnsTarget("")
    with pytest.raises(DnsConfigurationError, match="timeout"):
        DnsTarget("corp.example", timeout=0)
    with pytest.raises(DnsConfigurationError, match="HOST"):
        DnsTarget("corp.example", servers=["127.0.0.1:x"])
