"""The reusable BIND9 fixture: real transfers, a lag on request, and a clean stop."""

from __future__ import annotations

import pytest

from tests.support.bind import RECORDS, ZONE, BindServers, bind_pair
from workers.dns import load_key_file
from workers.dns.rfc2136 import new_update, send_update
from workers.dns.target import Server

pytestmark = pytest.mark.integration


def test_secondary_is_fed_by_zone_transfer_and_notify(bind_servers: BindServers) -> None:
    assert bind_servers.secondary.addresses("mon-01") == {RECORDS["mon-01"]}
    assert len(bind_servers.secondary.addresses("www")) == 4
    assert "transferred serial" in bind_servers.secondary.log()


def test_updates_reach_the_secondary_by_notify(bind_servers: BindServers) -> None:
    key = load_key_file(bind_servers.key_file)
    update = new_update(ZONE, key)
    update.replace("sql-01", 300, "A", "10.20.1.11")
    send_update(Server.parse(bind_servers.primary.hostport), update, zone=ZONE, key=key, timeout=2)
    bind_servers.wait_in_sync()  # no rndc involved: only NOTIFY can have brought it
    assert bind_servers.secondary.addresses("sql-01") == {"10.20.1.11"}
    assert "received notify for zone 'corp.example'" in bind_servers.secondary.log()


def test_a_lagging_secondary_catches_up_only_when_told(
    bind_servers_lagging: BindServers,
) -> None:
    servers = bind_servers_lagging
    key = load_key_file(servers.key_file)
    update = new_update(ZONE, key)
    update.replace("sql-01", 300, "A", "10.20.1.11")
    send_update(Server.parse(servers.primary.hostport), update, zone=ZONE, key=key, timeout=2)
    assert servers.secondary.addresses("sql-01") == {RECORDS["sql-01"]}
    servers.sync_secondary()
    assert servers.secondary.addresses("sql-01") == {"10.20.1.11"}


def test_pair_stops_and_leaves_nothing_behind() -> None:
    with bind_pair(notify=False) as servers:
        primary, secondary, root = servers.primary, servers.secondary, servers.root
        assert servers.secondary.serial(ZONE) == servers.primary.serial(ZONE)
        processes = [primary.process, secondary.process]
    assert all(p is not None and p.poll() is not None for p in processes)
    assert not root.exists()
    assert primary.serial(ZONE) is None  # nothing answers on its port any more
