"""VMM: several VMs may share a name; the ranking picks the one a failover means."""

from __future__ import annotations

import pytest

from workers.errors import CmdletFailed
from workers.hyperv.vmm import SCVirtualMachine, VmmServer, rank

from .doubles import FakeRunner, error, output


def vm(host: str, status: str, id_: str = "1") -> SCVirtualMachine:
    return SCVirtualMachine("sql-01", id_, host, status, ())


def test_rank_prefers_host_then_live_status() -> None:
    stale = vm("hv-sto-1.corp.example", "Running", "a")
    replica_off = vm("hv-got-1.corp.example", "PowerOff", "b")
    replica_on = vm("hv-got-1.corp.example", "Running", "c")
    assert rank([stale, replica_off, replica_on], "hv-got-1") == [replica_on, replica_off, stale]
    assert rank([replica_off, stale])[0] is stale  # no host preference: running first


def test_get_sc_virtual_machines_reads_nested_adapters(runner: FakeRunner) -> None:
    runner.on(
        "Get-SCVirtualMachine",
        output(
            {
                "Name": "sql-01",
                "ID": "vm-a",
                "VMHost": {"Name": "hv-sto-1"},
                "Status": "Running",
                "VirtualNetworkAdapters": [
                    {"ID": "nic-a", "Name": "nic", "VMNetwork": {"Name": "corp-sto"}}
                ],
            },
            {
                "Name": "sql-01",
                "ID": "vm-b",
                "HostName": "hv-got-1",
                "Status": "Running",
                "VirtualNetworkAdapters": {"ID": "nic-b", "Name": "nic", "VMNetwork": "corp-got"},
            },
            {"Name": "sql-010", "ID": "vm-c", "HostName": "hv-got-1", "Status": "Running"},
        ),
    )
    found = VmmServer(runner, "vmm-got").get_sc_virtual_machines("sql-01", prefer_host="hv-got-1")
    assert [v.id for v in found] == ["vm-b", "vm-a"]
    assert found[0].adapters[0].id == "nic-b" and found[0].adapters[0].vm_network == "corp-got"
    assert found[1].host == "hv-sto-1" and found[1].adapters[0].vm_network == "corp-sto"


def test_get_ip_addresses(runner: FakeRunner) -> None:
    runner.on("Get-SCIPAddress", output({"Address": "10.20.1.11"}, {"Address": "fd00::11"}))
    assert VmmServer(runner).get_ip_addresses("nic-b") == ["10.20.1.11", "fd00::11"]
    assert runner.calls[0].parameters == {"GrantToObjectID": "nic-b"}


def test_vmm_error_record_fails_with_the_vmm_error_id(runner: FakeRunner) -> None:
    runner.on(
        "Get-SCIPAddress",
        error("You do not have access to this object.", "1604", "PermissionDenied"),
    )
    with pytest.raises(CmdletFailed) as info:
        VmmServer(runner, "vmm-got").get_ip_addresses("nic-b")
    assert (info.value.host, info.value.cmdlet) == ("vmm-got", "Get-SCIPAddress")
    assert info.value.fully_qualified_error_id == "1604"
