"""Verification polls every authoritative server; a lagging secondary is waited for or named."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from plans.errors import TransientError
from tests.support.bind import BindServers
from workers.dns import DnsTarget, DnsVerificationTimeout, VerifyResult, switch, verify

pytestmark = pytest.mark.integration


def test_verification_waits_for_a_lagging_secondary(
    lagging_target: DnsTarget, bind_servers_lagging: BindServers
) -> None:
    servers = bind_servers_lagging
    switch(lagging_target, "sql-01", ["10.20.1.11"])
    saw_stale = threading.Event()
    rounds: list[dict[str, object]] = []

    def on_attempt(progress: VerifyResult) -> None:
        rounds.append(progress.to_dict())
        if [a.server for a in progress.stale] == [servers.secondary.hostport]:
            saw_stale.set()

    outcome: list[VerifyResult | BaseException] = []

    def run() -> None:
        try:
            outcome.append(
                verify(
                    lagging_target,
                    "sql-01",
                    ["10.20.1.11"],
                    timeout=30,
                    interval=0.05,
                    on_attempt=on_attempt,
                )
            )
        except BaseException as exc:  # handed to the test thread below
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    assert saw_stale.wait(timeout=10), "verification never saw the secondary stale"
    servers.sync_secondary()  # the transfer the secondary was missing
    worker.join(timeout=30)
    assert not worker.is_alive()
    result = outcome[0]
    assert isinstance(result, VerifyResult), result
    assert result.ok and result.attempts >= 2
    first = rounds[0]["answers"]
    assert isinstance(first, list)
    assert first[1] == {
        "server": servers.secondary.hostport,
        "addresses": ["10.10.1.11"],
        "ok": False,
        "error": "",
    }


def test_a_secondary_that_stays_stale_times_out_transiently_and_is_named(
    lagging_target: DnsTarget, bind_servers_lagging: BindServers
) -> None:
    switch(lagging_target, "app-01", ["10.20.2.21"])
    with pytest.raises(DnsVerificationTimeout) as caught:
        verify(lagging_target, "app-01", ["10.20.2.21"], timeout=0.5, interval=0.1)
    error = caught.value
    assert isinstance(error, TransientError)
    secondary = bind_servers_lagging.secondary.hostport
    assert error.stale == {secondary: ["10.10.2.21"]}
    assert secondary in str(error) and "10.10.2.21" in str(error)
    assert bind_servers_lagging.primary.hostport not in error.stale


def test_an_unreachable_server_is_reported_with_its_error(
    target: DnsTarget, bind_servers: BindServers
) -> None:
    bind_servers.secondary.stop()
    with pytest.raises(DnsVerificationTimeout) as caught:
        verify(target, "sql-01", ["10.10.1.11"], timeout=0.5, interval=0.1)
    (reason,) = caught.value.stale[bind_servers.secondary.hostport]
    assert "did not answer" in reason or "failed" in reason


def test_verify_with_servers_from_ns_records(bind_servers: BindServers) -> None:
    by_ns = DnsTarget(
        "corp.example",
        primary=bind_servers.primary.hostport,
        port=bind_servers.primary.port,
        timeout=1.0,
    )
    result = verify(
        by_ns, "www", ["10.10.3.31", "10.10.3.32", "10.10.3.33", "10.10.3.34"], timeout=2
    )
    assert [a.server for a in result.answers] == [bind_servers.primary.hostport]


def test_extra_or_missing_addresses_are_not_success(target: DnsTarget) -> None:
    quick = dataclasses.replace(target, timeout=0.5)
    with pytest.raises(DnsVerificationTimeout):
        verify(quick, "www", ["10.10.3.31"], timeout=0.3, interval=0.1)
    with pytest.raises(DnsVerificationTimeout):
        verify(quick, "sql-01", ["10.10.1.11", "10.10.1.99"], timeout=0.3, interval=0.1)
