"""Hyper-V VM cmdlets: Get-VM, Start-VM, Stop-VM, network adapters and recovery points."""

from __future__ import annotations

from typing import Any

from lab.hyperv import errors, wildcard
from lab.hyperv.context import Cmdlet, Context, prop
from lab.hyperv.enums import ReplicationMode, ReplicationState, SnapshotType, VMState, parse_member
from lab.hyperv.params import Param, ParamSet, Signature, pset
from lab.hyperv.shapes import ADAPTER_TYPES, adapter_object, snapshot_object, vm_object
from lab.hyperv.state import VM, Adapter

VM_PARAMS = (
    Param("VMName", "strings"),
    Param("VM", "object"),
)
PASSTHRU = Param("Passthru", "switch")
ASJOB = Param("AsJob", "switch")


def vm_sets(
    name: str, required: tuple[str, ...] = (), optional: tuple[str, ...] = ()
) -> tuple[ParamSet, ParamSet]:
    """The two shapes of most Hyper-V parameter sets: by -VMName, or by -VM objects."""
    return (
        pset(name, ("VMName", *required), optional),
        pset(name.replace("VMName", "VMObject"), ("VM", *required), optional),
    )


# ----------------------------------------------------------------------------- Get-VM
def get_vm(ctx: Context) -> list[Any]:
    """Get-VM [[-Name] <String[]>] [-Id <Guid>] | -VM ..."""
    if ctx.bound.has("Id"):
        vm = ctx.world.find_by_id(ctx.host, str(ctx.bound.get("Id")))
        if vm is None:
            ctx.fail(errors.vm_not_found(ctx.cmdlet, str(ctx.bound.get("Id"))))
            return []
        return [vm_object(ctx.world, vm)]
    return [vm_object(ctx.world, vm) for vm in ctx.vms(name_params=("Name",))]


GET_VM = Cmdlet(
    Signature(
        "Get-VM",
        (Param("Name", "strings", ("VMName",)), Param("Id", "string"), Param("VM", "object")),
        (pset("Name", (), ("Name",)), pset("Id", ("Id",)), pset("VMObject", ("VM",))),
        positional=("Name",),
    ),
    get_vm,
)


# ----------------------------------------------------------------------------- Start/Stop
def start_vm(ctx: Context) -> list[Any]:
    """Start-VM: a Replica may start only once failed over; a prepared primary not at all."""
    out = []
    for vm in ctx.vms(name_params=("Name",)):
        problem = _start_problem(vm)
        if problem:
            ctx.fail(errors.invalid_state(ctx.cmdlet, vm.name, problem, vm.name), vm.name)
            continue
        if vm.state is VMState.Running:
            ctx.warn(f"The virtual machine '{vm.name}' is already in the specified state.")
            ctx.done(vm.name, changed=False)
        else:
            vm.state = VMState.Running
            vm.started_at = ctx.world.clock.now()
            ctx.done(vm.name)
        if ctx.bound.switch("Passthru"):
            out.append(vm_object(ctx.world, vm))
    return out


def _start_problem(vm: VM) -> str | None:
    state = vm.replication_state
    if vm.mode is ReplicationMode.Replica and state not in (
        ReplicationState.FailedOverWaitingCompletion,
        ReplicationState.FailedOver,
    ):
        return (
            "failed to start: a Replica virtual machine cannot be started while replication "
            f"is {state.name}. Fail it over first (Start-VMFailover), or start a test failover "
            "(Start-VMFailover -AsTest)."
        )
    if vm.mode is ReplicationMode.Primary and state is ReplicationState.PreparedForFailover:
        return (
            "failed to start: the virtual machine is prepared for planned failover. Cancel it "
            "with Stop-VMFailover first."
        )
    return None


def stop_vm(ctx: Context) -> list[Any]:
    """Stop-VM [-Force] [-TurnOff] [-Save]: shut the guest down (it loses its IP)."""
    out = []
    for vm in ctx.vms(name_params=("Name",)):
        target = VMState.Saved if ctx.bound.switch("Save") else VMState.Off
        if vm.state is not VMState.Running:
            ctx.warn(f"The virtual machine '{vm.name}' is already in the specified state.")
            ctx.done(vm.name, changed=False)
        else:
            vm.state = target
            vm.started_at = None
            ctx.done(vm.name)
        if ctx.bound.switch("Passthru"):
            out.append(vm_object(ctx.world, vm))
    return out


_NAME_VM = (Param("Name", "strings", ("VMName",)), Param("VM", "object"), PASSTHRU, ASJOB)
START_VM = Cmdlet(
    Signature(
        "Start-VM",
        _NAME_VM,
        (
            pset("Name", ("Name",), ("Passthru", "AsJob")),
            pset("VMObject", ("VM",), ("Passthru", "AsJob")),
        ),
        positional=("Name",),
        pipeline="VM",
    ),
    start_vm,
    mutating=True,
)
_STOP_OPTS = ("Passthru", "AsJob", "Force", "TurnOff", "Save")
STOP_VM = Cmdlet(
    Signature(
        "Stop-VM",
        (*_NAME_VM, Param("Force", "switch"), Param("TurnOff", "switch"), Param("Save", "switch")),
        (pset("Name", ("Name",), _STOP_OPTS), pset("VMObject", ("VM",), _STOP_OPTS)),
        positional=("Name",),
        pipeline="VM",
    ),
    stop_vm,
    mutating=True,
)


# ----------------------------------------------------------------------------- adapters
def _adapters(ctx: Context) -> list[tuple[VM, Adapter]]:
    """Adapters named by -VMNetworkAdapter objects, or by -VMName/-VM and -Name."""
    pairs: list[tuple[VM, Adapter]] = []
    objects = ctx.bound.get("VMNetworkAdapter")
    if objects is None and ctx.input and all(prop(o, "MacAddress") for o in ctx.input):
        objects = list(ctx.input)
    if objects is not None:
        for obj in objects if isinstance(objects, list) else [objects]:
            vm = ctx.vm_from_object(obj)
            wanted = str(prop(obj, "Name") or "")
            adapter = None if vm is None else _adapter_by_object(vm, obj)
            if vm is None or adapter is None:
                ctx.fail(errors.vm_not_found(ctx.cmdlet, str(prop(obj, "VMName") or wanted)))
                continue
            pairs.append((vm, adapter))
        return pairs
    names = ctx.bound.strings("Name")
    for vm in ctx.vms(name_params=("VMName",)):
        for adapter in vm.adapters:
            if not names or any(wildcard.matches(n, adapter.name) for n in names):
                pairs.append((vm, adapter))
    return pairs


def _adapter_by_object(vm: VM, obj: Any) -> Adapter | None:
    wanted_id = str(prop(obj, "AdapterId") or prop(obj, "Id") or "").lower()
    for adapter in vm.adapters:
        if str(adapter.id).lower() in wanted_id and wanted_id:
            return adapter
    name = prop(obj, "Name")
    return next((a for a in vm.adapters if a.name == name), None)


def get_adapter(ctx: Context) -> list[Any]:
    """Get-VMNetworkAdapter -VMName x: IPAddresses stay empty until the guest has booted."""
    if ctx.bound.switch("ManagementOS"):
        return []
    named = ctx.bound.has("VMName") or ctx.bound.has("VM") or bool(ctx.input)
    if not named and not ctx.bound.switch("All"):
        ctx.fail(errors.missing_mandatory(ctx.cmdlet, ["VMName"]))
        return []
    return [adapter_object(ctx.world, vm, a) for vm, a in _adapters(ctx)]


GET_ADAPTER = Cmdlet(
    Signature(
        "Get-VMNetworkAdapter",
        (
            *VM_PARAMS,
            Param("Name", "strings"),
            Param("All", "switch"),
            Param("ManagementOS", "switch"),
        ),
        (
            pset("VMName", (), ("VMName", "Name")),
            pset("VMObject", ("VM",), ("Name",)),
            pset("All", ("All",), ("Name",)),
            pset("ManagementOS", ("ManagementOS",), ("Name",)),
        ),
        positional=("VMName",),
        pipeline="VM",
    ),
    get_adapter,
)


def connect_adapter(ctx: Context) -> list[Any]:
    """Connect-VMNetworkAdapter -SwitchName s: the switch must exist on this host."""
    switch = str(ctx.bound.get("SwitchName"))
    known = {s.lower(): s for s in ctx.world.switches(ctx.host)}
    out = []
    pairs = _adapters(ctx)
    if switch.lower() not in known:
        names: list[str | None] = [vm.name for vm, _ in pairs] or [None]
        for name in names:
            ctx.fail(errors.switch_not_found(ctx.cmdlet, switch), name)
        return []
    for vm, adapter in pairs:
        changed = adapter.switch != known[switch.lower()]
        adapter.switch = known[switch.lower()]
        ctx.done(vm.name, changed=changed)
        if ctx.bound.switch("Passthru"):
            out.append(adapter_object(ctx.world, vm, adapter))
    return out


def disconnect_adapter(ctx: Context) -> list[Any]:
    """Disconnect-VMNetworkAdapter: the guest loses its IP on that adapter."""
    out = []
    for vm, adapter in _adapters(ctx):
        changed = adapter.switch is not None
        adapter.switch = None
        ctx.done(vm.name, changed=changed)
        if ctx.bound.switch("Passthru"):
            out.append(adapter_object(ctx.world, vm, adapter))
    return out


_ADAPTER_SETS = (
    pset("VMName", ("VMName",), ("Name", "Passthru")),
    pset("VMObject", ("VM",), ("Name", "Passthru")),
    pset("Object", ("VMNetworkAdapter",), ("Passthru",)),
)
CONNECT_ADAPTER = Cmdlet(
    Signature(
        "Connect-VMNetworkAdapter",
        (
            *VM_PARAMS,
            Param("Name", "strings"),
            Param("VMNetworkAdapter", "object", accepts=ADAPTER_TYPES[0]),
            Param("SwitchName", "string"),
            PASSTHRU,
        ),
        tuple(pset(s.name, (*s.required, "SwitchName"), tuple(s.optional)) for s in _ADAPTER_SETS),
        positional=("VMName", "Name", "SwitchName"),
        pipeline="VMNetworkAdapter",
    ),
    connect_adapter,
    mutating=True,
)
DISCONNECT_ADAPTER = Cmdlet(
    Signature(
        "Disconnect-VMNetworkAdapter",
        (
            *VM_PARAMS,
            Param("Name", "strings"),
            Param("VMNetworkAdapter", "object", accepts=ADAPTER_TYPES[0]),
            PASSTHRU,
        ),
        _ADAPTER_SETS,
        positional=("VMName", "Name"),
        pipeline="VMNetworkAdapter",
    ),
    disconnect_adapter,
    mutating=True,
)


# ----------------------------------------------------------------------------- filtering
def where_object(ctx: Context) -> list[Any]:
    """Where-Object -Property P [-EQ -Value V]: the piped objects that pass, as they are.

    The objects stay live, so a later cmdlet of the same pipeline gets the host's own object
    (e.g. one VMNetworkAdapter of several that share a name). Only the comparison the
    workers use is modelled: ``-EQ`` compares strings ignoring case, as PowerShell's does;
    with no operator an object passes when the property is truthy.
    """
    name = str(ctx.bound.get("Property"))
    wanted = ctx.bound.get("Value")
    passed = []
    for obj in ctx.input:
        value = prop(obj, name)
        if ctx.bound.switch("EQ"):
            keep = str(value).casefold() == str(wanted).casefold() if value is not None else (
                wanted is None
            )
        else:
            keep = bool(value)
        if keep:
            passed.append(obj)
    return passed


WHERE_OBJECT = Cmdlet(
    Signature(
        "Where-Object",
        (
            Param("Property", "string"),
            Param("Value", "object"),
            Param("EQ", "switch", aliases=("IEQ",)),
            Param("InputObject", "object"),
        ),
        (
            pset("EqualSet", ("Property", "EQ"), ("Value", "InputObject")),
            pset("Truthy", ("Property",), ("InputObject",)),
        ),
        positional=("Property", "Value"),
        pipeline="InputObject",
    ),
    where_object,
)


# ----------------------------------------------------------------------------- snapshots
def get_snapshot(ctx: Context) -> list[Any]:
    """Get-VMSnapshot [-SnapshotType Replica]: a Replica's recovery points, oldest first.

    ``Replica`` lists standard and application-consistent points alike (the latest point
    last); ``AppConsistentReplica`` only the application-consistent ones. The lab keeps no
    ordinary checkpoints, so other types list nothing.
    """
    wanted = None
    if ctx.bound.has("SnapshotType"):
        try:
            wanted = parse_member(SnapshotType, ctx.bound.get("SnapshotType"))
        except ValueError as exc:
            ctx.fail(errors.bad_argument(ctx.cmdlet, "SnapshotType", str(exc)))
            return []
    names = ctx.bound.strings("Name")
    out = []
    for vm in ctx.vms(name_params=("VMName",)):
        for point in ctx.world.recovery_points(vm):
            if wanted is SnapshotType.AppConsistentReplica and point.kind is not wanted:
                continue
            if wanted not in (None, SnapshotType.Replica, SnapshotType.AppConsistentReplica):
                continue
            obj = snapshot_object(ctx.world, vm, point)
            if names and not any(wildcard.matches(n, str(obj.properties["Name"])) for n in names):
                continue
            out.append(obj)
    return out


GET_SNAPSHOT = Cmdlet(
    Signature(
        "Get-VMSnapshot",
        (
            *VM_PARAMS,
            Param("Name", "strings"),
            Param("SnapshotType", "object"),
            Param("Id", "string"),
        ),
        (
            pset("VMName", ("VMName",), ("Name", "SnapshotType")),
            pset("VMObject", ("VM",), ("Name", "SnapshotType")),
        ),
        positional=("VMName", "Name"),
        pipeline="VM",
    ),
    get_snapshot,
)


# ----------------------------------------------------------------------------- host clock
def get_date(ctx: Context) -> list[Any]:
    """Get-Date [-Format o]: the host's clock, which is lab time (a DateTime, or with ``-Format
    o`` the round-trip text .NET writes: seven fractional digits and the UTC offset).

    Only the round-trip format is modelled; the workers read a host's clock with it, so that
    a lag is measured on the host's own clock, never the caller's.
    """
    now = ctx.world.clock.datetime()
    if not ctx.bound.has("Format"):
        return [now]
    wanted = str(ctx.bound.get("Format"))
    if wanted not in ("o", "O"):
        ctx.fail(
            errors.bad_argument(
                ctx.cmdlet, "Format", f"the lab's Get-Date knows only -Format o, not {wanted!r}"
            )
        )
        return []
    return [now.strftime("%Y-%m-%dT%H:%M:%S.%f0+00:00")]  # lab time is UTC


GET_DATE = Cmdlet(
    Signature("Get-Date", (Param("Format", "string"),), (pset("Format", (), ("Format",)),)),
    get_date,
)

CMDLETS = (
    GET_DATE,
    GET_VM,
    START_VM,
    STOP_VM,
    GET_ADAPTER,
    CONNECT_ADAPTER,
    DISCONNECT_ADAPTER,
    WHERE_OBJECT,
    GET_SNAPSHOT,
)
