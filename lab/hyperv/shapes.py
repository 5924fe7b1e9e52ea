"""Cmdlet output objects shaped like the real ones: type names and adapted properties."""

from __future__ import annotations

from datetime import timedelta

from lab.clock import Clock
from lab.hyperv.enums import RelationshipType, ReplicationMode, SnapshotType, VMState, lab_enum
from lab.hyperv.state import VM, Adapter, HyperVWorld, RecoveryPoint
from lab.objects import LabObject

_HV = "Microsoft.HyperV.PowerShell."
VM_TYPES = [_HV + "VirtualMachine", _HV + "VirtualMachineBase", _HV + "VirtualizationObject"]
REPLICATION_TYPES = [_HV + "VMReplication", _HV + "VirtualizationObject"]
ADAPTER_TYPES = [_HV + "VMNetworkAdapter", _HV + "VMNetworkAdapterBase", _HV + "VMDevice"]
SNAPSHOT_TYPES = [_HV + "VMSnapshot", _HV + "VirtualMachineBase", _HV + "VirtualizationObject"]
MEASURE_TYPES = [_HV + "VMReplicationHealth"]


def vm_to_string(vm: VM) -> str:
    """How Hyper-V objects print: ``VirtualMachine (Name = 'x') [Id = '...']``."""
    return f"VirtualMachine (Name = '{vm.name}') [Id = '{vm.id}']"


def vm_object(world: HyperVWorld, vm: VM) -> LabObject:
    """``Get-VM`` output for ``vm`` as seen on its host."""
    now = world.clock.now()
    running = vm.state is VMState.Running and vm.started_at is not None
    uptime = timedelta(seconds=int(now - vm.started_at)) if running and vm.started_at else None
    return LabObject(
        type_names=list(VM_TYPES),
        properties={
            "Name": vm.name,
            "VMName": vm.name,
            "VMId": vm.id,
            "Id": vm.id,
            "ComputerName": vm.host.upper(),
            "State": lab_enum(vm.state),
            "Status": "Operating normally",
            "Uptime": uptime or timedelta(0),
            "CPUUsage": 3 if running else 0,
            "MemoryAssigned": 4294967296 if running else 0,
            "Generation": 2,
            "Version": "10.0",
            "IsClustered": False,
            "ReplicationState": lab_enum(vm.replication_state),
            "ReplicationHealth": lab_enum(world.health(vm)),
            "ReplicationMode": lab_enum(vm.mode),
            "Notes": "",
            "Path": _vm_path(vm),
            "NetworkAdapters": [adapter_object(world, vm, a) for a in vm.adapters],
        },
        to_string=vm_to_string(vm),
    )


def _vm_path(vm: VM) -> str:
    """Where the VM's files are: a replica's in its Replica server's storage location."""
    rep = vm.replication
    if vm.mode is ReplicationMode.Replica and rep is not None and rep.storage_location:
        return f"{rep.storage_location}\\{vm.name}"
    return f"C:\\ProgramData\\Microsoft\\Windows\\Hyper-V\\{vm.name}"


def adapter_object(world: HyperVWorld, vm: VM, adapter: Adapter) -> LabObject:
    """``Get-VMNetworkAdapter`` output for one adapter."""
    return LabObject(
        type_names=list(ADAPTER_TYPES),
        properties={
            "Name": adapter.name,
            "Id": f"Microsoft:{vm.id}\\{adapter.id}",
            "AdapterId": adapter.id,
            "VMName": vm.name,
            "VMId": vm.id,
            "ComputerName": vm.host.upper(),
            "SwitchName": adapter.switch,
            "Connected": adapter.switch is not None,
            "MacAddress": adapter.mac,
            "IsManagementOs": False,
            "Status": ["Ok"],
            "IPAddresses": world.guest_ips(vm, adapter),
        },
        to_string=f"VMNetworkAdapter (Name = '{adapter.name}', VMName = '{vm.name}') "
        f"[VMId = '{vm.id}']",
    )


def replication_object(world: HyperVWorld, vm: VM) -> LabObject:
    """``Get-VMReplication`` output (both ends answer, each from its own view)."""
    rep = vm.replication
    assert rep is not None
    clock: Clock = world.clock
    state = lab_enum(vm.replication_state)
    health = lab_enum(world.health(vm))
    mode = lab_enum(vm.mode)
    last = clock.datetime(rep.last_replication) if rep.last_replication is not None else None
    app = clock.datetime(rep.last_app_consistent) if rep.last_app_consistent else None
    return LabObject(
        type_names=list(REPLICATION_TYPES),
        properties={
            "Name": vm.name,
            "VMName": vm.name,
            "VMId": vm.id,
            "ComputerName": vm.host.upper(),
            "State": state,
            "ReplicationState": state,
            "Health": health,
            "ReplicationHealth": health,
            "Mode": mode,
            "ReplicationMode": mode,
            "ReplicationRelationshipType": lab_enum(RelationshipType.Simple),
            "PrimaryServer": rep.primary_host,
            "PrimaryServerName": rep.primary_host,
            "ReplicaServer": rep.replica_host,
            "ReplicaServerName": rep.replica_host,
            "CurrentReplicaServerName": rep.replica_host,
            "ReplicaPort": rep.port,
            "ReplicaServerPort": rep.port,
            "AuthType": lab_enum(rep.auth),
            "AuthenticationType": lab_enum(rep.auth),
            "FrequencySec": rep.frequency,
            "ReplicationFrequencySec": rep.frequency,
            "RecoveryHistory": rep.recovery_history,
            "VSSSnapshotFrequencyHour": rep.app_consistent_hours,
            "VSSSnapshotReplicationEnabled": rep.app_consistent_hours > 0,
            "CompressionEnabled": rep.compression,
            "LastReplicationTime": last,
            "LastAppConsistentReplicationTime": app,
            "TestVirtualMachineName": vm.test_vm.name if vm.test_vm else None,
        },
        to_string=f"VMReplication (VMName = '{vm.name}') [Id = '{vm.id}']",
    )


def measure_object(world: HyperVWorld, vm: VM) -> LabObject:
    """``Measure-VMReplication`` output: statistics of one end."""
    rep = vm.replication
    assert rep is not None
    last = world.clock.datetime(rep.last_replication) if rep.last_replication else None
    total = rep.count + rep.missed
    return LabObject(
        type_names=list(MEASURE_TYPES),
        properties={
            "Name": vm.name,
            "VMName": vm.name,
            "VMId": vm.id,
            "ComputerName": vm.host.upper(),
            "State": lab_enum(vm.replication_state),
            "ReplicationState": lab_enum(vm.replication_state),
            "Health": lab_enum(world.health(vm)),
            "ReplicationHealth": lab_enum(world.health(vm)),
            "ReplicationMode": lab_enum(vm.mode),
            "LastReplicationTime": last,
            "LReplTime": last,
            "PendingReplicationSize": world.pending_bytes(rep),
            "AverageReplicationLatency": timedelta(seconds=1) if rep.count else None,
            "AverageReplicationSize": 4194304 if rep.count else 0,
            "SuccessfulReplicationCount": rep.count,
            "MissedReplicationCount": rep.missed,
            "ReplicationErrors": rep.missed,
            "ReplicationHealthDetails": [],
            "ReplicationSuccessPercentage": 100 if total == 0 else round(100 * rep.count / total),
        },
        to_string=f"VMReplicationHealth (VMName = '{vm.name}')",
    )


def snapshot_name(vm: VM, point: RecoveryPoint, world: HyperVWorld) -> str:
    """Replica recovery point names as Hyper-V Manager shows them."""
    label = (
        "Application-consistent Replica"
        if point.kind is SnapshotType.AppConsistentReplica
        else "Standard Replica"
    )
    when = world.clock.datetime(point.time).strftime("%m/%d/%Y - %I:%M:%S %p")
    return f"{vm.name} - {label} - ({when})"


def snapshot_object(world: HyperVWorld, vm: VM, point: RecoveryPoint) -> LabObject:
    """``Get-VMSnapshot -SnapshotType Replica`` output for one recovery point."""
    return LabObject(
        type_names=list(SNAPSHOT_TYPES),
        properties={
            "Name": snapshot_name(vm, point, world),
            "Id": point.id,
            "VMName": vm.name,
            "VMId": vm.id,
            "ComputerName": vm.host.upper(),
            "SnapshotType": lab_enum(point.kind),
            "CreationTime": world.clock.datetime(point.time),
            "IsDeleted": False,
            "ParentSnapshotName": None,
            "IsLatest": point.latest,
        },
        to_string=f"VMSnapshot (Name = '{snapshot_name(vm, point, world)}', VMName = "
        f"'{vm.name}') [Id = '{point.id}']",
    )
