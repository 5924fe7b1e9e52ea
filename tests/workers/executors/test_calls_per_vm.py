"""PowerShell calls per VM, counted by the lab: a step's first start acts without reading first.

Each failover type's VM steps, as the compiler orders them, run once against the lab over
real pypsrp; every pipeline the lab answers is counted (reads included). Issue 19's bounds:
a test failover at most 5 calls per VM, a planned one 10, an unplanned one 7; and each
mutating cmdlet still takes effect once.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bench.calls import recording
from lab.testing import running_lab
from workers.hyperv.pool import RunspacePoolCache
from workflows.steps import StepKind

from .labdriver import PASSWORD_ENV, Driver, lab_topology, once_each

pytestmark = pytest.mark.integration

K = StepKind


def _test(run: Driver) -> None:
    run.step(K.TEST_FAILOVER, "hv-got-1", "sql-01")
    run.step(K.CONNECT_NETWORK, "hv-got-1", "sql-01", switch="test-got")
    run.step(K.START_VM, "hv-got-1", "sql-01")
    run.step(K.WAIT_IP, "hv-got-1", "sql-01", subnets=["10.99.0.0/16"], timeout=30)


def _planned(run: Driver) -> None:
    run.step(K.SHUTDOWN_PRIMARY, "hv-sto-1", "sql-01")
    run.step(K.PREPARE_FAILOVER, "hv-sto-1", "sql-01")
    run.step(K.FAILOVER, "hv-got-1", "sql-01")
    run.step(K.REVERSE, "hv-got-1", "sql-01", replica_server="hv-sto-1")
    run.step(K.CONNECT_NETWORK, "hv-got-1", "sql-01", switch="corp-got")
    run.step(K.START_VM, "hv-got-1", "sql-01")
    run.step(K.WAIT_IP, "hv-got-1", "sql-01", subnets=["10.20.0.0/16"], timeout=30)


def _unplanned(run: Driver) -> None:
    run.step(K.SHUTDOWN_PRIMARY, "hv-sto-1", "sql-01", best_effort=True)
    run.step(K.FAILOVER, "hv-got-1", "sql-01")
    run.step(K.CONNECT_NETWORK, "hv-got-1", "sql-01", switch="corp-got")
    run.step(K.START_VM, "hv-got-1", "sql-01")
    run.step(K.WAIT_IP, "hv-got-1", "sql-01", subnets=["10.20.0.0/16"], timeout=30)


@pytest.mark.parametrize(
    ("failover_type", "steps", "bound"),
    [("test", _test, 5), ("planned", _planned, 10), ("unplanned", _unplanned, 7)],
)
def test_calls_per_vm_stay_within_the_bound(
    monkeypatch: pytest.MonkeyPatch,
    pools: RunspacePoolCache,
    failover_type: str,
    steps: Callable[[Driver], None],
    bound: int,
) -> None:
    topology = lab_topology()
    for vm in topology["vms"]:
        vm["boot_seconds"] = 0  # the guest's boot is its own time: one read finds the address
    with running_lab(topology, auth="ntlm") as lab:
        monkeypatch.setenv(PASSWORD_ENV, lab.password)
        run = Driver(lab, pools, failover_type)
        with recording(lab.lab) as log:
            steps(run)
        calls = [call.cmdlet for call in log.per_vm()["sql-01"]]
        assert len(calls) <= bound, calls
        once_each(run.audit())
