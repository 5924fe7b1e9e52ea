"""VM names with PowerShell wildcard characters name one VM, never a pattern.

Hyper-V reads ``-Name``/``-VMName`` as wildcard patterns: ``app[1]`` matches ``app1`` and
``web`01`` matches nothing. The adapter sends every VM (and adapter) name escaped, and keeps
only output objects whose name is the literal one. The lab models the same matching, so the
last tests prove it end to end over real pypsrp.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from workers.errors import CmdletFailed
from workers.hyperv.hyperv import (
    HyperVHost,
    ReplicationSettings,
    escape_wildcards,
    name_of_test_vm,
)
from workers.hyperv.states import VMState
from workers.hyperv.vmm import VmmServer

from .doubles import FakeRunner, output
from .test_lab_world import World, serve

WILD = "app[1]"
ESCAPED = "app`[1`]"

# (method call, cmdlet, the parameter that names the VM)
CALLS: list[tuple[str, Callable[[HyperVHost], Any], str, str]] = [
    ("start_vm", lambda h: h.start_vm(WILD), "Start-VM", "Name"),
    ("stop_vm", lambda h: h.stop_vm(WILD, turn_off=True), "Stop-VM", "Name"),
    ("failover", lambda h: h.start_failover(WILD), "Start-VMFailover", "VMName"),
    ("test", lambda h: h.start_failover(WILD, as_test=True), "Start-VMFailover", "VMName"),
    ("prepare", lambda h: h.start_failover(WILD, prepare=True), "Start-VMFailover", "VMName"),
    ("stop_failover", lambda h: h.stop_failover(WILD), "Stop-VMFailover", "VMName"),
    ("complete", lambda h: h.complete_failover(WILD), "Complete-VMFailover", "VMName"),
    ("reverse", lambda h: h.set_replication_reverse(WILD), "Set-VMReplication", "VMName"),
    ("as_replica", lambda h: h.set_replication_as_replica(WILD), "Set-VMReplication", "VMName"),
    (
        "enable",
        lambda h: h.enable_replication(WILD, ReplicationSettings("hv-got-1")),
        "Enable-VMReplication",
        "VMName",
    ),
    (
        "initial",
        lambda h: h.start_initial_replication(WILD),
        "Start-VMInitialReplication",
        "VMName",
    ),
    ("connect", lambda h: h.connect_network(WILD, "dr[net]"), "Connect-VMNetworkAdapter", "VMName"),
    ("disconnect", lambda h: h.disconnect_network(WILD), "Disconnect-VMNetworkAdapter", "VMName"),
    ("adapters", lambda h: h.get_network_adapters(WILD), "Get-VMNetworkAdapter", "VMName"),
    ("points", lambda h: h.get_recovery_points(WILD), "Get-VMSnapshot", "VMName"),
]


@pytest.mark.parametrize(("label", "call", "cmdlet", "param"), CALLS, ids=[c[0] for c in CALLS])
def test_every_cmdlet_gets_the_vm_name_escaped(
    runner: FakeRunner,
    label: str,
    call: Callable[[HyperVHost], Any],
    cmdlet: str,
    param: str,
) -> None:
    call(HyperVHost(runner, "hv-got-1"))
    sent = [c for c in runner.calls if c.cmdlet == cmdlet]
    assert [c.parameters[param] for c in sent] == [ESCAPED], label


def test_test_vm_names_are_escaped_with_their_suffix(runner: FakeRunner) -> None:
    HyperVHost(runner, "hv-got-1").start_vm(name_of_test_vm("web`01"))
    assert runner.calls[0].parameters == {"Name": "web``01 - Test"}


def test_switch_name_is_literal_and_adapter_name_escaped(runner: FakeRunner) -> None:
    HyperVHost(runner, "hv-got-1").connect_network("web*", "dr[net]", adapter="nic?")
    assert runner.calls[0].parameters == {
        "VMName": "web`*",
        "SwitchName": "dr[net]",  # one switch by its literal name; no pattern
        "Name": "nic`?",
    }


def test_get_vm_keeps_only_the_vm_of_that_exact_name(runner: FakeRunner) -> None:
    runner.on(
        "Get-VM",
        output(
            {"Name": "app1", "Id": "decoy", "State": "Running"},
            {"Name": WILD, "Id": "real", "State": "Off"},
        ),
    )
    vm = HyperVHost(runner, "hv-got-1").get_vm(WILD)
    assert (vm.name, vm.id) == (WILD, "real")
    assert runner.calls[0].parameters == {"Name": ESCAPED}


def test_get_vm_never_falls_back_to_another_name(runner: FakeRunner) -> None:
    runner.on("Get-VM", output({"Name": "app1", "Id": "decoy", "State": "Running"}))
    with pytest.raises(CmdletFailed, match=r"no VM named 'app\[1\]' \(only app1"):
        HyperVHost(runner, "hv-got-1").get_vm(WILD)


def test_get_vm_prefers_the_exact_case_and_refuses_two_of_one_name(runner: FakeRunner) -> None:
    runner.on(
        "Get-VM",
        output(
            {"Name": "APP", "Id": "upper", "State": "Off"},
            {"Name": "app", "Id": "lower", "State": "Off"},
        ),
        output({"Name": "App", "Id": "a", "State": "Off"}, {"Name": "App", "Id": "b"}),
    )
    host = HyperVHost(runner, "hv-got-1")
    assert host.get_vm("app").id == "lower"
    with pytest.raises(CmdletFailed, match="2 VMs named 'App'") as caught:
        host.get_vm("App")
    assert caught.value.fully_qualified_error_id == "AmbiguousVMName"


def test_get_replication_reads_the_named_vm_only(runner: FakeRunner) -> None:
    decoy = {"VMName": "app1", "State": "Suspended", "Health": "Critical", "Mode": "Replica"}
    real = {"VMName": WILD, "State": "Replicating", "Health": "Normal", "Mode": "Replica"}
    runner.on("Get-VMReplication", output(decoy, real))
    info = HyperVHost(runner, "hv-got-1").get_replication(WILD)
    assert info.vm_name == WILD and info.state.value == "Replicating"


def test_adapters_and_points_of_other_vms_are_dropped(runner: FakeRunner) -> None:
    runner.on(
        "Get-VMNetworkAdapter",
        output(
            {"VMName": "app1", "Name": "decoy-nic", "SwitchName": "x"},
            {"VMName": WILD, "Name": "nic", "SwitchName": "y"},
            {"Name": "no-owner"},  # builds that leave VMName out: the escaped name chose it
        ),
    )
    runner.on(
        "Get-VMSnapshot",
        output(
            {"VMName": "app1", "Name": "decoy", "SnapshotType": "Replica"},
            {"VMName": WILD, "Name": "real", "SnapshotType": "Replica"},
        ),
    )
    host = HyperVHost(runner, "hv-got-1")
    assert [a.name for a in host.get_network_adapters(WILD)] == ["nic", "no-owner"]
    assert [p.name for p in host.get_recovery_points(WILD)] == ["real"]


def test_vmm_sends_the_literal_name_and_keeps_only_that_name(runner: FakeRunner) -> None:
    runner.on(
        "Get-SCVirtualMachine",
        output(
            {"Name": "app1", "ID": "decoy", "HostName": "hv-got-1", "Status": "Running"},
            {"Name": WILD, "ID": "real", "HostName": "hv-got-1", "Status": "Running"},
        ),
    )
    found = VmmServer(runner, "vmm-got").get_sc_virtual_machines(WILD)
    assert runner.calls[0].parameters == {"Name": WILD}  # VMM's -Name is not a pattern
    assert [vm.id for vm in found] == ["real"]


def test_escape_wildcards_round_trips_every_special_character() -> None:
    assert escape_wildcards("a*b?c[d]e`f") == "a`*b`?c`[d`]e``f"
    assert escape_wildcards("plain name 'x'; $(y)") == "plain name 'x'; $(y)"


# --- against the lab, over real pypsrp ------------------------------------------------------


def _vm(name: str, last: int) -> dict[str, Any]:
    return {
        "name": name,
        "primary": "hv-sto-1",
        "replica": "hv-got-1",
        "networks": ["corp-sto"],
        "ips": {"corp-sto": f"10.10.7.{last}", "corp-got": f"10.20.7.{last}"},
        "boot_seconds": 30,
        "replication": {"frequency": 300, "recovery_history": 0, "auth": "kerberos"},
    }


@pytest.mark.integration
def test_lab_acts_on_the_literal_vm_and_never_on_the_decoy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    vms = [_vm(WILD, 1), _vm("app1", 2), _vm("web`01", 3)]
    with serve(monkeypatch, extra_vms=vms) as world:
        _prove_literal(world)


def _prove_literal(world: World) -> None:
    primary = world.hv("hv-sto-1")
    assert primary.get_vm(WILD).name == WILD
    assert primary.get_vm("web`01").name == "web`01"
    primary.stop_vm(WILD, turn_off=True)
    primary.stop_vm("web`01", turn_off=True)
    assert primary.get_vm(WILD).state is VMState.OFF
    assert primary.get_vm("web`01").state is VMState.OFF
    assert primary.get_vm("app1").state is VMState.RUNNING  # the decoy was left alone
    assert [a.name for a in primary.get_network_adapters(WILD)]
    touched = {e["vm"] for e in world.audit()["entries"]}
    assert touched == {WILD, "web`01"}, touched
