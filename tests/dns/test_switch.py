"""Switch, capture, lower TTL and restore against a real BIND9 primary + secondary."""

from __future__ import annotations

import dataclasses
import json

import pytest

from tests.support.bind import BindServers
from workers.dns import DnsTarget, RecordSet, Snapshot, capture, lower_ttl, restore, switch, verify
from workers.dns.rfc2136 import authoritative_servers, primary_server
from workers.dns.target import Server

pytestmark = pytest.mark.integration


def rrset(snapshot: Snapshot, name: str, rrtype: str) -> RecordSet:
    """The captured set, which must be in the snapshot."""
    found = snapshot.get(name, rrtype)
    assert found is not None, f"{name} {rrtype} not captured"
    return found


def test_switch_is_verified_on_primary_and_secondary(
    target: DnsTarget, bind_servers: BindServers
) -> None:
    result = switch(target, "sql-01", ["10.20.1.11"])
    assert result.changed
    assert result.old.addresses("sql-01") == ["10.10.1.11"]
    assert result.new.addresses("sql-01") == ["10.20.1.11"]

    checked = verify(target, "sql-01", ["10.20.1.11"], timeout=10)
    assert checked.ok
    assert [a.server for a in checked.answers] == bind_servers.servers
    assert all(a.addresses == ["10.20.1.11"] for a in checked.answers)
    assert bind_servers.secondary.addresses("sql-01") == {"10.20.1.11"}


def test_switch_keeps_the_old_ttl_unless_told(target: DnsTarget) -> None:
    kept = switch(target, "app-01", ["10.20.2.21"])
    assert rrset(kept.new, "app-01", "A").ttl == 300
    lowered = switch(target, "app-02", ["10.20.2.22"], ttl=30)
    assert rrset(lowered.new, "app-02", "A").ttl == 30


def test_switch_replaces_a_multi_address_name(target: DnsTarget) -> None:
    new = ["10.20.3.31", "10.20.3.32", "10.20.3.33", "10.20.3.34"]
    result = switch(target, "www", new)
    assert len(result.old.addresses("www")) == 4
    assert result.new.addresses("www") == new
    assert verify(target, "www", list(reversed(new)), timeout=10).ok


def test_ipv6_addresses_become_aaaa_and_replace_the_a_record(
    target: DnsTarget, bind_servers: BindServers
) -> None:
    result = switch(target, "web-01", ["fd00:20::31"])
    assert not rrset(result.new, "web-01", "A").exists
    assert rrset(result.new, "web-01", "AAAA").values == ("fd00:20::31",)
    assert verify(target, "web-01", ["fd00:20::31"], timeout=10).ok
    assert bind_servers.secondary.addresses("web-01") == {"fd00:20::31"}


def test_dual_stack_switch(target: DnsTarget) -> None:
    result = switch(target, "file-01", ["10.20.4.41", "fd00:20::41"])
    assert result.new.addresses("file-01") == ["10.20.4.41", "fd00:20::41"]


def test_restore_puts_back_exactly_what_was_captured_ttl_included(
    target: DnsTarget, bind_servers: BindServers
) -> None:
    before = capture(target, ["sql-02", "www"])
    result = switch(target, "sql-02", ["10.20.1.12", "fd00:20::12"], ttl=45)
    switch(target, "www", ["10.20.3.31"], ttl=20)

    restore(target, result.old)
    restore(target, only(before, "www"))
    after = capture(target, ["sql-02", "www"])
    assert [r.to_dict() for r in after.records] == [r.to_dict() for r in before.records]
    bind_servers.wait_in_sync()
    assert bind_servers.secondary.addresses("sql-02") == {"10.10.1.12"}
    assert len(bind_servers.secondary.addresses("www")) == 4


def only(snapshot: Snapshot, name: str) -> Snapshot:
    """The part of ``snapshot`` about ``name``: restores work on any subset."""
    fqdn = f"{name}.corp.example."
    return dataclasses.replace(
        snapshot, records=tuple(r for r in snapshot.records if r.name == fqdn)
    )


def test_restore_deletes_a_name_that_did_not_exist(target: DnsTarget) -> None:
    test_zone = dataclasses.replace(target, zone="test.corp.example")
    result = switch(test_zone, "sql-01", ["10.99.1.11"])
    assert result.old.addresses("sql-01") == []
    restore(test_zone, result.old)
    assert capture(test_zone, ["sql-01"]).addresses("sql-01") == []
    restore(test_zone, result.old)  # running it twice is harmless


def test_switching_to_what_is_there_sends_nothing(
    target: DnsTarget, bind_servers: BindServers
) -> None:
    switch(target, "mon-01", ["10.21.5.51"])
    serial = bind_servers.primary.serial()
    again = switch(target, "mon-01", ["10.21.5.51"])
    assert not again.changed
    assert again.old == dataclasses.replace(again.new, captured_at=again.old.captured_at)
    assert bind_servers.primary.serial() == serial


def test_ptr_records_follow_the_switch_and_the_restore(target: DnsTarget) -> None:
    result = switch(target, "sql-01", ["10.20.1.11"], ptr=True)
    new_ptr = rrset(result.new, "11.1.20.10.in-addr.arpa.", "PTR")
    assert new_ptr.values == ("sql-01.corp.example.",)
    assert new_ptr.zone == "10.in-addr.arpa"
    assert not rrset(result.new, "11.1.10.10.in-addr.arpa.", "PTR").exists

    restore(target, result.old)
    back = capture(target, ["11.1.10.10.in-addr.arpa.", "11.1.20.10.in-addr.arpa."], ["PTR"])
    assert rrset(back, "11.1.10.10.in-addr.arpa.", "PTR").values == ("sql-01.corp.example.",)
    assert not rrset(back, "11.1.20.10.in-addr.arpa.", "PTR").exists


def test_ptr_is_left_alone_by_default(target: DnsTarget) -> None:
    switch(target, "sql-01", ["10.20.1.11"])
    ptr = capture(target, ["11.1.10.10.in-addr.arpa."], ["PTR"]).records[0]
    assert ptr.values == ("sql-01.corp.example.",)


def test_lower_ttl_ahead_of_failover_and_put_it_back(target: DnsTarget) -> None:
    old = lower_ttl(target, ["sql-01", "www", "absent-host"], 30)
    now = capture(target, ["sql-01", "www"])
    assert {r.ttl for r in now.records if r.exists} == {30}
    assert {r.ttl for r in old.records if r.exists} == {300}
    restore(target, old)
    assert {r.ttl for r in capture(target, ["sql-01", "www"]).records if r.exists} == {300}


def test_primary_from_soa_mname_and_servers_from_ns(bind_servers: BindServers) -> None:
    port = bind_servers.primary.port
    # ns1/ns2 both resolve to 127.0.0.1 in the fixture zone; NS/SOA cannot carry ports.
    by_records = DnsTarget(
        "corp.example",
        servers=[bind_servers.secondary.hostport],
        key_file=str(bind_servers.key_file),
        port=port,
    )
    assert primary_server(by_records) == Server("127.0.0.1", port)
    result = switch(by_records, "app-03", ["10.20.2.23"])
    assert result.old.server == f"127.0.0.1:{port}"
    by_ns = dataclasses.replace(by_records, primary=bind_servers.primary.hostport, servers=None)
    assert authoritative_servers(by_ns) == [Server("127.0.0.1", port)]


def test_results_are_json_without_secrets(target: DnsTarget, bind_servers: BindServers) -> None:
    result = switch(target, "app-04", ["10.20.2.24"])
    text = json.dumps({"result": result.to_dict(), "target": target.to_dict()})
    key = target.load_key()
    assert key is not None and key.secret not in text
    assert str(bind_servers.key_file) in text


def test_ipv6_ptr_goes_to_the_ip6_arpa_zone(target: DnsTarget) -> None:
    result = switch(target, "web-02", ["fd00:20::32"], ptr=True)
    ptrs = [r for r in result.new.records if r.rrtype == "PTR" and r.exists]
    assert [(r.zone, r.values) for r in ptrs] == [("d.f.ip6.arpa", ("web-02.corp.example.",))]
    restore(target, result.old)
    assert capture(target, [ptrs[0].name], ["PTR"]).records[0].values == ()


def test_verify_can_confirm_a_name_is_gone(target: DnsTarget) -> None:
    test_zone = dataclasses.replace(target, zone="test.corp.example")
    result = switch(test_zone, "app-01", ["10.99.2.21"])
    assert verify(test_zone, "app-01", ["10.99.2.21"], timeout=10).ok
    restore(test_zone, result.old)
    assert verify(test_zone, "app-01", [], timeout=10).ok
