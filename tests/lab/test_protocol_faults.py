"""The domain's injected faults as pypsrp sees them over the wire, and a clean shutdown."""

from __future__ import annotations

import threading

import pytest
import requests
from pypsrp.exceptions import WinRMTransportError
from pypsrp.powershell import RunspacePool

from lab.testing import LabHandle, running_lab
from tests.lab.clients import props, run, wsman_for
from tests.lab.scenario import Sites, scenario_topology


def test_injected_http500_then_the_retry_succeeds(sites: Sites, lab_handle: LabHandle) -> None:
    rule = {"cmdlet": "Stop-VM", "vm": "sql-01", "fail": "http500", "count": 1}
    assert lab_handle.admin("POST", "/faults", rule)[0] == 201
    with pytest.raises(WinRMTransportError) as caught:
        sites.run("hv-sto-1", "Stop-VM", Name="sql-01")
    assert caught.value.code == 500
    assert sites.vm("hv-sto-1", "sql-01")["State"] == "Running"  # type: ignore[index]
    sites.ok("hv-sto-1", "Stop-VM", Name="sql-01")
    assert sites.vm("hv-sto-1", "sql-01")["State"] == "Off"  # type: ignore[index]
    outcomes = [
        e["outcome"] for e in lab_handle.admin("GET", "/audit?cmdlet=Stop-VM")[1]["entries"]
    ]
    assert outcomes == ["fault:http500", "ok"]


def test_injected_reset_drops_the_connection(lab_handle: LabHandle) -> None:
    rule = {"cmdlet": "Get-VM", "host": "hv-got-1", "fail": "reset", "count": 1}
    lab_handle.admin("POST", "/faults", rule)
    pool = RunspacePool(wsman_for(lab_handle.endpoints["hv-got-1"]))
    pool.open()
    with pytest.raises(requests.exceptions.ConnectionError):
        run(pool, "Get-VM")
    with RunspacePool(wsman_for(lab_handle.endpoints["hv-got-1"])) as fresh:
        assert run(fresh, "Get-VM").output


def test_latency_longer_than_operation_timeout_is_polled_through(lab_handle: LabHandle) -> None:
    rule = {"cmdlet": "Get-VMReplication", "latency_ms": 2500}
    assert lab_handle.admin("POST", "/faults", rule)[0] == 201
    endpoint = lab_handle.endpoints["hv-sto-2"]
    with RunspacePool(wsman_for(endpoint, operation_timeout=1)) as pool:
        (rep,) = run(pool, "Get-VMReplication", VMName="sql-02").output
    assert props(rep)["State"] == "Replicating"
    assert lab_handle.stats("hv-sto-2").timed_out_receives >= 1


def test_host_down_fault_refuses_until_faults_are_cleared(lab_handle: LabHandle) -> None:
    endpoint = lab_handle.endpoints["hv-got-2"]
    assert lab_handle.admin("POST", "/faults", {"host_down": "hv-got-2"})[0] == 201
    with pytest.raises(requests.exceptions.ConnectionError) as caught:
        RunspacePool(wsman_for(endpoint)).open()
    assert "refused" in str(caught.value).lower()
    assert lab_handle.admin("DELETE", "/faults")[0] == 200
    with RunspacePool(wsman_for(endpoint)) as pool:
        assert run(pool, "Get-VM", Name="sql-02").output


def test_leaving_running_lab_stops_every_thread_and_port() -> None:
    import socket

    with running_lab(scenario_topology(), auth="ntlm", time_scale=0) as handle:
        ports = [e.port for e in handle.endpoints.values()]
        with RunspacePool(wsman_for(handle.endpoints["hv-sto-1"])) as pool:
            assert run(pool, "Get-VM").output
    leftover = [t.name for t in threading.enumerate() if t.name.startswith("lab-")]
    assert leftover == []
    for port in ports:
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
            pass


def test_fifty_concurrent_pipelines_on_one_lab_host(lab_handle: LabHandle) -> None:
    # 300 ms of injected latency per call keeps all fifty inside the lab at once.
    lab_handle.admin("POST", "/faults", {"cmdlet": "Get-VMReplication", "latency_ms": 300})
    endpoint = lab_handle.endpoints["hv-sto-1"]
    states: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def client(vm: str) -> None:
        try:
            with RunspacePool(wsman_for(endpoint)) as pool:
                (rep,) = run(pool, "Get-VMReplication", VMName=vm).output
            with lock:
                states.append(f"{vm}:{props(rep)['State']}")
        except BaseException as exc:  # reported below
            with lock:
                errors.append(exc)

    vms = ["sql-01", "app-01", "app-03", "web-01", "web-03", "file-01"]
    threads = [threading.Thread(target=client, args=(vms[i % len(vms)],)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert sorted(states) == sorted(f"{vms[i % len(vms)]}:Replicating" for i in range(50))
