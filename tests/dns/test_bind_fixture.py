"""The reusable BIND9 fixture: real transfers, a lag on request, and a clean stop."""

from __future__ import annotations

import pytest

from tests.support.bind import RECORDS, ZONE, BindServers, bind_pair

pytestmark = pytest.mark.integration


def test_secondary_is_fed_by_zone_transfer_and_notify(bind_servers: BindServers) -> None:
    assert bind_servers.secondary.addresses("mon-01") == {RECORDS["mon-01"]}
    assert len(bind_servers.secondary.addresses("www")) == 4
    assert "transferred serial" in bind_servers.secondary.log()


def test_pair_stops_and_leaves_nothing_behind() -> None:
    with bind_pair(notify=False) as servers:
        primary, secondary, root = servers.primary, servers.secondary, servers.root
        assert servers.secondary.serial(ZONE) == servers.primary.serial(ZONE)
        processes = [primary.process, secondary.process]
    assert all(p is not None and p.poll() is not None for p in processes)
    assert not root.exists()
    assert primary.serial(ZONE) is None  # nothing answers on its port any more
