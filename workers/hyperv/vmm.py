"""VmmServer: the VMM cmdlets Ferryman needs, over any PowerShellRunner.

``Get-SCVirtualMachine -Name`` can return several VMs with one name: a replica and its
primary when one VMM manages both sites, a stale record of a VM that moved, or a failed-over VM
next to an old copy. :func:`rank` orders them so the first is the one a failover step means:
on the expected host first, then running before starting before anything else, then by name
and ID so the choice is stable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from workers.hyperv.hyperv import failed
from workers.hyperv.models import as_list, first, require
from workers.powershell import PowerShellRunner

# VMM's VMComputerSystemState names, best first for "the VM that is live".
_STATUS_ORDER = ("Running", "Starting", "Stopping", "PowerOff", "Saved")


@dataclass(frozen=True)
class SCNetworkAdapter:
    """One ``VirtualNetworkAdapter`` of a VMM virtual machine."""

    id: str
    name: str
    vm_network: str

    @classmethod
    def from_output(cls, obj: Mapping[str, Any]) -> SCNetworkAdapter:
        """Read one adapter object nested in ``Get-SCVirtualMachine`` output."""
        network = first(obj, "VMNetwork", "LogicalNetwork")
        if isinstance(network, Mapping):
            network = first(network, "Name")
        return cls(
            id=str(require(obj, "ID", "Id")),
            name=str(first(obj, "Name") or ""),
            vm_network=str(network or ""),
        )


@dataclass(frozen=True)
class SCVirtualMachine:
    """One ``Get-SCVirtualMachine`` result: where it runs, its status and its adapters."""

    name: str
    id: str
    host: str
    status: str
    adapters: tuple[SCNetworkAdapter, ...]

    @classmethod
    def from_output(cls, obj: Mapping[str, Any]) -> SCVirtualMachine:
        """Read one ``Microsoft.SystemCenter.VirtualMachineManager.VM``."""
        host = first(obj, "HostName", "VMHost")
        if isinstance(host, Mapping):
            host = first(host, "Name", "ComputerName", "FQDN")
        adapters = [
            SCNetworkAdapter.from_output(a)
            for a in as_list(first(obj, "VirtualNetworkAdapters"))
            if isinstance(a, Mapping)
        ]
        return cls(
            name=str(require(obj, "Name")),
            id=str(first(obj, "ID", "Id", "VMId") or ""),
            host=str(host or ""),
            status=str(first(obj, "Status", "VirtualMachineState") or ""),
            adapters=tuple(adapters),
        )


def rank(vms: list[SCVirtualMachine], prefer_host: str | None = None) -> list[SCVirtualMachine]:
    """``vms`` best first: on ``prefer_host`` (short or full name), then by live status."""

    def on_host(vm: SCVirtualMachine) -> bool:
        if prefer_host is None:
            return True
        short = vm.host.split(".", 1)[0].lower()
        return prefer_host.lower() in (vm.host.lower(), short)

    def status_rank(vm: SCVirtualMachine) -> int:
        try:
            return _STATUS_ORDER.index(vm.status)
        except ValueError:
            return len(_STATUS_ORDER)

    return sorted(vms, key=lambda vm: (not on_host(vm), status_rank(vm), vm.host, vm.id))


class VmmServer:
    """A site's VMM server reached through ``runner``."""

    def __init__(self, runner: PowerShellRunner, host_name: str = "vmm") -> None:
        self.runner = runner
        self.host_name = host_name

    def get_sc_virtual_machines(
        self, name: str, *, prefer_host: str | None = None
    ) -> list[SCVirtualMachine]:
        """Every VM VMM knows by ``name``, ranked with :func:`rank` (best first); may be empty
        while VMM has not refreshed after a failover."""
        # VMM's -Name is one literal name, not a pattern (unlike Hyper-V's), so it goes out as
        # written: a backtick escape would become part of the name. Only VMs of exactly that
        # name are kept all the same, so nothing else is ever acted on.
        result = self.runner.run("Get-SCVirtualMachine", {"Name": name})
        if result.errors:
            raise failed(self.host_name, "Get-SCVirtualMachine", result)
        vms = [SCVirtualMachine.from_output(o) for o in result.output]
        return rank([vm for vm in vms if vm.name.lower() == name.lower()], prefer_host)

    def get_ip_addresses(self, adapter_id: str) -> list[str]:
        """Addresses VMM granted to one adapter (``Get-SCIPAddress -GrantToObjectID``)."""
        result = self.runner.run("Get-SCIPAddress", {"GrantToObjectID": adapter_id})
        if result.errors:
            raise failed(self.host_name, "Get-SCIPAddress", result)
        addresses = []
        for obj in result.output:
            address = first(obj, "Address", "IPAddress", "Value")
            if address:
                addresses.append(str(address))
        return addresses
