"""Windows DNS switching through the DNS Server cmdlets, against a fake runner."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from plans.errors import PermanentError
from tests.dns.fake_windows import FakeWindowsDnsServer
from workers.dns import DnsConfigurationError, Snapshot, WindowsDns
from workers.dns.windows import DnsCmdletError, timespan, ttl_seconds

ZONE = "corp.example"


@pytest.fixture
def server() -> FakeWindowsDnsServer:
    fake = FakeWindowsDnsServer()
    fake.zones[ZONE] = []
    fake.add(ZONE, "sql-01", "A", "10.10.1.11", ttl=3600)
    for i in range(1, 5):
        fake.add(ZONE, "www", "A", f"10.10.3.3{i}", ttl=600)
    return fake


def test_capture_reads_records_and_absence(server: FakeWindowsDnsServer) -> None:
    snap = WindowsDns(server, ZONE).capture(["sql-01", "www", "nothing"])
    assert snap.addresses("sql-01") == ["10.10.1.11"]
    a = snap.get("sql-01", "A")
    assert a is not None and a.ttl == 3600
    assert len(snap.addresses("www")) == 4
    assert snap.addresses("nothing") == []
    get = server.calls[0]
    assert (get.cmdlet, get.parameters) == (
        "Get-DnsServerResourceRecord",
        {"ZoneName": ZONE, "Name": "sql-01", "RRType": "A"},
    )


def test_not_found_as_a_terminating_error_is_absence_too(server: FakeWindowsDnsServer) -> None:
    server.raise_not_found = True
    assert WindowsDns(server, ZONE).capture(["nothing"]).addresses("nothing") == []


def test_switch_adds_the_new_address_before_removing_the_old(
    server: FakeWindowsDnsServer,
) -> None:
    """Typed calls only: Set-DnsServerResourceRecord would need the server's own CimInstance
    objects, which no remote caller can pass; the name never goes without an address."""
    result = WindowsDns(server, ZONE).switch("sql-01", ["10.20.1.11"])
    assert result.changed
    assert result.old.addresses("sql-01") == ["10.10.1.11"]
    assert result.new.addresses("sql-01") == ["10.20.1.11"]
    assert server.values(ZONE, "sql-01", "A") == [("10.20.1.11", 3600)]
    assert server.mutations() == ["Add-DnsServerResourceRecordA", "Remove-DnsServerResourceRecord"]
    add, remove = [c for c in server.calls if not c.cmdlet.startswith("Get-")]
    assert add.parameters == {
        "ZoneName": ZONE,
        "Name": "sql-01",
        "IPv4Address": "10.20.1.11",
        "TimeToLive": "01:00:00",  # the record's TTL is kept when the switch names none
    }
    assert remove.parameters == {
        "ZoneName": ZONE,
        "Name": "sql-01",
        "RRType": "A",
        "RecordData": "10.10.1.11",
    }
    assert remove.switches == ("Force",)


def test_a_new_ttl_alone_removes_and_adds_the_address_again(
    server: FakeWindowsDnsServer,
) -> None:
    result = WindowsDns(server, ZONE).switch("sql-01", ["10.10.1.11"], ttl=60)
    assert result.changed
    assert server.values(ZONE, "sql-01", "A") == [("10.10.1.11", 60)]
    assert server.mutations() == ["Remove-DnsServerResourceRecord", "Add-DnsServerResourceRecordA"]


def test_switch_to_more_fewer_and_ipv6_addresses(server: FakeWindowsDnsServer) -> None:
    dns = WindowsDns(server, ZONE)
    dns.switch("sql-01", ["10.20.1.11", "10.20.1.12"], ttl=60)
    assert server.values(ZONE, "sql-01", "A") == [("10.20.1.11", 60), ("10.20.1.12", 60)]
    dns.switch("www", ["10.20.3.31"])
    assert server.values(ZONE, "www", "A") == [("10.20.3.31", 600)]
    server.calls.clear()
    dns.switch("sql-01", ["fd00:20::11"])
    assert server.values(ZONE, "sql-01", "A") == []
    assert server.values(ZONE, "sql-01", "AAAA") == [("fd00:20::11", 60)]
    assert server.mutations() == [
        "Remove-DnsServerResourceRecord",
        "Remove-DnsServerResourceRecord",
        "Add-DnsServerResourceRecordAAAA",
    ]
    add = next(c for c in server.calls if c.cmdlet == "Add-DnsServerResourceRecordAAAA")
    assert add.parameters == {
        "ZoneName": ZONE,
        "Name": "sql-01",
        "IPv6Address": "fd00:20::11",
        "TimeToLive": "00:01:00",
    }


def test_restore_puts_back_exactly_ttl_included(server: FakeWindowsDnsServer) -> None:
    dns = WindowsDns(server, ZONE)
    before = {n: server.values(ZONE, n, "A") for n in ("sql-01", "www", "new-host")}
    old_sql = dns.switch("sql-01", ["10.20.1.11", "fd00:20::11"], ttl=30).old
    old_www = dns.switch("www", ["10.20.3.31", "10.20.3.32"], ttl=30).old
    old_new = dns.switch("new-host", ["10.99.1.1"]).old
    for snap in (old_sql, old_www, old_new):
        dns.restore(Snapshot.from_dict(json.loads(json.dumps(snap.to_dict()))))
    assert {n: server.values(ZONE, n, "A") for n in before} == before
    assert server.values(ZONE, "sql-01", "AAAA") == []


def test_switching_to_what_is_there_changes_nothing(server: FakeWindowsDnsServer) -> None:
    result = WindowsDns(server, ZONE).switch("sql-01", ["10.10.1.11"])
    assert not result.changed
    assert server.mutations() == []


def test_cmdlet_errors_are_permanent_and_name_the_zone(server: FakeWindowsDnsServer) -> None:
    server.fail["Add-DnsServerResourceRecordA"] = "Access denied."
    with pytest.raises(DnsCmdletError, match="Access denied") as caught:
        WindowsDns(server, ZONE).switch("sql-01", ["10.20.1.11"])
    assert isinstance(caught.value, PermanentError)
    assert caught.value.zone == ZONE and ZONE in str(caught.value)


def test_unknown_zone_is_reported(server: FakeWindowsDnsServer) -> None:
    with pytest.raises(DnsCmdletError, match="9601"):
        WindowsDns(server, "other.example").capture(["sql-01"])


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("00:05:00", 300),
        ("1.00:00:00", 86400),
        ("01:00:00.5", 3600),
        ("PT5M", 300),
        ("PT1H0M0S", 3600),
        ("P1DT1M1S", 86461),
        ("PT0.5S", 0),
        (timedelta(minutes=10), 600),
        (300, 300),
        ({"TotalSeconds": 60.0}, 60),
        ({"Days": 0, "Hours": 1, "Minutes": 2, "Seconds": 3}, 3723),
    ],
)
def test_ttl_shapes(value: object, seconds: int) -> None:
    assert ttl_seconds(value) == seconds


@pytest.mark.parametrize("value", ["P", "PT", "5 minutes", ""])
def test_unreadable_ttls_are_refused(value: str) -> None:
    with pytest.raises(DnsConfigurationError, match="TimeToLive"):
        ttl_seconds(value)


def test_timespan_round_trips() -> None:
    for seconds in (0, 59, 300, 3600, 86400, 90061):
        assert ttl_seconds(timespan(seconds)) == seconds


def test_the_fake_server_answers_a_one_command_pipeline_and_refuses_chains(
    server: FakeWindowsDnsServer,
) -> None:
    get = ("Get-DnsServerResourceRecord", {"ZoneName": ZONE, "Name": "sql-01", "RRType": "A"}, ())
    [record] = server.run_pipeline([get]).output
    assert record["RecordData"] == {"IPv4Address": "10.10.1.11"}
    remove = ("Remove-DnsServerResourceRecord", {"ZoneName": ZONE}, ("Force",))
    with pytest.raises(AssertionError, match="must not pipe"):
        server.run_pipeline([get, remove])
    assert server.mutations() == []
