"""Fault injection, the audit log, the admin API and concurrency."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from lab.objects import CmdletError, Command, TransportFault
from tests.lab.test_domain_support import call, example_dict, make_lab, ok, rep

STO, GOT = "hv-sto-1", "hv-got-1"


# ----------------------------------------------------------------------------- faults
@pytest.mark.parametrize("kind", ["http500", "reset"])
def test_fail_the_next_n_calls_transiently(kind: str) -> None:
    lab = make_lab()
    status, body = lab.admin(
        "POST", "/faults", {"cmdlet": "Start-VM", "vm": "sql-01", "fail": kind, "count": 2}
    )
    assert status == 201 and body["rule"]["remaining"] == 2
    ok(lab, STO, "Stop-VM", Name="sql-01")
    for _ in range(2):
        with pytest.raises(TransportFault) as caught:
            call(lab, STO, "Start-VM", Name="sql-01")
        assert caught.value.kind == kind
    ok(lab, "hv-sto-2", "Start-VM", Name="sql-02")  # other VMs are unaffected
    ok(lab, STO, "Start-VM", Name="sql-01")
    outcomes = [e.outcome for e in lab.audit.entries(cmdlet="Start-VM", vm="sql-01")]
    assert outcomes == [f"fault:{kind}", f"fault:{kind}", "ok"]


def test_permanent_injected_error() -> None:
    lab = make_lab()
    lab.admin(
        "POST",
        "/faults",
        {"cmdlet": "Get-VM", "fail": "error", "count": 1, "error_id": "Boom,X", "message": "boom"},
    )
    with pytest.raises(CmdletError) as caught:
        call(lab, STO, "Get-VM")
    assert caught.value.info.fully_qualified_error_id == "Boom,X"
    assert ok(lab, STO, "Get-VM", Name="sql-01")


def test_failure_rate_is_reproducible_with_a_seed() -> None:
    def pattern() -> list[bool]:
        data = example_dict()
        data["seed"] = 42
        data["faults"] = [{"cmdlet": "Get-VM", "fail": "http500", "rate": 0.5}]
        lab = make_lab(data)
        failed = []
        for _ in range(40):
            try:
                call(lab, STO, "Get-VM", Name="sql-01")
                failed.append(False)
            except TransportFault:
                failed.append(True)
        return failed

    first = pattern()
    assert first == pattern()
    assert 5 < sum(first) < 35


def test_latency_is_slept_outside_the_world_lock() -> None:
    lab = make_lab()
    lab.admin("POST", "/faults", {"cmdlet": "Get-VM", "vm": "sql-01", "latency_ms": 300})
    started = threading.Event()
    done = threading.Event()

    def slow() -> None:
        started.set()
        call(lab, STO, "Get-VM", Name="sql-01")
        done.set()

    thread = threading.Thread(target=slow)
    thread.start()
    started.wait(5)
    # While the slow call sleeps, another call on the same host completes.
    assert ok(lab, STO, "Get-VM", Name="app-01")
    thread.join(5)
    assert done.is_set()


@pytest.mark.parametrize(
    "bad",
    [
        {"fail": "explode"},
        {"latency_ms": -1},
        {"fail": "reset", "rate": 2},
        {"cmdlet": "Get-VM"},
        {"fail": "reset", "count": 0},
        {"colour": "red"},
    ],
)
def test_bad_fault_rules_are_refused(bad: dict) -> None:
    lab = make_lab()
    status, body = lab.admin("POST", "/faults", bad)
    assert status == 400 and body["error"]


def test_host_down_refuses_pipelines_and_stops_replication() -> None:
    lab = make_lab()
    assert lab.admin("POST", "/hosts/hv-got-1/down", None) == (
        200,
        {"host": "hv-got-1", "down": True},
    )
    assert lab.host_down("hv-got-1") and not lab.host_is_up("hv-got-1")
    with pytest.raises(TransportFault):
        call(lab, GOT, "Get-VM")
    lab.clock.advance(600)
    assert rep(lab, STO, "sql-01")["Health"] == "Warning"
    # Preparing a failover needs the replica server.
    ok(lab, STO, "Stop-VM", Name="sql-01")
    with pytest.raises(CmdletError):
        call(lab, STO, "Start-VMFailover", VMName="sql-01", Prepare=True, ErrorAction="Stop")
    lab.admin("POST", "/hosts/hv-got-1/up", None)
    lab.clock.advance(300)
    assert rep(lab, STO, "sql-01")["Health"] == "Normal"


def test_health_override_and_no_ip() -> None:
    lab = make_lab()
    assert lab.admin("POST", "/vms/web-01/health", {"health": "Critical"})[0] == 200
    assert rep(lab, STO, "web-01")["Health"] == "Critical"
    assert rep(lab, GOT, "web-01")["Health"] == "Critical"
    lab.admin("POST", "/vms/web-01/health", {"health": "Normal"})
    assert rep(lab, STO, "web-01")["Health"] == "Normal"
    assert lab.admin("POST", "/vms/web-01/health", {"health": "Purple"})[0] == 400

    lab.admin("POST", "/vms/app-01/no-ip", {})
    ok(lab, STO, "Stop-VM", Name="app-01")
    ok(lab, STO, "Start-VM", Name="app-01")
    lab.clock.advance(3600)
    (adapter,) = ok(lab, STO, "Get-VMNetworkAdapter", VMName="app-01")
    assert adapter.properties["IPAddresses"] == []


def test_topology_faults_apply_at_start() -> None:
    data = example_dict()
    data["faults"] = [
        {"host_down": "hv-sto-2"},
        {"vm": "web-01", "health": "Warning"},
        {"cmdlet": "Stop-VM", "fail": "reset"},
    ]
    lab = make_lab(data)
    assert lab.host_down("hv-sto-2")
    assert rep(lab, STO, "web-01")["Health"] == "Warning"
    with pytest.raises(TransportFault):
        call(lab, STO, "Stop-VM", Name="sql-01")
    _, body = lab.admin("GET", "/faults", None)
    assert body["hosts_down"] == ["hv-sto-2"] and len(body["rules"]) == 1
    lab.admin("DELETE", "/faults", None)
    assert not lab.host_down("hv-sto-2")
    ok(lab, STO, "Stop-VM", Name="sql-01")


# ----------------------------------------------------------------------------- audit
def test_audit_records_mutations_with_outcome_and_filters() -> None:
    lab = make_lab()
    ok(lab, STO, "Get-VM")  # reads are not audited
    ok(lab, STO, "Stop-VM", Name="sql-01")
    ok(lab, STO, "Stop-VM", Name="sql-01")  # already off: recorded, changed False
    call(lab, GOT, "Start-VMFailover", VMName="sql-01", Prepare=True)  # invalid on a replica
    status, body = lab.admin("GET", "/audit?vm=sql-01", None)
    assert status == 200
    entries = body["entries"]
    assert [(e["host"], e["cmdlet"], e["outcome"], e["changed"]) for e in entries] == [
        (STO, "Stop-VM", "ok", True),
        (STO, "Stop-VM", "ok", False),
        (
            GOT,
            "Start-VMFailover",
            "error:InvalidState,Microsoft.HyperV.PowerShell.Commands.StartVMFailover",
            False,
        ),
    ]
    assert entries[0]["parameters"] == {"Name": ["sql-01"]}
    assert (
        lab.admin("GET", "/audit?cmdlet=stop-vm&host=hv-sto-1", None)[1]["entries"][1]["changed"]
        is False
    )
    assert lab.admin("DELETE", "/audit", None) == (200, {"cleared": 3})
    assert lab.admin("GET", "/audit", None)[1]["entries"] == []


def test_audit_proves_each_vm_changed_once_per_failover() -> None:
    lab = make_lab()
    for name in ("web-01", "web-02", "web-03", "web-04"):
        host = GOT if name in ("web-01", "web-03") else "hv-got-2"
        ok(lab, host, "Start-VMFailover", VMName=name, AsTest=True)
    entries = lab.audit.entries(cmdlet="Start-VMFailover")
    changed = [str(e.vm) for e in entries if e.changed]
    assert sorted(changed) == ["web-01", "web-02", "web-03", "web-04"]


# ----------------------------------------------------------------------------- admin API
def test_admin_state_lists_every_vm_on_every_host() -> None:
    lab = make_lab()
    status, body = lab.admin("GET", "/state", None)
    assert status == 200
    assert len(body["vms"]) == 26 and len(body["hosts"]) == 6
    sql = {(v["host"], v["mode"]): v for v in body["vms"] if v["name"] == "sql-01"}
    primary, replica = sql[(STO, "Primary")], sql[(GOT, "Replica")]
    assert (primary["running"], primary["ips"], primary["health"]) == (
        True,
        ["10.10.1.11"],
        "Normal",
    )
    assert (replica["running"], replica["ips"], replica["state"]) == (False, [], "Off")


def test_admin_unknown_paths_methods_and_names() -> None:
    lab = make_lab()
    status, body = lab.admin("GET", "/nope", None)
    assert status == 404 and "GET /state" in body["error"]
    assert lab.admin("PUT", "/state", None)[0] == 405
    assert lab.admin("POST", "/hosts/nohost/down", None)[0] == 404
    assert lab.admin("POST", "/vms/novm/no-ip", None)[0] == 404
    assert lab.admin("POST", "/time/advance", {"seconds": -5})[0] == 400


def test_admin_time_advance_moves_replication() -> None:
    lab = make_lab()
    before = rep(lab, STO, "sql-01")["LastReplicationTime"]
    status, _ = lab.admin("POST", "/time/advance", {"seconds": 300})
    assert status == 200
    assert rep(lab, STO, "sql-01")["LastReplicationTime"] > before


# ----------------------------------------------------------------------------- concurrency
def test_fifty_concurrent_pipelines_on_one_host() -> None:
    lab = make_lab()
    lab.admin("POST", "/faults", {"cmdlet": "Get-VM", "latency_ms": 50})
    names = ["sql-01", "app-01", "app-03", "web-01", "web-03", "file-01"]

    def pipeline(i: int) -> str:
        name = names[i % len(names)]
        result = lab.invoke(STO, [Command("Get-VM", [("Name", name)])])
        assert result.errors == []
        return str(result.output[0].properties["Name"])

    with ThreadPoolExecutor(max_workers=50) as pool:
        got = list(pool.map(pipeline, range(50)))
    assert got == [names[i % len(names)] for i in range(50)]


def test_concurrent_test_failovers_each_happen_once() -> None:
    lab = make_lab()
    barrier = threading.Barrier(20)

    def attempt(_: int) -> int:
        barrier.wait(5)
        result = call(lab, GOT, "Start-VMFailover", VMName="sql-01", AsTest=True)
        return len(result.errors)

    with ThreadPoolExecutor(max_workers=20) as pool:
        failures = list(pool.map(attempt, range(20)))
    assert failures.count(0) == 1 and failures.count(1) == 19
    assert len([e for e in lab.audit.entries(cmdlet="Start-VMFailover") if e.changed]) == 1


def test_random_latency_range_is_seeded_and_within_bounds() -> None:
    from lab.faults import FaultInjector

    def delays(seed: int) -> list[float]:
        injector = FaultInjector(seed)
        injector.add({"cmdlet": "Get-*", "latency_ms": [10, 20]})
        return [injector.decide(STO, "Get-VM", None).delay for _ in range(20)]

    first = delays(3)
    assert first == delays(3) != delays(4)
    assert all(0.010 <= d <= 0.020 for d in first) and len(set(first)) > 1
    assert FaultInjector(3).decide(STO, "Start-VM", None).delay == 0


def test_script_duration_blocks_only_its_own_pipeline() -> None:
    from lab.world import Lab

    data = example_dict()
    data["scripts"] = [{"pattern": "Long-Job", "duration": 1000, "output": ["done"]}]
    lab = Lab.from_topology(data, time_scale=0.001)  # 1000 lab seconds = 1 s real
    finished = threading.Event()
    outputs: list[object] = []

    def long_job() -> None:
        outputs.extend(lab.invoke("vmm-sto", [Command("Long-Job", [], is_script=True)]).output)
        finished.set()

    thread = threading.Thread(target=long_job)
    thread.start()
    # Other pipelines, on the same host too, are answered while the script runs.
    assert ok(lab, "vmm-sto", "Get-SCVirtualMachine", Name="sql-01")
    assert not finished.is_set()
    thread.join(5)
    assert outputs == ["done"]


def test_answer_lost_after_the_call_took_effect() -> None:
    lab = make_lab()
    status, _ = lab.admin(
        "POST",
        "/faults",
        {"cmdlet": "Start-VMFailover", "vm": "sql-01", "fail": "reset", "count": 1, "after": True},
    )
    assert status == 201
    with pytest.raises(TransportFault):
        call(lab, GOT, "Start-VMFailover", VMName="sql-01", AsTest=True)
    # The test VM exists although the caller saw a dropped connection.
    assert ok(lab, GOT, "Get-VM", Name="sql-01 - Test")
    (entry,) = lab.audit.entries(cmdlet="Start-VMFailover")
    assert (entry.outcome, entry.changed, entry.fault) == ("ok", True, "reset")
    assert lab.admin("POST", "/faults", {"fail": "error", "after": True})[0] == 400


def test_transport_faults_are_audited_as_unchanged() -> None:
    lab = make_lab()
    lab.admin("POST", "/faults", {"cmdlet": "Stop-VM", "fail": "http500", "count": 1})
    with pytest.raises(TransportFault):
        call(lab, STO, "Stop-VM", Name="sql-01")
    (entry,) = lab.audit.entries(cmdlet="Stop-VM")
    assert (entry.outcome, entry.changed) == ("fault:http500", False)
