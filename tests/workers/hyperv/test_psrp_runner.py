"""PsrpRunner through the real pypsrp client against the lab's real WinRM endpoints.

The domain behind the endpoints is :mod:`.lab_double`, so each test controls exactly what
the host does: block, fail, drop the connection, go down.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from workers.errors import (
    AuthenticationError,
    CmdletFailed,
    RemotePermanentError,
    RemoteTransientError,
)
from workers.hyperv.connection import PsrpEndpoint
from workers.hyperv.hyperv import HyperVHost
from workers.hyperv.models import RecoveryPoint
from workers.hyperv.pool import PoolStats
from workers.hyperv.psrp import PsrpRunner
from workers.hyperv.states import ReplicationMode, VMState

from .lab_double import SNAPSHOTS, Site, open_shells, serve_site

pytestmark = pytest.mark.integration


@pytest.fixture(params=["basic", "ntlm", "https"])
def any_auth_site(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Site]:
    yield from serve_site(request.param, monkeypatch)


@pytest.fixture(params=["basic", "ntlm"])
def site(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    yield from serve_site(request.param, monkeypatch)


def test_typed_call_reads_enums_by_name(any_auth_site: Site) -> None:
    vm = HyperVHost(any_auth_site.runner(), "hv-got-1").get_vm("sql-01")
    assert vm.state is VMState.OFF
    assert vm.replication_mode is ReplicationMode.REPLICA
    assert vm.host == "hv-got-1"


def test_unknown_vm_is_cmdlet_failed_with_the_hyperv_error_id(site: Site) -> None:
    with pytest.raises(CmdletFailed) as info:
        HyperVHost(site.runner(), "hv-got-1").get_vm("sql-99")
    err = info.value
    assert (
        err.fully_qualified_error_id
        == "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM"
    )
    assert (err.host, err.cmdlet, err.category) == ("hv-got-1", "Get-VM", "InvalidArgument")
    assert 'name "sql-99"' in str(err)
    # A cmdlet error is an answer, not a broken session: the pool stays.
    HyperVHost(site.runner(), "hv-got-1").get_vm("sql-01")
    assert site.cache.opened["hv-got-1"] == 1


def test_parameters_arrive_as_typed_values_not_script_text(site: Site) -> None:
    tricky = "sql-01'; Remove-VM -Name * -Force; '$(whoami)"
    result = site.runner().run(
        "Echo-Parameters",
        {"Name": tricky, "Count": 3, "Enabled": False, "Tags": ["a", "b"]},
        switches=["Force"],
    )
    assert result.output == [
        {"Name": tricky, "Count": 3, "Enabled": False, "Tags": ["a", "b"], "Force": True}
    ]


def test_run_script_passes_parameters_as_parameters(site: Site) -> None:
    script = "param($VMName) Get-VM -Name $VMName"
    result = site.runner().run_script(script, {"VMName": "web-01"})
    assert result.output == [{"Text": script, "VMName": "web-01"}]


def test_a_bounded_set_of_sessions_serves_twenty_threads(site: Site) -> None:
    runner = site.runner()

    def work(_: int) -> list[str]:
        return [HyperVHost(runner, "hv-got-1").get_vm("sql-01").name for _ in range(3)]

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(work, range(20)))
    assert results == [["sql-01"] * 3] * 20
    opened = site.cache.opened["hv-got-1"]
    assert 1 <= opened <= site.cache.pools_per_host == 8
    # Every session came back and is kept for the next calls; the server holds exactly those.
    assert site.cache.stats("hv-got-1") == PoolStats(idle=opened, busy=0, opening=0, waiting=0)
    assert open_shells(site.server, "hv-got-1") == opened
    assert site.backend.pipelines["hv-got-1"] == 60
    # Sequential calls afterwards reuse them: nothing new is opened.
    for _ in range(5):
        HyperVHost(runner, "hv-got-1").get_vm("sql-01")
    assert site.cache.opened["hv-got-1"] == opened


def test_a_long_cmdlet_does_not_hold_up_other_calls(site: Site) -> None:
    runner = site.runner()
    outcome: list[object] = []
    blocked = threading.Thread(target=lambda: outcome.append(runner.run("Block-Call").output))
    blocked.start()
    assert site.backend.blocked.wait(timeout=10)
    # While Block-Call runs on the host, another call on the same pool completes.
    assert HyperVHost(runner, "hv-got-1").get_vm("sql-01").name == "sql-01"
    assert blocked.is_alive()
    site.backend.release.set()
    blocked.join(timeout=10)
    assert outcome == [[{"Value": "released"}]]


def test_per_call_timeout_stops_the_pipeline(site: Site) -> None:
    runner = site.runner()
    with pytest.raises(RemoteTransientError, match="did not finish within 2s"):
        runner.run("Block-Call", timeout=2)
    site.backend.release.set()
    assert runner.run("Get-VM", {"Name": "sql-01"}).output[0]["Name"] == "sql-01"


@pytest.mark.parametrize("fault", ["http500", "reset"])
def test_transport_faults_are_transient_and_the_next_call_works(site: Site, fault: str) -> None:
    runner = site.runner()
    runner.run("Get-VM", {"Name": "sql-01"})
    site.backend.faults["hv-got-1"] = [fault]
    with pytest.raises(RemoteTransientError, match="hv-got-1"):
        runner.run("Get-VM", {"Name": "sql-01"})
    assert runner.run("Get-VM", {"Name": "sql-01"}).output[0]["Name"] == "sql-01"


def test_host_down_is_connection_refused_then_recovers(site: Site) -> None:
    runner = site.runner()
    runner.run("Get-VM", {"Name": "sql-01"})
    site.backend.down.add("hv-got-1")
    site.server.sync_hosts()
    with pytest.raises(RemoteTransientError, match="refused"):
        runner.run("Get-VM", {"Name": "sql-01"})
    site.backend.down.discard("hv-got-1")
    site.server.sync_hosts()
    assert runner.run("Get-VM", {"Name": "sql-01"}).output[0]["Name"] == "sql-01"
    assert site.cache.opened["hv-got-1"] == 2


def test_a_forgotten_session_is_reopened_without_an_error(site: Site) -> None:
    runner = site.runner()
    runner.run("Get-VM", {"Name": "sql-01"})
    site.bounce("hv-got-1")  # the server restarted: the cached shell no longer exists
    assert runner.run("Get-VM", {"Name": "sql-01"}).output[0]["Name"] == "sql-01"
    assert site.cache.opened["hv-got-1"] == 2


def test_wrong_password_is_an_authentication_error_naming_the_reference(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "not-" + site.password
    monkeypatch.setenv("HV_TEST_WRONG", wrong)
    runner = PsrpRunner(site.endpoint(password_var="HV_TEST_WRONG"), cache=site.cache)
    with pytest.raises(AuthenticationError) as info:
        runner.run("Get-VM", {"Name": "sql-01"})
    message = str(info.value)
    assert "env:HV_TEST_WRONG" in message and "hv-got-1" in message
    assert wrong not in message and site.password not in message
    assert len(site.cache) == 0
    assert site.backend.pipelines["hv-got-1"] == 0


def test_untrusted_certificate_is_permanent(monkeypatch: pytest.MonkeyPatch) -> None:
    for https_site in serve_site("https", monkeypatch):
        trusted = https_site.endpoint()
        untrusted = PsrpEndpoint(
            trusted.host,
            trusted.url,
            trusted.auth,
            trusted.username,
            trusted.password_ref,
            connect_timeout=5,
            operation_timeout=5,
            read_timeout=15,
        )
        with pytest.raises(RemotePermanentError, match="ca_bundle"):
            PsrpRunner(untrusted, cache=https_site.cache).run("Get-VM", {"Name": "sql-01"})
        assert PsrpRunner(trusted, cache=https_site.cache).run("Get-VM", {"Name": "sql-01"}).output


def test_a_pipeline_reaches_the_host_as_one_pipeline_of_typed_commands(site: Site) -> None:
    point = RecoveryPoint(SNAPSHOTS[0].properties["Name"], "", "Replica", None, "sql-01")
    HyperVHost(site.runner(), "hv-got-1").start_failover("sql-01", recovery_snapshot=point)
    [commands] = site.backend.commands
    assert [(c.name, c.parameters) for c in commands] == [
        (
            "Get-VMSnapshot",
            [("VMName", "sql-01"), ("Name", point.name), ("SnapshotType", "Replica")],
        ),
        ("Start-VMFailover", [("Confirm", False), ("Passthru", True)]),
    ]
    # The host bound the live snapshot object, not a copy, to the failover.
    assert site.backend.failed_over_to == {"sql-01": SNAPSHOTS[0].properties["Id"]}


def test_a_pipeline_that_pipes_nothing_fails_the_failover(site: Site) -> None:
    gone = RecoveryPoint("sql-01 - Standard Replica - (merged)", "", "Replica", None, "sql-01")
    with pytest.raises(CmdletFailed, match="failed nothing over"):
        HyperVHost(site.runner(), "hv-got-1").start_failover("sql-01", recovery_snapshot=gone)
    assert site.backend.failed_over_to == {}


def test_an_empty_pipeline_is_refused_before_any_request(site: Site) -> None:
    with pytest.raises(ValueError, match="at least one cmdlet"):
        site.runner().run_pipeline([])
    assert site.backend.pipelines["hv-got-1"] == 0 and len(site.cache) == 0
