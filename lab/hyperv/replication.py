"""Hyper-V Replica cmdlets and their state machine, both ends kept consistent.

The state table is in workflows/ARCHITECTURE.md.

- primary, Disabled: Enable-VMReplication -> ReadyForInitialReplication (replica VM created,
  WaitingForInitialReplication);
- primary, ReadyForInitialReplication: Start-VMInitialReplication -> InProgress -> Replicating
  on both ends (``-DestinationPath``: until Import-VMInitialReplication on the replica);
- primary, Replicating, VM off: Start-VMFailover -Prepare -> PreparedForFailover;
- replica, Replicating/Resynchronizing/Suspended, VM off, >= 1 replication: Start-VMFailover
  -> FailedOverWaitingCompletion (Stop-VMFailover cancels);
- replica, FailedOverWaitingCompletion, primary prepared: Set-VMReplication -Reverse -> roles
  swap, both Replicating;
- replica, FailedOverWaitingCompletion: Complete-VMFailover -> FailedOver, health Warning;
- old primary, VM off: Set-VMReplication -AsReplica -> Replica, WaitingForInitialReplication;
  then the new primary: Set-VMReplication -Reverse -ReplicaServerName -> ReadyForInitial...;
- replica, Replicating, no test VM: Start-VMFailover -AsTest -> "<VM> - Test".

Every refusal is ``InvalidState,Microsoft.HyperV.PowerShell.Commands.<Cmdlet>``.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from lab.hyperv import errors
from lab.hyperv.cmdlets import ASJOB, PASSTHRU, VM_PARAMS, vm_sets
from lab.hyperv.context import Cmdlet, Context
from lab.hyperv.enums import (
    AuthenticationType,
    ReplicationHealth,
    ReplicationMode,
    ReplicationState,
    parse_member,
)
from lab.hyperv.params import Param, pset
from lab.hyperv.params import Signature as Sig
from lab.hyperv.shapes import measure_object, replication_object
from lab.hyperv.state import VM, Adapter, Replication, stable_id
from lab.objects import ErrorInfo
from lab.topology import FREQUENCIES

RS = ReplicationState
_AUTH_PORT = {AuthenticationType.Kerberos: 8083, AuthenticationType.Certificate: 8084}
SETTINGS = (
    Param("ReplicaServerName", "string", ("ReplicaServer",)),
    Param("ReplicaServerPort", "int", ("ReplicaPort",)),
    Param("AuthenticationType", "object", ("AuthType",)),
    Param("CertificateThumbprint", "string", ("Thumbprint",)),
    Param("ReplicationFrequencySec", "int"),
    Param("RecoveryHistory", "int"),
    Param("VSSSnapshotFrequencyHour", "int"),
    Param("CompressionEnabled", "bool"),
    Param("ReplicateHostKvpItems", "bool"),
    Param("AutoResynchronizeEnabled", "bool"),
    Param("BypassProxyServer", "bool"),
    Param("EnableWriteOrderPreservationAcrossDisks", "bool"),
)
SETTING_NAMES = tuple(p.name for p in SETTINGS)


def with_replication(ctx: Context) -> list[tuple[VM, Replication]]:
    """The VMs the call names that replicate; the others get Hyper-V's "not enabled" error."""
    pairs = []
    for vm in ctx.vms():
        if vm.replication is None or vm.test_of is not None:
            ctx.fail(errors.replication_not_enabled(ctx.cmdlet, vm.name), vm.name)
        else:
            pairs.append((vm, vm.replication))
    return pairs


def state_error(ctx: Context, vm: VM, message: str) -> None:
    """Report Hyper-V's InvalidState error for ``vm`` (message says what to do instead)."""
    ctx.fail(errors.invalid_state(ctx.cmdlet, vm.name, message, vm.name), vm.name)


def partner_of(ctx: Context, vm: VM) -> VM | None:
    """The VM record at the other end of ``vm``'s relationship, if linked."""
    host = vm.partner_host
    return None if host is None else ctx.world.find_by_id(host, str(vm.id))


# ----------------------------------------------------------------------------- reads
_FILTERS = (
    Param("ReplicaServerName", "string"),
    Param("PrimaryServerName", "string"),
    Param("ReplicationState", "object"),
    Param("ReplicationHealth", "object"),
    Param("ReplicationMode", "object"),
    Param("ReplicationRelationshipType", "object"),
    Param("TrustGroup", "string"),
)
_FILTER_NAMES = tuple(p.name for p in _FILTERS)


def _replicating_vms(ctx: Context) -> list[VM]:
    """The VMs named (or all), keeping those that replicate; named ones must."""
    named = bool(ctx.bound.strings("VMName") or ctx.bound.has("VM") or ctx.input)
    out = []
    for vm in ctx.vms():
        if vm.replication is None or vm.test_of is not None:
            if named:
                ctx.fail(errors.replication_not_enabled(ctx.cmdlet, vm.name), vm.name)
            continue
        if _filtered_out(ctx, vm):
            continue
        out.append(vm)
    return out


def _filtered_out(ctx: Context, vm: VM) -> bool:
    b, rep = ctx.bound, vm.replication
    assert rep is not None
    checks = (
        ("ReplicaServerName", lambda v: rep.replica_host.lower() == str(v).lower()),
        ("PrimaryServerName", lambda v: rep.primary_host.lower() == str(v).lower()),
        ("ReplicationState", lambda v: parse_member(RS, v) is vm.replication_state),
        ("ReplicationHealth", lambda v: parse_member(ReplicationHealth, v) is ctx.world.health(vm)),
        ("ReplicationMode", lambda v: parse_member(ReplicationMode, v) is vm.mode),
    )
    for name, ok in checks:
        if b.has(name):
            try:
                if not ok(b.get(name)):
                    return True
            except ValueError:
                return True
    return False


def get_replication(ctx: Context) -> list[Any]:
    """Get-VMReplication: each end answers from its own point of view."""
    return [replication_object(ctx.world, vm) for vm in _replicating_vms(ctx)]


def measure_replication(ctx: Context) -> list[Any]:
    """Measure-VMReplication: replication statistics of each end."""
    return [measure_object(ctx.world, vm) for vm in _replicating_vms(ctx)]


_READ_SETS = (
    pset("VMName", (), ("VMName", *_FILTER_NAMES)),
    pset("VMObject", ("VM",), ("ReplicationRelationshipType",)),
)
GET_REPLICATION = Cmdlet(
    Sig("Get-VMReplication", (*VM_PARAMS, *_FILTERS), _READ_SETS, ("VMName",), "VM"),
    get_replication,
)
MEASURE_REPLICATION = Cmdlet(
    Sig("Measure-VMReplication", (*VM_PARAMS, *_FILTERS), _READ_SETS, ("VMName",), "VM"),
    measure_replication,
)


# ----------------------------------------------------------------------------- settings
def apply_settings(ctx: Context, vm: VM, rep: Replication) -> bool:
    """Validate and apply replication settings; False (after an error) when invalid."""
    b = ctx.bound
    freq = b.get("ReplicationFrequencySec", rep.frequency)
    history = b.get("RecoveryHistory", rep.recovery_history)
    vss = b.get("VSSSnapshotFrequencyHour", rep.app_consistent_hours)
    auth = rep.auth
    if b.has("AuthenticationType"):
        try:
            auth = parse_member(AuthenticationType, b.get("AuthenticationType"))
        except ValueError as exc:
            ctx.fail(errors.bad_argument(ctx.cmdlet, "AuthenticationType", str(exc)), vm.name)
            return False
    port = b.get("ReplicaServerPort", rep.port if auth is rep.auth else _AUTH_PORT[auth])
    problems = []
    if freq not in FREQUENCIES:
        problems.append(("ReplicationFrequencySec", f"The argument {freq} must be 30, 300 or 900."))
    if not 0 <= history <= 24:
        problems.append(("RecoveryHistory", f"The argument {history} must be between 0 and 24."))
    if vss and not (1 <= vss <= 12 and vss < max(history, 1)):
        problems.append(
            (
                "VSSSnapshotFrequencyHour",
                f"The argument {vss} must be between 1 and 12 and less than RecoveryHistory.",
            )
        )
    if auth is AuthenticationType.Certificate and not (
        b.get("CertificateThumbprint") or rep.auth is AuthenticationType.Certificate
    ):
        problems.append(("CertificateThumbprint", "Certificate authentication needs a thumbprint."))
    if problems:
        name, message = problems[0]
        ctx.fail(errors.bad_argument(ctx.cmdlet, name, message), vm.name)
        return False
    server = ctx.world.replica_server(rep.replica_host)
    if auth.name.lower() not in server.auth:
        ctx.fail(
            errors.operation_failed(
                ctx.cmdlet,
                f"Hyper-V failed to enable replication for virtual machine '{vm.name}': the "
                f"Replica server '{rep.replica_host}' does not accept {auth.name} "
                f"authentication (it accepts {', '.join(server.auth)}).",
                vm.name,
            ),
            vm.name,
        )
        return False
    listening = listener_ports(ctx, rep.replica_host, auth)
    if port not in listening:
        ctx.fail(
            errors.operation_failed(
                ctx.cmdlet,
                f"Hyper-V failed to enable replication for virtual machine '{vm.name}': the "
                f"Replica server is not listening on port {port} for {auth.name} "
                f"authentication (it listens on {sorted(listening)}).",
                vm.name,
            ),
            vm.name,
        )
        return False
    rep.frequency, rep.recovery_history, rep.app_consistent_hours = freq, history, vss
    rep.auth, rep.port = auth, port
    if b.has("CompressionEnabled"):
        rep.compression = bool(b.get("CompressionEnabled"))
    del rep.hourly[: max(0, len(rep.hourly) - rep.recovery_history)]
    return True


def listener_ports(ctx: Context, host: str, auth: AuthenticationType) -> set[int]:
    """Ports ``host``'s Replica server listens on for ``auth``: the default, plus any port
    override the topology gives a VM replicating to or from that host."""
    return {_AUTH_PORT[auth], *ctx.world.port_overrides.get((host, auth.name.lower()), ())}


def enable_replication(ctx: Context) -> list[Any]:
    """Enable-VMReplication: creates the replica VM on the Replica server, waiting for IR."""
    world = ctx.world
    target = str(ctx.bound.get("ReplicaServerName"))
    out = []
    for vm in ctx.vms():
        if vm.replication is not None or vm.test_of is not None:
            state_error(ctx, vm, "failed to enable replication: replication is already enabled.")
            continue
        target_host = host_named(ctx, target)
        if target_host is None or target_host == vm.host or not world.is_hyperv(target_host):
            ctx.fail(
                errors.operation_failed(
                    ctx.cmdlet,
                    f"Hyper-V failed to enable replication for virtual machine '{vm.name}': "
                    f"the Replica server '{target}' could not be reached. Check the name.",
                    vm.name,
                ),
                vm.name,
            )
            continue
        if target_host in world.down:
            ctx.fail(unreachable(ctx, vm, target_host), vm.name)
            continue
        if not world.replica_server(target_host).enabled:
            ctx.fail(
                errors.operation_failed(
                    ctx.cmdlet,
                    f"Hyper-V failed to enable replication for virtual machine '{vm.name}': "
                    f"the server '{target_host}' is not enabled as a Replica server. Enable "
                    "it with Set-VMReplicationServer -ReplicationEnabled $true first.",
                    vm.name,
                ),
                vm.name,
            )
            continue
        if world.find(target_host, vm.name) is not None:
            state_error(
                ctx,
                vm,
                f"failed to enable replication: a virtual machine with that name already "
                f"exists on the Replica server '{target_host}'. Remove it first.",
            )
            continue
        rep = Replication(
            vm.name,
            vm.host,
            target_host,
            RS.ReadyForInitialReplication,
            RS.WaitingForInitialReplication,
            anchor=world.clock.now(),
            storage_location=world.replica_storage(target_host, vm.host),
        )
        if not apply_settings(ctx, vm, rep):
            continue
        replica = copy_vm(vm, target_host)
        world.add(replica)
        vm.replication = rep
        replica.replication = rep
        ctx.done(vm.name)
        if ctx.bound.switch("Passthru"):
            out.append(replication_object(world, vm))
    return out


def copy_vm(vm: VM, host: str, name: str | None = None) -> VM:
    """A disconnected, powered-off copy of ``vm`` on ``host`` (replica or test VM)."""
    name = name or vm.name
    adapters = [
        Adapter(stable_id("adapter", name, host, str(i)), a.mac, None, a.name)
        for i, a in enumerate(vm.adapters)
    ]
    vm_id = vm.id if name == vm.name else stable_id("test", str(vm.id), host, str(uuid.uuid4()))
    return VM(name, vm_id, host, vm.spec, adapters)


def host_named(ctx: Context, name: str) -> str | None:
    """The lab host a client names (short name or FQDN, any case), if any."""
    short = name.split(".")[0].lower()
    return next((h for h in ctx.world.hosts if h.lower() == short), None)


def unreachable(ctx: Context, vm: VM, host: str) -> ErrorInfo:
    """The error for an operation that needs ``host``, which is down."""
    return errors.operation_failed(
        ctx.cmdlet,
        f"The operation on '{vm.name}' failed: the server '{host}' could not be reached "
        "(the connection was refused). Retry once it is back.",
        vm.name,
    )


_ENABLE_SETS = vm_sets(
    "VMName",
    ("ReplicaServerName", "ReplicaServerPort", "AuthenticationType"),
    (
        *[
            n
            for n in SETTING_NAMES
            if n not in ("ReplicaServerName", "ReplicaServerPort", "AuthenticationType")
        ],
        "Passthru",
        "AsJob",
    ),
)
ENABLE_REPLICATION = Cmdlet(
    Sig(
        "Enable-VMReplication",
        (*VM_PARAMS, *SETTINGS, PASSTHRU, ASJOB),
        _ENABLE_SETS,
        ("VMName", "ReplicaServerName", "ReplicaServerPort", "AuthenticationType"),
        "VM",
    ),
    enable_replication,
    mutating=True,
)


# ----------------------------------------------------------------------------- initial
def start_initial(ctx: Context) -> list[Any]:
    """Start-VMInitialReplication: over the network now, at a time, or offline (export)."""
    world = ctx.world
    now = world.clock.now()
    out = []
    for vm in ctx.vms():
        rep = vm.replication
        if rep is None:
            ctx.fail(errors.replication_not_enabled(ctx.cmdlet, vm.name), vm.name)
            continue
        if (
            vm.mode is not ReplicationMode.Primary
            or rep.primary_state is not RS.ReadyForInitialReplication
        ):
            state_error(
                ctx,
                vm,
                "failed to start initial replication: it runs on the primary once replication "
                f"is enabled (ReadyForInitialReplication); here it is {vm.mode.label} in "
                f"{vm.replication_state.name}.",
            )
            continue
        if rep.replica_host in world.down:
            ctx.fail(unreachable(ctx, vm, rep.replica_host), vm.name)
            continue
        start = ctx.bound.get("InitialReplicationStartTime")
        if start is not None:
            at = start.timestamp()
            if not now < at <= now + timedelta(days=7).total_seconds():
                ctx.fail(
                    errors.bad_argument(
                        ctx.cmdlet,
                        "InitialReplicationStartTime",
                        "The start time must be in the future and at most 7 days ahead.",
                        str(start),
                    ),
                    vm.name,
                )
                continue
            rep.initial_start_at = at
        elif ctx.bound.has("DestinationPath"):
            rep.primary_state = RS.InitialReplicationInProgress
            rep.offline_export = True
            rep.export_path = str(ctx.bound.get("DestinationPath"))
        else:
            rep.primary_state = RS.InitialReplicationInProgress
            rep.initial_started_at = now
            rep.initial_done_at = now + world.initial_seconds(rep)
        ctx.done(vm.name)
        if ctx.bound.switch("Passthru"):
            out.append(replication_object(world, vm))
    world.advance()
    return out


START_INITIAL = Cmdlet(
    Sig(
        "Start-VMInitialReplication",
        (
            *VM_PARAMS,
            Param("DestinationPath", "string"),
            Param("InitialReplicationStartTime", "datetime"),
            Param("UseBackup", "switch"),
            PASSTHRU,
            ASJOB,
        ),
        (
            *vm_sets("VMName", (), ("InitialReplicationStartTime", "Passthru", "AsJob")),
            *vm_sets("VMName_Export", ("DestinationPath",), ("Passthru", "AsJob")),
        ),
        ("VMName",),
        "VM",
    ),
    start_initial,
    mutating=True,
)


def import_initial(ctx: Context) -> list[Any]:
    """Import-VMInitialReplication -Path on the Replica: completes an offline initial copy."""
    for vm in ctx.vms():
        rep = vm.replication
        if rep is None or vm.mode is not ReplicationMode.Replica or not rep.offline_export:
            state_error(
                ctx,
                vm,
                "failed to import initial replication: no offline export is "
                "waiting for it (Start-VMInitialReplication -DestinationPath first).",
            )
            continue
        ctx.world.finish_initial(rep, ctx.world.clock.now())
        ctx.done(vm.name)
    return []


IMPORT_INITIAL = Cmdlet(
    Sig(
        "Import-VMInitialReplication",
        (*VM_PARAMS, Param("Path", "string"), PASSTHRU, ASJOB),
        vm_sets("VMName", ("Path",), ("Passthru", "AsJob")),
        ("VMName", "Path"),
        "VM",
    ),
    import_initial,
    mutating=True,
)

CMDLETS = (
    GET_REPLICATION,
    MEASURE_REPLICATION,
    ENABLE_REPLICATION,
    START_INITIAL,
    IMPORT_INITIAL,
)
