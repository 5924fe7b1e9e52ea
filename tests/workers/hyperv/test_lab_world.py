"""Every typed Hyper-V/VMM method against the lab's world, through the real pypsrp client.

The lab (``lab.testing.running_lab``) serves the shared example topology on ephemeral loopback
ports; faults are injected through its admin API.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from plans.credentials import SecretRef
from workers.errors import AuthenticationError, CmdletFailed, RemoteTransientError
from workers.hyperv.connection import AuthMethod, PsrpEndpoint
from workers.hyperv.hyperv import HyperVHost, ReplicationSettings, name_of_test_vm
from workers.hyperv.ip import HyperVIpSource, IpTimeout, VmmIpSource, wait_for_ip
from workers.hyperv.pool import RunspacePoolCache
from workers.hyperv.psrp import PsrpRunner
from workers.hyperv.states import ReplicationMode, ReplicationState, VMState
from workers.hyperv.vmm import VmmServer

pytestmark = pytest.mark.integration

TOPOLOGY = Path(__file__).resolve().parents[3] / "deploy" / "lab" / "topology.yaml"
PASSWORD_VAR = "HV_TEST_LAB_PASSWORD"


def topology(
    extra_vms: list[dict[str, Any]] | None = None,
    replication: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The shared example world on ephemeral ports (tests never clash with a running lab);
    ``replication`` overrides replication settings per VM name."""
    data = copy.deepcopy(yaml.safe_load(TOPOLOGY.read_text(encoding="utf-8")))
    data.pop("admin_port", None)
    for host in data["hosts"]:
        host.pop("port", None)
    data["vms"].extend(extra_vms or [])
    for vm in data["vms"]:
        vm["replication"] = {**vm.get("replication", {}), **(replication or {}).get(vm["name"], {})}
    data["scripts"] = [
        {"pattern": "Invoke-AppCheck", "output": ["ok"]},
        {"pattern": "Invoke-Slow", "output": ["late"], "duration": 3000},
        {"pattern": "throw", "error": "the app check failed"},
    ]
    return data


class World:
    """A running lab plus Ferryman's adapters pointed at it."""

    def __init__(self, handle: Any, cache: RunspacePoolCache) -> None:
        self.handle = handle
        self.cache = cache

    def endpoint(self, host: str, password_var: str = PASSWORD_VAR) -> PsrpEndpoint:
        ep = self.handle.endpoints[host]
        return PsrpEndpoint(
            host,
            ep.url,
            AuthMethod(ep.auth),
            ep.username,
            SecretRef("env", password_var),
            connect_timeout=5,
            operation_timeout=5,
            read_timeout=15,
        )

    def runner(self, host: str) -> PsrpRunner:
        return PsrpRunner(self.endpoint(host), cache=self.cache, default_timeout=60)

    def hv(self, host: str) -> HyperVHost:
        return HyperVHost(self.runner(host), host)

    def vmm(self, host: str) -> VmmServer:
        return VmmServer(self.runner(host), host)

    def fault(self, spec: dict[str, Any]) -> None:
        status, body = self.handle.admin("POST", "/faults", spec)
        assert status < 300, body

    def audit(self, **query: str) -> dict[str, Any]:
        suffix = "&".join(f"{k}={v}" for k, v in query.items())
        status, body = self.handle.admin("GET", "/audit" + (f"?{suffix}" if suffix else ""))
        assert status == 200, body
        return dict(body)


@contextmanager
def serve(
    monkeypatch: pytest.MonkeyPatch,
    auth: str = "basic",
    extra_vms: list[dict[str, Any]] | None = None,
    replication: dict[str, dict[str, Any]] | None = None,
    no_language: tuple[str, ...] = (),
) -> Iterator[World]:
    """The lab for the example world (plus ``extra_vms``) and adapters pointed at it;
    ``no_language``: hosts whose endpoint runs cmdlets only (JEA)."""
    from lab.testing import running_lab

    cache = RunspacePoolCache()
    data = topology(extra_vms, replication)
    for host in data["hosts"]:
        if host["name"] in no_language:
            host["language_mode"] = "NoLanguage"
    with running_lab(data, auth=auth) as handle:
        monkeypatch.setenv(PASSWORD_VAR, handle.password)
        try:
            yield World(handle, cache)
        finally:
            cache.close()


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    with serve(monkeypatch) as running:
        yield running


@pytest.fixture
def ntlm_world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    with serve(monkeypatch, "ntlm") as running:
        yield running


# --- reads -----------------------------------------------------------------------------------


def test_reads_on_primary_and_replica(world: World) -> None:
    primary, replica = world.hv("hv-sto-1"), world.hv("hv-got-1")
    vm = primary.get_vm("sql-01")
    assert vm.state is VMState.RUNNING and vm.replication_mode is ReplicationMode.PRIMARY
    assert replica.get_vm("sql-01").state is VMState.OFF
    rep = replica.get_replication("sql-01")
    assert rep.state is ReplicationState.REPLICATING and rep.mode is ReplicationMode.REPLICA
    assert rep.frequency == 300 and rep.last_replication_time is not None
    assert rep.primary_server.lower().startswith("hv-sto-1")
    assert rep.replica_server.lower().startswith("hv-got-1")
    adapters = primary.get_network_adapters("sql-01")
    assert [(a.switch, a.ip_addresses[:1]) for a in adapters] == [("corp-sto", ("10.10.1.11",))]
    assert adapters[0].id
    assert replica.get_recovery_points("sql-01"), "a replicating VM has a latest point"


def test_unknown_vm_is_cmdlet_failed_with_the_hyperv_error_id(world: World) -> None:
    with pytest.raises(CmdletFailed) as info:
        world.hv("hv-got-1").get_vm("sql-99")
    err = info.value
    assert err.host == "hv-got-1" and err.cmdlet == "Get-VM"
    assert "Microsoft.HyperV.PowerShell.Commands.GetVM" in err.fully_qualified_error_id
    assert "sql-99" in str(err)


def test_reverse_on_the_primary_is_refused_with_the_hosts_error(world: World) -> None:
    with pytest.raises(CmdletFailed) as info:
        world.hv("hv-sto-1").set_replication_reverse("sql-01")
    assert info.value.cmdlet == "Set-VMReplication"
    assert info.value.fully_qualified_error_id


# --- failovers -------------------------------------------------------------------------------


def test_test_failover_gets_an_ip_from_both_sources_and_cleans_up(world: World) -> None:
    replica = world.hv("hv-got-1")
    test_vm = name_of_test_vm("sql-01")
    replica.start_failover("sql-01", as_test=True)
    assert replica.get_vm(test_vm).state is VMState.OFF
    replica.connect_network(test_vm, "test-got")
    replica.start_vm(test_vm)
    hv_ip = wait_for_ip(
        HyperVIpSource(replica),
        test_vm,
        ["10.99.0.0/16"],
        timeout=30,
        initial_interval=0.05,
        max_interval=0.5,
    )
    vmm_ip = wait_for_ip(
        VmmIpSource(world.vmm("vmm-got"), prefer_host="hv-got-1"),
        test_vm,
        ["10.99.0.0/16"],
        timeout=30,
        initial_interval=0.05,
        max_interval=0.5,
    )
    assert hv_ip == vmm_ip == "10.99.1.11"
    # Replication goes on during a test failover.
    assert replica.get_replication("sql-01").state is ReplicationState.REPLICATING
    replica.stop_vm(test_vm, turn_off=True)
    replica.stop_failover("sql-01")
    with pytest.raises(CmdletFailed):
        replica.get_vm(test_vm)


def test_a_host_whose_endpoint_runs_no_scripts_has_its_guests_addresses_polled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with serve(monkeypatch, no_language=("hv-got-1",)) as world:
        replica = world.hv("hv-got-1")
        test_vm = name_of_test_vm("sql-01")
        replica.start_failover("sql-01", as_test=True)
        replica.connect_network(test_vm, "test-got")
        replica.start_vm(test_vm)
        with pytest.raises(CmdletFailed) as refused:  # the endpoint refuses the wait script
            replica.wait_for_adapter_addresses(test_vm, timeout=1)
        assert refused.value.fully_qualified_error_id == "ScriptsNotAllowed"
        for _ in range(2):  # the first wait learns the endpoint's mode; the second knows it
            ip = wait_for_ip(
                HyperVIpSource(replica),
                test_vm,
                ["10.99.0.0/16"],
                timeout=30,
                initial_interval=0.05,
                max_interval=0.5,
            )
            assert ip == "10.99.1.11"
        # a Hyper-V host whose endpoint allows scripts still waits on the host
        assert world.hv("hv-got-2").wait_for_adapter_addresses("sql-02", timeout=0) != []


def test_planned_failover_then_reverse(world: World) -> None:
    primary, replica = world.hv("hv-sto-2"), world.hv("hv-got-2")
    primary.stop_vm("sql-02")
    assert primary.get_vm("sql-02").state is VMState.OFF
    primary.start_failover("sql-02", prepare=True)
    assert primary.get_replication("sql-02").state is ReplicationState.PREPARED_FOR_FAILOVER
    replica.start_failover("sql-02")
    assert replica.get_replication("sql-02").state is (
        ReplicationState.FAILED_OVER_WAITING_COMPLETION
    )
    replica.set_replication_reverse("sql-02")
    assert replica.get_replication("sql-02").mode is ReplicationMode.PRIMARY
    replica.connect_network("sql-02", "corp-got")
    replica.start_vm("sql-02")
    ip = wait_for_ip(
        HyperVIpSource(replica),
        "sql-02",
        ["10.20.0.0/16"],
        timeout=30,
        initial_interval=0.05,
        max_interval=0.5,
    )
    assert ip == "10.20.1.12"


def test_unplanned_failover_to_a_recovery_point_commit_and_reverse(world: World) -> None:
    old, new = world.hv("hv-sto-1"), world.hv("hv-got-1")
    points = new.get_recovery_points("file-01")
    new.start_failover("file-01", recovery_snapshot=points[-1].name)
    new.complete_failover("file-01")
    rep = new.get_replication("file-01")
    assert rep.state is ReplicationState.FAILED_OVER
    old.stop_vm("file-01", turn_off=True)
    old.set_replication_as_replica("file-01")
    new.set_replication_reverse("file-01", replica_server="hv-sto-1")
    new.start_initial_replication("file-01")
    assert new.get_replication("file-01").mode is ReplicationMode.PRIMARY


@pytest.fixture
def history_world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """file-01 keeps four hourly recovery points, and five lab hours have passed."""
    with serve(monkeypatch, replication={"file-01": {"recovery_history": 4}}) as running:
        status, body = running.handle.admin("POST", "/time/advance", {"seconds": 5 * 3600})
        assert status == 200, body
        yield running


def test_failover_to_an_older_recovery_point_pipes_the_snapshot(history_world: World) -> None:
    replica = history_world.hv("hv-got-1")
    points = replica.get_recovery_points("file-01")
    assert len(points) == 5 and points[0].created and points[-1].created
    assert points[0].created < points[-1].created
    replica.start_failover("file-01", recovery_snapshot=points[0].name)
    rep = replica.get_replication("file-01")
    assert rep.state is ReplicationState.FAILED_OVER_WAITING_COMPLETION
    [entry] = history_world.audit(host="hv-got-1", cmdlet="Start-VMFailover")["entries"]
    assert (entry["vm"], entry["outcome"], entry["changed"]) == ("file-01", "ok", True)
    # A point that is not there fails before anything is sent to Start-VMFailover.
    with pytest.raises(CmdletFailed, match="no recovery point 'yesterday'"):
        replica.start_failover("app-01", recovery_snapshot="yesterday")
    assert len(history_world.audit(host="hv-got-1", cmdlet="Start-VMFailover")["entries"]) == 1


def test_the_host_fails_over_to_the_piped_point_not_the_latest(history_world: World) -> None:
    replica = history_world.hv("hv-got-1")
    oldest = replica.get_recovery_points("file-01")[0]
    replica.start_failover("file-01", recovery_snapshot=oldest)
    # The lab's domain is read directly: no cmdlet reports which point a failover used.
    vm = history_world.handle.lab.world.find("hv-got-1", "file-01")
    assert vm.failover_point is not None and str(vm.failover_point.id) == oldest.id


NEW_VM = {
    "name": "new-01",
    "primary": "hv-sto-1",
    "networks": ["corp-sto"],
    "ips": {"corp-sto": "10.10.6.61"},
}


def test_enable_replication_and_initial_replication(monkeypatch: pytest.MonkeyPatch) -> None:
    with serve(monkeypatch, extra_vms=[NEW_VM]) as world:
        _enable_and_replicate(world)


def _enable_and_replicate(world: World) -> None:
    primary = world.hv("hv-sto-1")
    assert primary.get_vm("new-01").replication_state in (None, ReplicationState.DISABLED)
    primary.enable_replication("new-01", ReplicationSettings("hv-got-1", frequency_sec=30))
    rep = primary.get_replication("new-01")
    assert rep.state is ReplicationState.READY_FOR_INITIAL_REPLICATION and rep.frequency == 30
    primary.start_initial_replication("new-01")
    assert primary.get_replication("new-01").state in (
        ReplicationState.INITIAL_REPLICATION_IN_PROGRESS,
        ReplicationState.REPLICATING,
    )


def test_disconnected_vm_never_gets_an_ip(world: World) -> None:
    replica = world.hv("hv-got-2")
    replica.start_failover("mon-01", as_test=True)
    test_vm = name_of_test_vm("mon-01")
    replica.disconnect_network(test_vm)
    replica.start_vm(test_vm)
    with pytest.raises(IpTimeout) as info:
        wait_for_ip(
            HyperVIpSource(replica),
            test_vm,
            ["10.99.0.0/16"],
            timeout=1,
            initial_interval=0.05,
            max_interval=0.2,
        )
    assert info.value.vm == test_vm and info.value.host == "hv-got-2"


# --- scripts ---------------------------------------------------------------------------------


def test_operator_scripts_run_with_parameters_and_fail_loudly(world: World) -> None:
    runner = world.runner("vmm-got")
    result = runner.run_script("param($Vm) Invoke-AppCheck -Name $Vm", {"Vm": "app-01"})
    assert result.output == [{"Value": "ok"}]
    with pytest.raises(CmdletFailed, match="the app check failed"):
        runner.run_script("throw 'app down'")
    # 3000 lab seconds are 30 real seconds: the per-call timeout stops it first.
    with pytest.raises(RemoteTransientError, match="did not finish within 1s"):
        runner.run_script("Invoke-Slow", timeout=1)


# --- errors and sessions ---------------------------------------------------------------------


@pytest.mark.parametrize("fail", ["http500", "reset"])
def test_injected_transport_faults_are_transient(world: World, fail: str) -> None:
    hv = world.hv("hv-got-1")
    hv.get_vm("sql-01")
    world.fault({"cmdlet": "Get-VM", "host": "hv-got-1", "fail": fail, "count": 1})
    with pytest.raises(RemoteTransientError):
        hv.get_vm("sql-01")
    assert hv.get_vm("sql-01").name == "sql-01"


def test_host_down_is_transient_connection_refused(world: World) -> None:
    hv = world.hv("hv-sto-2")
    hv.get_vm("web-02")
    status, body = world.handle.admin("POST", "/hosts/hv-sto-2/down")
    assert status < 300, body
    with pytest.raises(RemoteTransientError, match="refused"):
        hv.get_vm("web-02")
    world.handle.admin("POST", "/hosts/hv-sto-2/up")
    assert hv.get_vm("web-02").name == "web-02"


def test_wrong_password_is_authentication_error_without_retries(
    ntlm_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HV_TEST_WRONG", "wrong-" + ntlm_world.handle.password)
    exchanges: list[int] = []
    send = requests.Session.send

    def counting_send(self: requests.Session, request: Any, **kw: Any) -> Any:
        response = send(self, request, **kw)
        exchanges.append(response.status_code)
        return response

    monkeypatch.setattr(requests.Session, "send", counting_send)
    runner = PsrpRunner(ntlm_world.endpoint("hv-sto-1", "HV_TEST_WRONG"), cache=ntlm_world.cache)
    with pytest.raises(AuthenticationError, match="env:HV_TEST_WRONG") as info:
        HyperVHost(runner, "hv-sto-1").stop_vm("sql-01")
    assert exchanges == [401]  # one rejected login, no second attempt
    assert ntlm_world.handle.password not in str(info.value)
    assert ntlm_world.audit(host="hv-sto-1")["entries"] == []
    # The same call with the right credential reaches the host and is audited.
    ntlm_world.hv("hv-sto-1").stop_vm("sql-01")
    assert [e["cmdlet"] for e in ntlm_world.audit(host="hv-sto-1")["entries"]] == ["Stop-VM"]


def test_ntlm_sessions_are_shared_by_twenty_threads(ntlm_world: World) -> None:
    hv = ntlm_world.hv("hv-got-1")
    names = ["sql-01", "app-01", "app-03", "web-01", "web-03", "file-01"]

    def work(i: int) -> str:
        return hv.get_replication(names[i % len(names)]).state.value

    with ThreadPoolExecutor(max_workers=20) as pool:
        states = list(pool.map(work, range(60)))
    assert states == ["Replicating"] * 60
    # At most pools_per_host NTLM sessions, each sealed to its own connection, all reused.
    assert 1 <= ntlm_world.cache.opened["hv-got-1"] <= ntlm_world.cache.pools_per_host
    assert ntlm_world.cache.stats("hv-got-1").busy == 0
