"""Executors against the lab's injected faults: lost answers, transport errors, refusals.

The case idempotency exists for: the host acted but its answer was lost. The step raises a
transient error (the engine retries), and the retry finds the effect there and does nothing.
"""

from __future__ import annotations

import pytest

from lab.testing import LabHandle
from plans.errors import TransientError
from workers.errors import CmdletFailed
from workers.executors import HealthCheckFailed, StepFailed, VmNotFound
from workers.hyperv.ip import IpTimeout
from workers.hyperv.pool import RunspacePoolCache
from workflows.steps import StepKind

from .labdriver import Driver

pytestmark = pytest.mark.integration

K = StepKind


def _fault(lab: LabHandle, **rule: object) -> None:
    status, body = lab.admin("POST", "/faults", rule)
    assert status == 201, body


def _changes(run: Driver, cmdlet: str, vm: str) -> list[dict[str, object]]:
    return [e for e in run.audit() if e["cmdlet"] == cmdlet and e["vm"] == vm and e["changed"]]


@pytest.mark.parametrize("fail", ["reset", "http500"])
def test_a_failover_whose_answer_is_lost_is_not_repeated(
    lab: LabHandle, pools: RunspacePoolCache, fail: str
) -> None:
    run = Driver(lab, pools, "unplanned")
    _fault(lab, cmdlet="Start-VMFailover", vm="sql-02", fail=fail, after=True, count=1)
    with pytest.raises(TransientError):
        run.step(K.FAILOVER, "hv-got-2", "sql-02")
    assert run.vm_state("sql-02", "hv-got-2")["replication_state"] == "FailedOverWaitingCompletion"

    retried = run.step(K.FAILOVER, "hv-got-2", "sql-02")  # the engine's retry
    assert retried.changed is False
    assert len(_changes(run, "Start-VMFailover", "sql-02")) == 1


def test_a_start_that_never_reached_the_host_is_done_by_the_retry(
    lab: LabHandle, pools: RunspacePoolCache
) -> None:
    run = Driver(lab, pools, "unplanned")
    run.step(K.FAILOVER, "hv-got-1", "file-01")
    _fault(lab, cmdlet="Start-VM", vm="file-01", fail="http500", count=1)
    with pytest.raises(TransientError):
        run.step(K.START_VM, "hv-got-1", "file-01")
    assert run.step(K.START_VM, "hv-got-1", "file-01").changed is True
    assert run.vm_state("file-01", "hv-got-1")["state"] == "Running"
    assert len(_changes(run, "Start-VM", "file-01")) == 1


def test_a_refused_reverse_names_vm_host_cmdlet_and_state(
    lab: LabHandle, pools: RunspacePoolCache
) -> None:
    run = Driver(lab, pools, "planned")
    run.step(K.SHUTDOWN_PRIMARY, "hv-sto-1", "app-03")
    run.step(K.PREPARE_FAILOVER, "hv-sto-1", "app-03")
    run.step(K.FAILOVER, "hv-got-1", "app-03")
    _fault(
        lab,
        cmdlet="Set-VMReplication",
        vm="app-03",
        fail="error",
        error_id="ReplicaServerUnreachable",
        message="The replica server did not answer",
    )
    with pytest.raises(StepFailed) as err:
        run.step(K.REVERSE, "hv-got-1", "app-03")
    message = str(err.value)
    for part in (
        "app-03",
        "hv-got-1",
        "Set-VMReplication -Reverse",
        "FailedOverWaitingCompletion",
        "did not answer",
    ):
        assert part in message


def test_health_check_and_wait_ip_report_what_they_saw(
    lab: LabHandle, pools: RunspacePoolCache
) -> None:
    run = Driver(lab, pools, "planned")
    assert lab.admin("POST", "/vms/web-01/health", {"health": "Critical"})[0] == 200
    with pytest.raises(HealthCheckFailed, match="health Critical"):
        run.step(K.HEALTH_CHECK, "hv-sto-1", "web-01", timeout=0.2)

    assert lab.admin("POST", "/vms/web-03/no-ip", {"no_ip": True})[0] == 200
    run.step(K.FAILOVER, "hv-got-1", "web-03")
    run.step(K.CONNECT_NETWORK, "hv-got-1", "web-03", switch="corp-got")
    run.step(K.START_VM, "hv-got-1", "web-03")
    with pytest.raises(IpTimeout, match=r"web-03.*hv-got-1.*10\.20\.0\.0/16"):
        run.step(K.WAIT_IP, "hv-got-1", "web-03", subnets=["10.20.0.0/16"], timeout=0.5)


def test_connect_network_of_a_missing_test_vm_is_vm_not_found(
    lab: LabHandle, pools: RunspacePoolCache
) -> None:
    """The lab answers Get-VMNetworkAdapter for a missing VM as Hyper-V does (a
    non-terminating "unable to find a virtual machine"); the step says to fail over first."""
    run = Driver(lab, pools, "test")
    with pytest.raises(VmNotFound) as err:
        run.step(K.CONNECT_NETWORK, "hv-got-1", "sql-01", switch="test-got")
    assert str(err.value) == (
        f"VM 'sql-01 - Test' is not on host hv-got-1 (step {K.CONNECT_NETWORK}); run the "
        "failover (or test failover) step first, or check the plan's replica host"
    )
    cause = err.value.__cause__
    assert isinstance(cause, CmdletFailed)
    assert (cause.cmdlet, cause.fully_qualified_error_id, cause.category) == (
        "Get-VMNetworkAdapter",
        "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVMNetworkAdapter",
        "InvalidArgument",
    )
    assert "unable to find a virtual machine" in str(cause)
    # the first start connected at once; the host refused it and changed nothing
    assert [(e["cmdlet"], e["changed"]) for e in run.audit()] == [
        ("Connect-VMNetworkAdapter", False)
    ]
