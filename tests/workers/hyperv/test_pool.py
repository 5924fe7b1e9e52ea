"""The per-host set of PSRP sessions, through the real pypsrp client against the lab server.

Concurrency is shown as facts on the host (how many calls are inside ``Block-Call`` at once,
how many shells the server holds), never as durations.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from plans.errors import ConfigurationError
from workers.errors import RemoteTransientError
from workers.hyperv import psrp
from workers.hyperv.pool import PoolStats, RunspacePoolCache
from workers.hyperv.psrp import SESSIONS_PER_HOST_VARIABLE, sessions_per_host

from .doubles import FakeClock
from .lab_double import Site, open_shells, serve_site

pytestmark = pytest.mark.integration

HOST = "hv-got-1"
Output = list[dict[str, Any]]


@pytest.fixture(params=["basic", "ntlm"])
def site(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    yield from serve_site(request.param, monkeypatch)


@pytest.fixture
def basic_site(monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    yield from serve_site("basic", monkeypatch)


@pytest.fixture
def make_cache() -> Iterator[Callable[[int], RunspacePoolCache]]:
    caches: list[RunspacePoolCache] = []

    def make(pools_per_host: int) -> RunspacePoolCache:
        caches.append(RunspacePoolCache(pools_per_host=pools_per_host))
        return caches[-1]

    yield make
    for cache in caches:
        cache.close()


def blocked_calls(site: Site, cache: RunspacePoolCache, count: int) -> list[Future[Output]]:
    """Start ``count`` Block-Call calls on HOST, each in its own thread."""
    runner = site.runner(HOST, cache=cache)
    pool = ThreadPoolExecutor(max_workers=count)
    futures = [pool.submit(lambda: runner.run("Block-Call").output) for _ in range(count)]
    pool.shutdown(wait=False)
    return futures


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``predicate`` (cheap, in-process state) until true or ``timeout``."""
    done = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return True
        done.wait(0.01)
    return predicate()


def test_calls_on_one_host_run_at_once_each_on_its_own_session(
    site: Site, make_cache: Callable[[int], RunspacePoolCache]
) -> None:
    cache = make_cache(4)
    futures = blocked_calls(site, cache, 4)
    # All four are inside the cmdlet on the host at the same time, on four shells.
    assert site.backend.wait_in_flight(4)
    assert open_shells(site.server, HOST) == 4
    assert cache.stats(HOST) == PoolStats(idle=0, busy=4, opening=0, waiting=0)
    site.backend.release.set()
    assert [f.result(timeout=20) for f in futures] == [[{"Value": "released"}]] * 4
    assert cache.stats(HOST) == PoolStats(idle=4, busy=0, opening=0, waiting=0)


def test_sessions_per_host_bound_the_calls_in_flight(
    basic_site: Site, make_cache: Callable[[int], RunspacePoolCache]
) -> None:
    cache = make_cache(2)
    futures = blocked_calls(basic_site, cache, 6)
    assert basic_site.backend.wait_in_flight(2)
    # The other four wait for a session in the client; none of them reached the host.
    assert wait_for(lambda: cache.stats(HOST).waiting == 4)
    assert basic_site.backend.in_flight == 2
    assert open_shells(basic_site.server, HOST) == 2
    basic_site.backend.release.set()
    assert all(f.result(timeout=30) == [{"Value": "released"}] for f in futures)
    assert basic_site.backend.max_in_flight == 2
    assert cache.opened[HOST] == 2 and basic_site.backend.pipelines[HOST] == 6


def test_a_call_that_finds_every_session_busy_gives_up_at_its_timeout(
    basic_site: Site, make_cache: Callable[[int], RunspacePoolCache]
) -> None:
    cache = make_cache(1)
    [held] = blocked_calls(basic_site, cache, 1)
    assert basic_site.backend.wait_in_flight(1)
    runner = basic_site.runner(HOST, cache=cache)
    with pytest.raises(RemoteTransientError, match="all 1 PowerShell sessions to hv-got-1"):
        runner.run("Get-VM", {"Name": "sql-01"}, timeout=0.3)
    basic_site.backend.release.set()
    held.result(timeout=20)
    # The session is free again and serves the next call.
    assert runner.run("Get-VM", {"Name": "sql-01"}).output[0]["Name"] == "sql-01"
    assert cache.opened[HOST] == 1


def test_a_discarded_session_frees_its_slot_and_a_new_one_is_opened(
    basic_site: Site, make_cache: Callable[[int], RunspacePoolCache]
) -> None:
    cache = make_cache(1)
    endpoint = basic_site.endpoint(HOST)
    first = cache.acquire(endpoint)
    cache.discard(first)
    assert first.broken and len(cache) == 0
    with cache.lease(endpoint, timeout=5) as second:
        assert second is not first and not second.broken
    assert cache.opened[HOST] == 2
    # Releasing a discarded session is harmless and does not bring it back.
    cache.release(first)
    assert cache.stats(HOST) == PoolStats(idle=1, busy=0, opening=0, waiting=0)


def test_a_transport_fault_discards_only_the_session_it_hit(
    basic_site: Site, make_cache: Callable[[int], RunspacePoolCache]
) -> None:
    cache = make_cache(4)
    futures = blocked_calls(basic_site, cache, 3)
    assert basic_site.backend.wait_in_flight(3)
    basic_site.backend.release.set()
    for future in futures:
        future.result(timeout=20)
    assert cache.stats(HOST).idle == 3
    basic_site.backend.faults[HOST] = ["http500"]
    runner = basic_site.runner(HOST, cache=cache)
    with pytest.raises(RemoteTransientError, match="HTTP 500"):
        runner.run("Get-VM", {"Name": "sql-01"})
    assert cache.stats(HOST).idle == 2
    assert runner.run("Get-VM", {"Name": "sql-01"}).output[0]["Name"] == "sql-01"
    assert cache.opened[HOST] == 3  # a healthy idle session was reused, none opened


def test_after_a_host_restart_every_stale_session_is_dropped_at_once(
    site: Site, make_cache: Callable[[int], RunspacePoolCache]
) -> None:
    cache = make_cache(4)
    futures = blocked_calls(site, cache, 3)
    assert site.backend.wait_in_flight(3)
    site.backend.release.set()
    for future in futures:
        future.result(timeout=20)
    site.bounce(HOST)  # the server forgot all three shells
    runner = site.runner(HOST, cache=cache)
    assert runner.run("Get-VM", {"Name": "sql-01"}).output[0]["Name"] == "sql-01"
    # One refused request, then one fresh session: the two other stale ones never get used.
    assert cache.opened[HOST] == 4
    assert cache.stats(HOST) == PoolStats(idle=1, busy=0, opening=0, waiting=0)
    assert runner.run("Get-VM", {"Name": "sql-01"}).output[0]["Name"] == "sql-01"
    assert cache.opened[HOST] == 4


def test_close_leaves_no_session_open_on_the_host(
    site: Site, make_cache: Callable[[int], RunspacePoolCache]
) -> None:
    cache = make_cache(4)
    futures = blocked_calls(site, cache, 3)
    assert site.backend.wait_in_flight(3)
    site.backend.release.set()
    for future in futures:
        future.result(timeout=20)
    assert open_shells(site.server, HOST) == 3 and len(cache) == 3
    cache.close()
    assert open_shells(site.server, HOST) == 0 and len(cache) == 0
    # The cache stays usable: the next call opens a session, and close ends it again.
    assert site.runner(HOST, cache=cache).run("Get-VM", {"Name": "sql-01"}).output
    assert open_shells(site.server, HOST) == 1
    cache.close()
    assert open_shells(site.server, HOST) == 0


def test_a_session_leased_during_close_is_closed_when_it_comes_back(
    basic_site: Site, make_cache: Callable[[int], RunspacePoolCache]
) -> None:
    cache = make_cache(2)
    [held] = blocked_calls(basic_site, cache, 1)
    assert basic_site.backend.wait_in_flight(1)
    cache.close()
    assert open_shells(basic_site.server, HOST) == 1  # still running its call
    basic_site.backend.release.set()
    assert held.result(timeout=20) == [{"Value": "released"}]
    assert open_shells(basic_site.server, HOST) == 0 and len(cache) == 0


def test_sessions_idle_past_the_idle_timeout_are_closed(basic_site: Site, clock: FakeClock) -> None:
    cache = RunspacePoolCache(pools_per_host=4, idle_timeout=60, clock=clock)
    try:
        futures = blocked_calls(basic_site, cache, 3)
        assert basic_site.backend.wait_in_flight(3)
        basic_site.backend.release.set()
        for future in futures:
            future.result(timeout=20)
        assert open_shells(basic_site.server, HOST) == 3
        clock.sleep(30)
        runner = basic_site.runner(HOST, cache=cache)
        runner.run("Get-VM", {"Name": "sql-01"})
        assert open_shells(basic_site.server, HOST) == 3  # none idle for 60 s yet
        clock.sleep(45)
        # The session used 45 s ago stays; the two idle for 75 s are closed on the host.
        runner.run("Get-VM", {"Name": "sql-01"})
        assert open_shells(basic_site.server, HOST) == 1
        assert cache.stats(HOST) == PoolStats(idle=1, busy=0, opening=0, waiting=0)
        assert cache.opened[HOST] == 3
    finally:
        cache.close()


def test_sessions_per_host_setting() -> None:
    assert sessions_per_host({}) == 8
    assert sessions_per_host({SESSIONS_PER_HOST_VARIABLE: " 12 "}) == 12
    for bad in ("0", "31", "eight"):
        with pytest.raises(ConfigurationError, match=SESSIONS_PER_HOST_VARIABLE):
            sessions_per_host({SESSIONS_PER_HOST_VARIABLE: bad})
    with pytest.raises(ValueError, match="MaxShellsPerUser"):
        RunspacePoolCache(pools_per_host=40)
    with pytest.raises(ValueError, match="idle_timeout"):
        RunspacePoolCache(idle_timeout=0)


def test_a_forked_worker_does_not_inherit_the_parents_sessions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SESSIONS_PER_HOST_VARIABLE, "3")
    monkeypatch.setattr(psrp, "_shared_cache", None)
    # an earlier test's composition root may have sized the cache; this one reads the variable
    monkeypatch.setattr(psrp, "_configured_sessions", None)
    parent = psrp.shared_cache()
    assert parent is psrp.shared_cache() and parent.pools_per_host == 3
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child reports whether it got a cache of its own, then leaves at once
        os.write(write, b"fresh" if psrp.shared_cache() is not parent else b"inherited")
        os._exit(0)
    os.close(write)
    try:
        assert os.read(read, 16) == b"fresh"
    finally:
        os.close(read)
        os.waitpid(child, 0)
