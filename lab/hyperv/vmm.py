"""VMM cmdlets served by the vmm-* hosts: Get-SCVirtualMachine and Get-SCIPAddress.

The lab's VMM servers see every Hyper-V host, so ``Get-SCVirtualMachine -Name sql-01``
returns the primary *and* the replica (and a test VM only by its own name); clients pick the
right one by ``VMHost``. An IP is granted (Get-SCIPAddress) once the guest reports it.
"""

from __future__ import annotations

import uuid
from typing import Any

from lab.hyperv.context import Cmdlet, Context, prop
from lab.hyperv.enums import SCVMStatus, VMState, lab_enum
from lab.hyperv.params import Param, Signature, pset
from lab.hyperv.state import VM, Adapter, HyperVWorld, stable_id
from lab.objects import LabObject

_VMM = "Microsoft.SystemCenter.VirtualMachineManager."


def sc_adapter_id(vm: VM, adapter: Adapter) -> uuid.UUID:
    """VMM's own ID for an adapter (differs from Hyper-V's, as in real VMM)."""
    return stable_id("scadapter", vm.host, str(vm.id), str(adapter.id), vm.name)


def _status(vm: VM) -> SCVMStatus:
    return {
        VMState.Running: SCVMStatus.Running,
        VMState.Saved: SCVMStatus.Saved,
    }.get(vm.state, SCVMStatus.PowerOff)


def _host_object(world: HyperVWorld, host: str) -> LabObject:
    return LabObject(
        type_names=[_VMM + "Host"],
        properties={
            "Name": host,
            "ComputerName": host,
            "FullyQualifiedDomainName": host,
            "HostCluster": None,
            "VMHostGroup": world.hosts[host].site,
        },
        to_string=host,
    )


def sc_vm_object(world: HyperVWorld, vm: VM) -> LabObject:
    """``Get-SCVirtualMachine`` output for one VM record."""
    site = world.hosts[vm.host].site
    status = _status(vm)
    adapters = [
        LabObject(
            type_names=[_VMM + "VirtualNetworkAdapter"],
            properties={
                "ID": sc_adapter_id(vm, a),
                "Name": a.name,
                "MACAddress": ":".join(a.mac[i : i + 2] for i in range(0, 12, 2)),
                "VMNetwork": a.switch,
                "VirtualNetwork": a.switch,
                "IPv4Addresses": [ip for ip in world.guest_ips(vm, a) if ":" not in ip],
                "IPv4AddressType": "Static",
            },
            to_string=a.name,
        )
        for a in vm.adapters
    ]
    return LabObject(
        type_names=[_VMM + "VM", _VMM + "VMBase"],
        properties={
            "Name": vm.name,
            "ID": stable_id("scvm", vm.host, str(vm.id), vm.name),
            "VMId": str(vm.id),
            "VMHost": _host_object(world, vm.host),
            "HostName": vm.host,
            "ComputerName": vm.name,
            "Cloud": world.topology.clouds.get(site),
            "Status": lab_enum(status),
            "StatusString": {"PowerOff": "Stopped"}.get(status.name, status.name),
            "VirtualMachineState": lab_enum(vm.state),
            "ReplicationMode": vm.mode.label,
            "ReplicationStatus": vm.replication_state.name,
            "IsTestVM": vm.test_of is not None,
            "VirtualNetworkAdapters": adapters,
        },
        to_string=vm.name,
    )


def get_sc_vm(ctx: Context) -> list[Any]:
    """Get-SCVirtualMachine [-Name] [-ID] [-VMHost] [-All]: VM records across all hosts."""
    world = ctx.world
    name = ctx.bound.get("Name")
    wanted_id = str(ctx.bound.get("ID") or "").lower()
    host_filter = ctx.bound.get("VMHost")
    host_name = None if host_filter is None else str(prop(host_filter, "Name") or host_filter)
    out = []
    for vm in world.all_vms():
        if name is not None and vm.name.lower() != str(name).lower():
            continue
        if host_name is not None and vm.host.lower() != host_name.lower():
            continue
        obj = sc_vm_object(world, vm)
        if wanted_id and str(obj.properties["ID"]).lower() != wanted_id:
            continue
        out.append(obj)
    return out


GET_SC_VM = Cmdlet(
    Signature(
        "Get-SCVirtualMachine",
        (
            Param("Name", "string"),
            Param("ID", "string", ("Id",)),
            Param("VMHost", "object"),
            Param("All", "switch"),
            Param("VMMServer", "object"),
        ),
        (
            pset("All", (), ("All", "VMMServer", "VMHost")),
            pset("ByName", ("Name",), ("VMMServer", "VMHost")),
            pset("ById", ("ID",), ("VMMServer",)),
        ),
        positional=("Name",),
    ),
    get_sc_vm,
    role="vmm",
)


def get_sc_ip(ctx: Context) -> list[Any]:
    """Get-SCIPAddress [-GrantToObjectID <adapter ID>]: addresses granted to adapters."""
    wanted = str(ctx.bound.get("GrantToObjectID") or "").lower()
    out = []
    for vm in ctx.world.all_vms():
        for a in vm.adapters:
            grant = sc_adapter_id(vm, a)
            if wanted and str(grant).lower() != wanted:
                continue
            for ip in ctx.world.guest_ips(vm, a):
                if ":" in ip:
                    continue
                out.append(
                    LabObject(
                        type_names=[_VMM + "AllocatedIPAddress"],
                        properties={
                            "Name": ip,
                            "Address": ip,
                            "ID": stable_id("ip", str(grant), ip),
                            "GrantToObjectID": grant,
                            "GrantToObjectType": "VirtualNetworkAdapter",
                            "State": "Assigned",
                            "Description": vm.name,
                        },
                        to_string=ip,
                    )
                )
    return out


GET_SC_IP = Cmdlet(
    Signature(
        "Get-SCIPAddress",
        (
            Param("GrantToObjectID", "string"),
            Param("IPAddress", "string"),
            Param("VMMServer", "object"),
            Param("All", "switch"),
        ),
        (pset("All", (), ("GrantToObjectID", "VMMServer", "All", "IPAddress")),),
    ),
    get_sc_ip,
    role="vmm",
)

CMDLETS = (GET_SC_VM, GET_SC_IP)
