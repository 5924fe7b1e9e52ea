"""DNS tests run against a real BIND9 primary + secondary started per test."""

from __future__ import annotations

import pytest

from tests.support.bind import *  # noqa: F403  (the bind_servers fixtures)
from tests.support.bind import BindServers
from workers.dns import DnsTarget


def target_for(servers: BindServers, **overrides: object) -> DnsTarget:
    """The DnsTarget a fabric would give for corp.example on these servers."""
    fields: dict[str, object] = {
        "zone": "corp.example",
        "primary": servers.primary.hostport,
        "servers": servers.servers,
        "key_file": str(servers.key_file),
        "timeout": 2.0,
    }
    fields.update(overrides)
    return DnsTarget(**fields)  # type: ignore[arg-type]


@pytest.fixture
def target(bind_servers: BindServers) -> DnsTarget:
    """corp.example on a fresh pair whose secondary follows by NOTIFY."""
    return target_for(bind_servers)


@pytest.fixture
def lagging_target(bind_servers_lagging: BindServers) -> DnsTarget:
    """corp.example on a fresh pair whose secondary updates only when the test says so."""
    return target_for(bind_servers_lagging)
