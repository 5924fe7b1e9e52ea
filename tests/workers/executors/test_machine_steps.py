"""Network, power, address and health executors on the fake world."""

from __future__ import annotations

from dataclasses import replace

import pytest

from workers.errors import CmdletFailed
from workers.executors import HealthCheckFailed, StepParamsError, VmNotFound, run_step
from workers.executors.lookup import require_vm
from workers.executors.machine import _RUN_IT_FIRST
from workers.hyperv.ip import IpTimeout
from workflows.inputs import RestoreNetwork, StopVm
from workflows.steps import StepKind

from .conftest import MakeContext
from .helpers import spec, twice
from .world import World

K = StepKind
TEST_VM = "sql-01 - Test"


@pytest.fixture
def test_vm(world: World, make_ctx: MakeContext) -> None:
    run_step(make_ctx("test"), spec(K.TEST_FAILOVER, "hv-got-1"))


@pytest.mark.usefixtures("test_vm")
def test_connect_network_acts_on_the_test_vm_in_a_test_run(
    world: World, make_ctx: MakeContext
) -> None:
    out = twice(world, make_ctx("test"), spec(K.CONNECT_NETWORK, "hv-got-1", switch="test-got"))
    assert world.vm("hv-got-1", TEST_VM).switches == ["test-got"]
    assert world.vm("hv-got-1", "sql-01").switches == [None]
    assert out.undo is None  # the test VM's cleanup deletes it anyway


def test_connect_network_without_a_switch_leaves_the_vm_alone(
    world: World, make_ctx: MakeContext
) -> None:
    out = run_step(make_ctx(), spec(K.CONNECT_NETWORK, "hv-got-1", switch=None))
    assert out.changed is False and out.result["switch"] is None
    assert world.mutations() == []


def test_connect_network_on_a_replica_records_the_previous_switch(
    world: World, make_ctx: MakeContext
) -> None:
    out = twice(world, make_ctx(), spec(K.CONNECT_NETWORK, "hv-got-1", switch="corp-got"))
    assert out.undo == RestoreNetwork(host="hv-got-1", vm="sql-01", switch=None)


def test_connect_network_of_a_missing_test_vm_says_to_run_the_test_failover(
    make_ctx: MakeContext,
) -> None:
    with pytest.raises(VmNotFound, match="sql-01 - Test"):
        run_step(make_ctx("test"), spec(K.CONNECT_NETWORK, "hv-got-1", switch="test-got"))


def test_connect_network_of_a_missing_vm_fails_as_require_vm_does(
    world: World, make_ctx: MakeContext
) -> None:
    """Get-VMNetworkAdapter's "unable to find a virtual machine" is require_vm's VmNotFound."""
    ctx = make_ctx("test")
    step = spec(K.CONNECT_NETWORK, "hv-got-1", switch="test-got")
    with pytest.raises(VmNotFound) as err:
        run_step(ctx, step)
    # the first start connects at once; the refusal is explained by the adapters' read
    assert [c.cmdlet for c in world.calls] == ["Connect-VMNetworkAdapter", "Get-VMNetworkAdapter"]
    with pytest.raises(VmNotFound) as expected:
        require_vm(ctx.hyperv("hv-got-1"), step, TEST_VM, _RUN_IT_FIRST)
    assert str(err.value) == str(expected.value)
    assert "run the failover (or test failover) step first" in str(err.value)


@pytest.mark.usefixtures("test_vm")
def test_connect_network_lets_other_adapter_read_errors_through(
    world: World, make_ctx: MakeContext
) -> None:
    world.faults[("hv-got-1", "Get-VMNetworkAdapter")] = CmdletFailed(
        "Get-VMNetworkAdapter failed on hv-got-1: You do not have the required permission.",
        host="hv-got-1",
        cmdlet="Get-VMNetworkAdapter",
        fully_qualified_error_id="AccessDenied,Microsoft.HyperV.PowerShell.Commands.GetVMNetworkAdapter",
        category="PermissionDenied",
    )
    retry = replace(make_ctx("test"), attempt=2)  # a later start reads the adapters first
    with pytest.raises(CmdletFailed, match="required permission"):
        run_step(retry, spec(K.CONNECT_NETWORK, "hv-got-1", switch="test-got"))
    assert world.mutations(TEST_VM) == []


@pytest.mark.usefixtures("test_vm")
def test_connect_network_reads_the_adapters_without_a_get_vm_first(
    world: World, make_ctx: MakeContext
) -> None:
    """A later start reads the adapters, which also finds a missing VM (no Get-VM); the
    first start of a test VM's connection connects without reading."""
    world.calls.clear()
    step = spec(K.CONNECT_NETWORK, "hv-got-1", switch="test-got")
    out = run_step(replace(make_ctx("test"), attempt=2), step)
    assert out.result == {"switch": "test-got", "previous": [""]}
    assert [(c.cmdlet, c.params) for c in world.calls] == [
        ("Get-VMNetworkAdapter", {"VMName": TEST_VM}),
        ("Connect-VMNetworkAdapter", {"VMName": TEST_VM, "SwitchName": "test-got"}),
    ]
    world.vm("hv-got-1", TEST_VM).switches = [None]
    world.calls.clear()
    assert run_step(make_ctx("test"), step).result == {"switch": "test-got"}
    assert [c.cmdlet for c in world.calls] == ["Connect-VMNetworkAdapter"]


@pytest.mark.usefixtures("test_vm")
def test_start_then_wait_ip_finds_the_test_address(world: World, make_ctx: MakeContext) -> None:
    ctx = make_ctx("test")
    run_step(ctx, spec(K.CONNECT_NETWORK, "hv-got-1", switch="test-got"))
    started = twice(world, ctx, spec(K.START_VM, "hv-got-1", start_delay=0.001))
    assert started.undo is None
    assert world.vm("hv-got-1", TEST_VM).state == "Running"
    out = run_step(ctx, spec(K.WAIT_IP, "hv-got-1", subnets=["10.99.0.0/16"], timeout=5))
    assert out.result["addresses"] == ["10.99.1.11"]
    assert out.changed is False


@pytest.mark.usefixtures("test_vm")
def test_start_vm_trusts_the_running_vm_start_vm_passes_back(
    world: World, make_ctx: MakeContext
) -> None:
    """Start-VM returns once the VM runs; its -Passthru object shows it, so no read follows."""
    world.calls.clear()
    out = run_step(make_ctx("test"), spec(K.START_VM, "hv-got-1"))
    assert out.result == {"state": "Running"}
    assert [(c.cmdlet, c.switches) for c in world.calls] == [("Start-VM", ("Passthru",))]


@pytest.mark.usefixtures("test_vm")
def test_start_vm_reads_again_when_start_vm_answers_before_the_vm_runs(
    world: World, make_ctx: MakeContext
) -> None:
    world.slow_start.add(TEST_VM)
    world.calls.clear()
    out = run_step(make_ctx("test"), spec(K.START_VM, "hv-got-1"))
    assert out.result == {"state": "Running"}
    assert [c.cmdlet for c in world.calls] == ["Start-VM", "Get-VM"]


def test_start_vm_of_a_failed_over_replica_can_be_undone(
    world: World, make_ctx: MakeContext
) -> None:
    ctx = make_ctx("unplanned")
    run_step(ctx, spec(K.FAILOVER, "hv-got-1"))
    out = twice(world, ctx, spec(K.START_VM, "hv-got-1"))
    assert out.undo == StopVm(host="hv-got-1", vm="sql-01")


def test_wait_ip_through_vmm_picks_the_vm_on_the_step_host(
    world: World, make_ctx: MakeContext
) -> None:
    ctx = make_ctx("unplanned")
    run_step(ctx, spec(K.FAILOVER, "hv-got-1"))
    run_step(ctx, spec(K.CONNECT_NETWORK, "hv-got-1", switch="corp-got"))
    run_step(ctx, spec(K.START_VM, "hv-got-1"))
    # Without params.vmm the site's VMM server is found from the run's hosts.
    step = spec(K.WAIT_IP, "hv-got-1", subnets=["10.20.0.0/16"], source="vmm")
    out = run_step(ctx, step)
    assert out.result == {"addresses": ["10.20.1.11"], "source": "vmm"}
    assert {c.host for c in world.calls if c.cmdlet.startswith("Get-SC")} == {"vmm-got"}


def test_wait_ip_times_out_transiently_naming_what_it_saw(
    world: World, make_ctx: MakeContext
) -> None:
    world.boot_without_ip.add("sql-01")
    ctx = make_ctx("unplanned")
    run_step(ctx, spec(K.FAILOVER, "hv-got-1"))
    run_step(ctx, spec(K.START_VM, "hv-got-1"))
    with pytest.raises(IpTimeout, match=r"sql-01.*hv-got-1.*10\.20\.0\.0/16"):
        run_step(ctx, spec(K.WAIT_IP, "hv-got-1", subnets=["10.20.0.0/16"], timeout=0.05))


def test_wait_ip_without_subnets_is_a_params_error(make_ctx: MakeContext) -> None:
    with pytest.raises(StepParamsError, match="subnets"):
        run_step(make_ctx(), spec(K.WAIT_IP, "hv-got-1"))


def test_health_check_passes_for_a_running_primary(make_ctx: MakeContext) -> None:
    out = run_step(make_ctx(), spec(K.HEALTH_CHECK, "hv-sto-1"))
    assert out.result == {"state": "Running", "health": "Normal"}
    assert out.changed is False


def test_health_check_fails_on_critical_health_or_a_stopped_vm(
    world: World, make_ctx: MakeContext
) -> None:
    world.vm("hv-sto-1", "sql-01").repl.health = "Critical"  # type: ignore[union-attr]
    with pytest.raises(HealthCheckFailed, match="health Critical"):
        run_step(make_ctx(), spec(K.HEALTH_CHECK, "hv-sto-1"))
    with pytest.raises(HealthCheckFailed, match="VM Off"):
        run_step(make_ctx(), spec(K.HEALTH_CHECK, "hv-got-1"))
