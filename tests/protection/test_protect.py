"""Protection as desired state against the lab over real pypsrp: status, apply (each initial
replication method, drift), prune, disable, and what is refused."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from plans import load_bundle
from plans.errors import FerrymanError
from tests.protection.conftest import Sites
from workers.executors import context as step_context
from workers.executors.errors import StepFailed
from workers.executors.protection import enable_replication, initial_replication
from workflows.compiler import _all_hosts
from workflows.progress import wait_for
from workflows.protection import (
    Action,
    ProtectionError,
    compile_disable,
    compile_protection,
)
from workflows.statuses import TERMINAL_RUN, RunStatus
from workflows.steps import StepKind

pytestmark = pytest.mark.integration
NEW = ("crm-01", "hr-01")


def _profile(**initial: Any) -> Any:
    def edit(snapshot: dict[str, Any]) -> None:
        snapshot["fabric"]["pairings"]["gold"]["profile"]["initial_replication"] = initial

    return edit


def test_status_shows_drift_and_vms_not_replicating(sites: Sites) -> None:
    reports = sites.by_vm()
    assert {vm for vm, r in reports.items() if r.action is Action.ENABLE} == set(NEW)
    drifted = {vm for vm, r in reports.items() if r.action is Action.RECONCILE}
    assert len(drifted) == 12
    sql = reports["sql-01"]
    # The example profile keeps 4 recovery points with VSS every 2 h; the lab's VMs none.
    assert {(d.setting, d.desired, d.actual) for d in sql.differences} == {
        ("recovery_history", 4, 0),
        ("vss_hours", 2, 0),
    }
    assert sql.observed is not None and sql.observed.state == "Replicating"
    assert sql.lag_seconds is not None and not sql.rpo_at_risk
    assert not any(r.healthy for r in reports.values())
    as_json = sql.to_json()
    assert (
        as_json["desired"]["recovery_history"] == 4 and as_json["actual"]["recovery_history"] == 0
    )
    assert as_json["in_sync"] is False and as_json["health"] == "Normal"


def test_apply_enables_over_the_network_and_reconciles_drift(sites: Sites) -> None:
    compiled = compile_protection(sites.bundle.fabric, sites.reports())
    assert compiled is not None
    kinds = {u.vm: [s.kind for s in u.steps] for u in compiled.stages[0].units}
    assert kinds["crm-01"] == [StepKind.ENABLE_REPLICATION, StepKind.INITIAL_REPLICATION]
    assert kinds["sql-01"] == [StepKind.SET_REPLICATION]
    run = sites.run(compiled)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.operation == "protect"
    state = sites.state()
    for vm, primary, replica in (
        ("crm-01", "hv-sto-1", "hv-got-1"),
        ("hr-01", "hv-sto-2", "hv-got-2"),
    ):
        assert state[f"{vm}@{primary}"]["replication_state"] == "Replicating"
        assert state[f"{vm}@{replica}"]["mode"] == "Replica"
    reports = sites.by_vm()
    assert all(r.healthy for r in reports.values()), [
        (r.vm, r.action, r.differences) for r in reports.values() if not r.healthy
    ]
    # The storage mapping put the replicas under the target classification gold-dr.
    entries = sites.audit("New-VMReplicationAuthorizationEntry")
    assert {e["parameters"]["ReplicaStorageLocation"] for e in entries} == {
        "D:\\Hyper-V\\Replica\\gold-dr"
    }
    assert sorted(e["vm"] for e in sites.audit("Enable-VMReplication")) == sorted(NEW)
    assert len(sites.audit("Set-VMReplication")) == 12
    # Applied again: nothing left to do.
    assert compile_protection(sites.bundle.fabric, sites.reports()) is None


def test_apply_only_the_named_vm_and_refuse_an_unknown_one(sites: Sites) -> None:
    compiled = compile_protection(sites.bundle.fabric, sites.reports(), vms=["hr-01"])
    assert compiled is not None and [u.vm for u in compiled.stages[0].units] == ["hr-01"]
    with pytest.raises(ProtectionError, match="nope-01"):
        compile_protection(sites.bundle.fabric, sites.reports(), vms=["nope-01"])


def test_scheduled_initial_replication_starts_at_its_time(sites: Sites) -> None:
    # Half an hour of lab time ahead (9 s real at the lab's time scale: room for a loaded
    # machine to enable replication first); the lab's clock runs ahead of the real one, so
    # the start is in the future for both.
    lab_now = sites.lab.lab.clock.datetime()
    start = max(lab_now, datetime.now(UTC)) + timedelta(minutes=30)
    bundle = sites.variant(_profile(method="scheduled", start_time=start.isoformat()))
    compiled = compile_protection(bundle.fabric, sites.reports(bundle), vms=["crm-01"])
    assert compiled is not None
    run = sites.run(compiled, bundle)
    assert run.status == RunStatus.SUCCEEDED, run.error
    (call,) = sites.audit("Start-VMInitialReplication")
    assert "InitialReplicationStartTime" in call["parameters"]
    assert sites.state()["crm-01@hv-sto-1"]["replication_state"] == "Replicating"


def test_offline_initial_replication_exports_then_imports_on_the_replica(sites: Sites) -> None:
    bundle = sites.variant(
        _profile(method="offline", export_path="E:\\Export", import_path="F:\\Import")
    )
    compiled = compile_protection(bundle.fabric, sites.reports(bundle), vms=["hr-01"])
    assert compiled is not None
    run = sites.run(compiled, bundle)
    assert run.status == RunStatus.SUCCEEDED, run.error
    (start,) = sites.audit("Start-VMInitialReplication")
    assert start["parameters"]["DestinationPath"] == "E:\\Export"
    (imported,) = sites.audit("Import-VMInitialReplication")
    assert imported["host"] == "hv-got-2" and imported["parameters"]["Path"] == "F:\\Import"
    assert sites.state()["hr-01@hv-got-2"]["replication_state"] == "Replicating"


def test_initial_replication_started_again_waits_for_the_first(frozen_sites: Sites) -> None:
    """A step started again after its worker died finds the copy under way: it waits for
    it instead of starting a second one. The lab's clock is frozen, so the first start can
    only give up waiting (as a killed worker stops waiting) before the copy is done."""
    sites = frozen_sites
    compiled = compile_protection(sites.bundle.fabric, sites.reports(), vms=["crm-01"])
    assert compiled is not None
    enable, initial = compiled.stages[0].units[0].steps
    short = replace(initial, params=initial.params.model_copy(update={"timeout": 0.2}))
    hosts = _all_hosts(sites.bundle.fabric, list(sites.bundle.fabric.sites))
    ctx = step_context("r", "protect", "failover", hosts, poll_interval=0.02)
    enable_replication(ctx, enable)
    with pytest.raises(StepFailed, match="did not finish"):
        initial_replication(ctx, short)
    assert sites.state()["crm-01@hv-sto-1"]["replication_state"] == "InitialReplicationInProgress"
    # crm-01's 60 GB at 10 Gbit/s take 51.5 lab seconds: half of them, still under way.
    assert sites.lab.admin("POST", "/time/advance", {"seconds": 30})[0] == 200
    assert sites.state()["crm-01@hv-sto-1"]["replication_state"] == "InitialReplicationInProgress"
    again = step_context("r", "protect", "failover", hosts, attempt=2, poll_interval=0.02)
    with ThreadPoolExecutor(1) as pool:
        redelivered = pool.submit(initial_replication, again, initial)
        assert sites.lab.admin("POST", "/time/advance", {"seconds": 30})[0] == 200
        outcome = redelivered.result(timeout=60)
    assert outcome.result["state"] == "Replicating"
    assert len(sites.audit("Start-VMInitialReplication")) == 1


def test_prune_disables_a_vm_the_fabric_no_longer_lists(sites: Sites) -> None:
    def drop(snapshot: dict[str, Any]) -> None:
        del snapshot["fabric"]["pairings"]["gold"]["vms"]["app-04"]

    bundle = sites.variant(drop)
    reports = {r.vm: r for r in sites.reports(bundle)}
    assert reports["app-04"].action is Action.PRUNE and reports["app-04"].desired is None
    kept = compile_protection(bundle.fabric, list(reports.values()), vms=["app-04"])
    assert kept is None  # without --prune an unlisted VM is reported, never touched
    compiled = compile_protection(bundle.fabric, list(reports.values()), vms=["app-04"], prune=True)
    assert compiled is not None
    run = sites.run(compiled, bundle)
    assert run.status == RunStatus.SUCCEEDED, run.error
    state = sites.state()
    assert state["app-04@hv-sto-2"]["replication_state"] == "Disabled"
    assert state["app-04@hv-got-2"]["replication_state"] == "Disabled"
    assert "app-04" not in {r.vm for r in sites.reports(bundle)}


def test_disable_keeps_or_deletes_the_replica(sites: Sites) -> None:
    fabric = sites.bundle.fabric
    run = sites.run(compile_disable(fabric, sites.reports(), ["sql-01"], delete_replica=False))
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.operation == "unprotect"
    state = sites.state()
    assert state["sql-01@hv-sto-1"]["replication_state"] == "Disabled"
    assert state["sql-01@hv-got-1"]["replication_state"] == "Disabled"  # the copy is kept
    run = sites.run(compile_disable(fabric, sites.reports(), ["sql-02"], delete_replica=True))
    assert run.status == RunStatus.SUCCEEDED, run.error
    state = sites.state()
    assert "sql-02@hv-got-2" not in state and state["sql-02@hv-sto-2"]["mode"] == "None"
    assert [e["host"] for e in sites.audit("Remove-VM")] == ["hv-got-2"]
    reports = sites.by_vm()
    assert reports["sql-01"].action is Action.ENABLE and reports["sql-02"].action is Action.ENABLE
    with pytest.raises(ProtectionError, match="nothing to disable"):
        compile_disable(fabric, sites.reports(), ["crm-01"], delete_replica=False)


def test_a_replica_server_refusing_the_port_fails_the_step_and_leaves_the_vm(
    sites: Sites,
) -> None:
    def port(snapshot: dict[str, Any]) -> None:
        snapshot["fabric"]["pairings"]["gold"]["profile"]["port"] = 9999

    bundle = sites.variant(port)
    compiled = compile_protection(bundle.fabric, sites.reports(bundle), vms=["crm-01"])
    assert compiled is not None
    run = sites.run(compiled, bundle)
    assert run.status == RunStatus.FAILED
    assert "Enable-VMReplication" in (run.error or "") and "9999" in (run.error or "")
    assert sites.state()["crm-01@hv-sto-1"]["replication_state"] == "Disabled"


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        ("replication_frequency: 60", "replication_frequency"),
        ("recovery_points: 30", "recovery_points"),
        ("initial_replication: {method: offline}", "export_path"),
    ],
)
def test_hostile_profiles_are_refused_with_their_place(
    tmp_path: Any, profile: str, message: str
) -> None:
    text = (
        "version: 1\nfabric:\n  pairings:\n    gold:\n"
        "      primary: {site: a, cloud: c1}\n      recovery: {site: b, cloud: c2}\n"
        f"      profile:\n        {profile}\n"
    )
    path = tmp_path / "fabric.yaml"
    path.write_text(text)
    with pytest.raises(FerrymanError) as caught:
        load_bundle([path])
    assert message in str(caught.value) and f"{path}:" in str(caught.value)


def test_a_protection_run_stopped_by_a_replica_host_down_resumes_where_it_stopped(
    sites: Sites,
) -> None:
    compiled = compile_protection(sites.bundle.fabric, sites.reports(), vms=["crm-01", "hr-01"])
    assert compiled is not None
    assert sites.lab.admin("POST", "/hosts/hv-got-1/down", None)[0] == 200
    run = sites.run(compiled)
    assert run.status == RunStatus.FAILED
    assert "hv-got-1" in (run.error or "")
    state = sites.state()
    assert state["crm-01@hv-sto-1"]["replication_state"] == "Disabled"
    assert state["hr-01@hv-sto-2"]["replication_state"] == "Replicating"  # the other VM went on
    assert sites.lab.admin("POST", "/hosts/hv-got-1/up", None)[0] == 200
    engine = sites.runtime.engine
    engine.resume(run.id, by="test")
    resumed = wait_for(sites.runtime.db, run.id, TERMINAL_RUN, timeout=120, interval=0.05)
    assert resumed.status == RunStatus.SUCCEEDED, resumed.error
    assert sites.state()["crm-01@hv-sto-1"]["replication_state"] == "Replicating"
    # hr-01's steps had succeeded: the resume did not enable it a second time.
    assert sorted(e["vm"] for e in sites.audit("Enable-VMReplication")) == ["crm-01", "hr-01"]


def test_a_vm_failed_over_and_replicating_back_is_reported_and_left_alone(
    sites: Sites,
) -> None:
    from lab.objects import Command

    def call(host: str, cmdlet: str, **params: Any) -> None:
        result = sites.lab.lab.invoke(host, [Command(cmdlet, list(params.items()))])
        assert result.errors == [], [e.message for e in result.errors]

    # A planned failover of sql-01 to gothenburg, replication reversed.
    call("hv-sto-1", "Stop-VM", Name="sql-01", Force=True)
    call("hv-sto-1", "Start-VMFailover", VMName="sql-01", Prepare=True, Confirm=False)
    call("hv-got-1", "Start-VMFailover", VMName="sql-01", Confirm=False)
    call("hv-got-1", "Set-VMReplication", VMName="sql-01", Reverse=True, Confirm=False)
    report = sites.by_vm()["sql-01"]
    assert report.action is Action.REVERSED and not report.healthy
    assert report.observed is not None and report.observed.host == "hv-got-1"
    compiled = compile_protection(sites.bundle.fabric, sites.reports(), vms=["sql-01"])
    assert compiled is None  # a failback brings it home, not protection
