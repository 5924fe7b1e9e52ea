"""Commands whose answer is lost after the host acted (the lab's ``after: true`` faults).

Over real pypsrp, each mutating cmdlet in turn takes effect and then its answer is lost (an
HTTP 500 or a reset): the step raises :class:`OutcomeUnknown`. A step that reads its effect
back is marked retryable, and its retry (the step's second start) finds the work done: the
lab's audit shows the cmdlet's effect once. A script cannot read back what it did: it is not
retried, and fails saying to check the host, then resume or skip.
"""

from __future__ import annotations

from typing import Any

import pytest

from lab.testing import LabHandle
from workers.errors import OutcomeUnknown, retryable
from workers.executors import run_step
from workers.hyperv.pool import RunspacePoolCache
from workflows.inputs import CompensateInput, UndoScript
from workflows.steps import StepKind, StepOutcome, StepSpec

from .labdriver import Driver, once_each

pytestmark = pytest.mark.integration

K = StepKind


def _changes(run: Driver, cmdlet: str, host: str) -> int:
    return sum(
        1 for e in run.audit() if (e["cmdlet"], e["host"], e["changed"]) == (cmdlet, host, True)
    )


def lost_answer(
    run: Driver,
    kind: StepKind,
    host: str,
    vm: str,
    cmdlet: str,
    *,
    fail: str,
    fault_vm: str | None = None,
    **params: Any,
) -> StepOutcome:
    """Run ``kind`` with ``cmdlet``'s answer lost after it acted, then its retry; returns the
    retry's outcome after checking the cmdlet took effect exactly once."""
    rule = {"cmdlet": cmdlet, "host": host, "fail": fail, "after": True, "count": 1}
    if fault_vm is not None:
        rule["vm"] = fault_vm
    status, body = run.lab.admin("POST", "/faults", rule)
    assert status == 201, body
    before = _changes(run, cmdlet, host)
    with pytest.raises(OutcomeUnknown) as err:
        run.step(kind, host, vm, **params)
    assert str(err.value).startswith(f"outcome unknown on {host}: {cmdlet}")
    assert retryable(err.value), f"{kind} reads its effect back, so it may run again"
    assert _changes(run, cmdlet, host) == before + 1, (
        f"{cmdlet} did not act before its answer was lost"
    )
    retried = run.step(kind, host, vm, attempt=2, **params)  # the engine's retry
    assert retried.changed is False, f"{kind} acted again on its retry"
    assert _changes(run, cmdlet, host) == before + 1, f"{cmdlet} took effect twice"
    return retried


def test_planned_failover_steps_converge_once(lab: LabHandle, pools: RunspacePoolCache) -> None:
    run = Driver(lab, pools, "planned")
    vm, source, target = "sql-01", "hv-sto-1", "hv-got-1"
    lost_answer(run, K.SHUTDOWN_PRIMARY, source, vm, "Stop-VM", fail="http500", fault_vm=vm)
    lost_answer(run, K.PREPARE_FAILOVER, source, vm, "Start-VMFailover", fail="reset", fault_vm=vm)
    lost_answer(run, K.FAILOVER, target, vm, "Start-VMFailover", fail="http500", fault_vm=vm)
    lost_answer(
        run,
        K.REVERSE,
        target,
        vm,
        "Set-VMReplication",
        fail="reset",
        fault_vm=vm,
        replica_server=source,
    )
    lost_answer(
        run,
        K.CONNECT_NETWORK,
        target,
        vm,
        "Connect-VMNetworkAdapter",
        fail="http500",
        switch="corp-got",
    )
    lost_answer(run, K.START_VM, target, vm, "Start-VM", fail="reset", fault_vm=vm)
    replica = run.vm_state(vm, target)
    assert (replica["mode"], replica["state"], replica["switches"]) == (
        "Primary",
        "Running",
        ["corp-got"],
    )
    once_each([e for e in run.audit() if not e.get("fault")])


def test_unplanned_failover_commit_reverse_and_cancel_converge_once(
    lab: LabHandle, pools: RunspacePoolCache
) -> None:
    run = Driver(lab, pools, "unplanned")
    vm, old, new = "web-02", "hv-sto-2", "hv-got-2"
    assert lab.admin("POST", f"/hosts/{old}/down")[0] == 200
    run.step(K.FAILOVER, new, vm)
    lost_answer(run, K.COMMIT, new, vm, "Complete-VMFailover", fail="http500", fault_vm=vm)
    assert lab.admin("POST", f"/hosts/{old}/up")[0] == 200
    lost_answer(run, K.SET_AS_REPLICA, old, vm, "Set-VMReplication", fail="reset", fault_vm=vm)
    lost_answer(
        run,
        K.REVERSE_TO,
        new,
        vm,
        "Set-VMReplication",
        fail="http500",
        fault_vm=vm,
        replica_server=old,
    )
    lost_answer(
        run,
        K.START_INITIAL_REPLICATION,
        new,
        vm,
        "Start-VMInitialReplication",
        fail="reset",
        fault_vm=vm,
    )
    assert run.vm_state(vm, old)["mode"] == "Replica"

    other = "sql-02"
    run.step(K.FAILOVER, new, other)
    lost_answer(
        run, K.CANCEL_FAILOVER, new, other, "Stop-VMFailover", fail="http500", fault_vm=other
    )
    assert run.vm_state(other, new)["replication_state"] == "Replicating"


def test_test_failover_dns_and_cleanup_converge_once(
    lab: LabHandle, pools: RunspacePoolCache
) -> None:
    run = Driver(lab, pools, "test")
    vm, host, test_vm = "sql-01", "hv-got-1", "sql-01 - Test"
    lost_answer(run, K.TEST_FAILOVER, host, vm, "Start-VMFailover", fail="http500", fault_vm=vm)
    lost_answer(
        run,
        K.CONNECT_NETWORK,
        host,
        vm,
        "Connect-VMNetworkAdapter",
        fail="reset",
        switch="test-got",
    )
    lost_answer(run, K.START_VM, host, vm, "Start-VM", fail="http500", fault_vm=test_vm)
    run.step(K.WAIT_IP, host, vm, subnets=["10.99.0.0/16"], timeout=30)
    zone = {"kind": "windows", "vmm": "vmm-got", "verify_timeout": 10}
    dns: dict[str, Any] = {
        "records": [{"zone": "test.corp.example", "name": vm, "ttl": 60}],
        "zones": {"test.corp.example": zone},
    }
    for cmdlet, fail in (("Add-DnsServerResourceRecordA", "http500"),):
        rule = {"cmdlet": cmdlet, "host": "vmm-got", "fail": fail, "after": True, "count": 1}
        assert lab.admin("POST", "/faults", rule)[0] == 201
    with pytest.raises(OutcomeUnknown) as err:
        run.step(K.UPDATE_DNS, host, vm, **dns)
    assert retryable(err.value)
    switched = run.step(K.UPDATE_DNS, host, vm, attempt=2, **dns)
    assert switched.result["records"][0]["addresses"] == ["10.99.1.11"]
    assert _changes(run, "Add-DnsServerResourceRecordA", "vmm-got") == 1
    # moving the record on adds the new address, then removes the old one: lose that answer
    moved = {**dns, "addresses": ["10.99.1.99"]}
    rule = {"cmdlet": "Remove-DnsServerResourceRecord", "host": "vmm-got", "fail": "reset"}
    assert lab.admin("POST", "/faults", {**rule, "after": True, "count": 1})[0] == 201
    with pytest.raises(OutcomeUnknown) as err:
        run.step(K.UPDATE_DNS, host, vm, **moved)
    assert retryable(err.value)
    assert run.step(K.UPDATE_DNS, host, vm, attempt=2, **moved).changed is False
    assert _changes(run, "Remove-DnsServerResourceRecord", "vmm-got") == 1
    assert _changes(run, "Add-DnsServerResourceRecordA", "vmm-got") == 2
    lost_answer(run, K.TEST_CLEANUP, host, vm, "Stop-VMFailover", fail="reset", fault_vm=vm)
    assert run.vm_state(vm, host)["test_vm"] is None


@pytest.mark.parametrize("fail", ["http500", "reset"])
def test_a_script_whose_answer_is_lost_is_not_run_again(
    lab: LabHandle, pools: RunspacePoolCache, fail: str
) -> None:
    run = Driver(lab, pools, "planned")
    rule = {"cmdlet": "Script", "host": "vmm-sto", "fail": fail, "after": True, "count": 1}
    assert lab.admin("POST", "/faults", rule)[0] == 201
    script = "Write-Output 'order intake paused'"
    step = StepSpec(
        "g1.quiesce/script", K.SCRIPT, None, "vmm-sto", {"script": script, "name": "quiesce"}
    )
    with pytest.raises(OutcomeUnknown) as err:
        run_step(run.ctx("g1.quiesce"), step)
    assert not retryable(err.value)
    assert str(err.value).startswith(
        "outcome unknown on vmm-sto: check, then `ferryman runs resume run-lab` or "
        "`ferryman runs skip run-lab`"
    )
    ran = [e for e in run.audit() if e["cmdlet"] == "Script"]
    assert len(ran) == 1 and ran[0]["changed"] and ran[0]["fault"] == fail

    # the same for the undo script a compensation runs
    assert lab.admin("POST", "/faults", rule)[0] == 201
    undo = UndoScript(host="vmm-sto", name="quiesce (undo)", script="Write-Output 'resumed'")
    compensate = StepSpec(
        "compensate/g1.quiesce/script", K.COMPENSATE, None, "vmm-sto", CompensateInput(undo=undo)
    )
    with pytest.raises(OutcomeUnknown) as undone:
        run_step(run.ctx("g1.quiesce"), compensate)
    assert not retryable(undone.value)
    assert len([e for e in run.audit() if e["cmdlet"] == "Script"]) == 2


def test_a_script_the_plan_says_is_safe_twice_is_retried(
    lab: LabHandle, pools: RunspacePoolCache
) -> None:
    run = Driver(lab, pools, "planned")
    rule = {"cmdlet": "Script", "host": "vmm-sto", "fail": "http500", "after": True, "count": 1}
    assert lab.admin("POST", "/faults", rule)[0] == 201
    params = {"script": "Write-Output 'caches warmed'", "rerun_on_redelivery": True}
    step = StepSpec("g3.warm/script", K.SCRIPT, None, "vmm-sto", params)
    with pytest.raises(OutcomeUnknown) as err:
        run_step(run.ctx("g3.warm"), step)
    assert retryable(err.value)
