"""The Replica server side of protection: Get-VMReplicationServer, the authorization entries
that say where replicas from a primary server are stored, and Remove-VM for a replica left
behind once replication is removed.

A Replica server stores a new replica under the authorization entry for its primary server
(``New-VMReplicationAuthorizationEntry -AllowedPrimaryServer -ReplicaStorageLocation``), else
under its ``DefaultStorageLocation``; the replica VM's ``Path`` shows where it went.
"""

from __future__ import annotations

from typing import Any

from lab.hyperv import errors, wildcard
from lab.hyperv.cmdlets import PASSTHRU, VM_PARAMS
from lab.hyperv.context import Cmdlet, Context
from lab.hyperv.params import Param, pset
from lab.hyperv.params import Signature as Sig
from lab.hyperv.state import Authorization
from lab.objects import LabObject
from lab.topology import AUTH_PORTS

_HV = "Microsoft.HyperV.PowerShell."
SERVER_TYPES = [_HV + "VMReplicationServer", _HV + "VirtualizationObject"]
ENTRY_TYPES = [_HV + "VMReplicationAuthorizationEntry", _HV + "VirtualizationObject"]
# Microsoft.HyperV.PowerShell.RecoveryAuthenticationType: Kerberos 1, Certificate 2, both 3.
_AUTH_VALUE: dict[tuple[str, ...], int] = {("kerberos",): 1, ("certificate",): 2}


def server_object(ctx: Context) -> LabObject:
    """``Get-VMReplicationServer`` output for the host answering."""
    spec = ctx.world.replica_server(ctx.host)
    auth = tuple(sorted(spec.auth))
    return LabObject(
        type_names=list(SERVER_TYPES),
        properties={
            "ComputerName": ctx.host.upper(),
            "ReplicationEnabled": spec.enabled,
            "AllowedAuthenticationType": _AUTH_VALUE.get(auth, 3),
            "KerberosAuthenticationPort": AUTH_PORTS["kerberos"],
            "CertificateAuthenticationPort": AUTH_PORTS["certificate"],
            "ReplicationAllowedFromAnyServer": not ctx.world.authorizations.get(ctx.host),
            "DefaultStorageLocation": spec.storage,
            "MonitoringInterval": "12:00:00",
        },
        to_string=f"VMReplicationServer (ComputerName = '{ctx.host.upper()}')",
    )


def get_server(ctx: Context) -> list[Any]:
    """Get-VMReplicationServer: this host's Replica server configuration."""
    if ctx.host not in ctx.world.vms:
        ctx.fail(
            errors.operation_failed(ctx.cmdlet, f"'{ctx.host}' is not a Hyper-V host.", ctx.host)
        )
        return []
    return [server_object(ctx)]


GET_SERVER = Cmdlet(
    Sig("Get-VMReplicationServer", (), (pset("Default", ()),)),
    get_server,
)


def entry_object(ctx: Context, entry: Authorization) -> LabObject:
    """``Get-VMReplicationAuthorizationEntry`` output."""
    return LabObject(
        type_names=list(ENTRY_TYPES),
        properties={
            "AllowedPrimaryServer": entry.primary_server,
            "ReplicaStorageLocation": entry.storage_location,
            "TrustGroup": entry.trust_group,
            "ComputerName": ctx.host.upper(),
        },
        to_string=f"VMReplicationAuthorizationEntry (AllowedPrimaryServer = "
        f"'{entry.primary_server}')",
    )


def _entries(ctx: Context) -> list[Authorization]:
    return ctx.world.authorizations.setdefault(ctx.host, [])


def _matching(ctx: Context) -> list[Authorization]:
    wanted = ctx.bound.get("AllowedPrimaryServer")
    return [
        e
        for e in _entries(ctx)
        if wanted is None or wildcard.matches(str(wanted), e.primary_server)
    ]


def get_entries(ctx: Context) -> list[Any]:
    """Get-VMReplicationAuthorizationEntry [-AllowedPrimaryServer]."""
    return [entry_object(ctx, e) for e in _matching(ctx)]


def new_entry(ctx: Context) -> list[Any]:
    """New-VMReplicationAuthorizationEntry: a primary server may replicate here, its
    replicas stored at -ReplicaStorageLocation."""
    server = str(ctx.bound.get("AllowedPrimaryServer"))
    if any(e.primary_server.lower() == server.lower() for e in _entries(ctx)):
        ctx.fail(
            errors.operation_failed(
                ctx.cmdlet,
                f"An authorization entry for the primary server '{server}' already exists. "
                "Change it with Set-VMReplicationAuthorizationEntry.",
                server,
            )
        )
        return []
    entry = Authorization(
        server,
        str(ctx.bound.get("ReplicaStorageLocation")),
        str(ctx.bound.get("TrustGroup")),
    )
    _entries(ctx).append(entry)
    ctx.done(server)
    return [entry_object(ctx, entry)] if ctx.bound.switch("Passthru") else []


def set_entry(ctx: Context) -> list[Any]:
    """Set-VMReplicationAuthorizationEntry -AllowedPrimaryServer -ReplicaStorageLocation."""
    found = _matching(ctx)
    if not found:
        ctx.fail(
            errors.operation_failed(
                ctx.cmdlet,
                "No authorization entry matches the primary server "
                f"'{ctx.bound.get('AllowedPrimaryServer')}'.",
            )
        )
        return []
    for entry in found:
        if ctx.bound.has("ReplicaStorageLocation"):
            entry.storage_location = str(ctx.bound.get("ReplicaStorageLocation"))
        if ctx.bound.has("TrustGroup"):
            entry.trust_group = str(ctx.bound.get("TrustGroup"))
        ctx.done(entry.primary_server)
    return [entry_object(ctx, e) for e in found] if ctx.bound.switch("Passthru") else []


_PRIMARY = Param("AllowedPrimaryServer", "string", ("PrimaryServer",))
_STORAGE = Param("ReplicaStorageLocation", "string", ("StorageLoc",))
_TRUST = Param("TrustGroup", "string")
GET_ENTRY = Cmdlet(
    Sig(
        "Get-VMReplicationAuthorizationEntry",
        (_PRIMARY, _TRUST),
        (pset("Default", (), ("AllowedPrimaryServer", "TrustGroup")),),
        ("AllowedPrimaryServer",),
    ),
    get_entries,
)
NEW_ENTRY = Cmdlet(
    Sig(
        "New-VMReplicationAuthorizationEntry",
        (_PRIMARY, _STORAGE, _TRUST, PASSTHRU),
        (
            pset(
                "Default",
                ("AllowedPrimaryServer", "ReplicaStorageLocation", "TrustGroup"),
                ("Passthru",),
            ),
        ),
        ("AllowedPrimaryServer", "ReplicaStorageLocation", "TrustGroup"),
    ),
    new_entry,
    mutating=True,
)
SET_ENTRY = Cmdlet(
    Sig(
        "Set-VMReplicationAuthorizationEntry",
        (_PRIMARY, _STORAGE, _TRUST, PASSTHRU),
        (
            pset(
                "Default",
                ("AllowedPrimaryServer",),
                ("ReplicaStorageLocation", "TrustGroup", "Passthru"),
            ),
        ),
        ("AllowedPrimaryServer",),
    ),
    set_entry,
    mutating=True,
)


def remove_vm(ctx: Context) -> list[Any]:
    """Remove-VM -Force: deletes a VM (a replica only once its replication is removed)."""
    for vm in ctx.vms(name_params=("Name",)):
        if vm.replication is not None and vm.test_of is None:
            ctx.fail(
                errors.invalid_state(
                    ctx.cmdlet,
                    vm.name,
                    f"Cannot delete virtual machine '{vm.name}': replication is enabled for "
                    "it. Remove replication first (Remove-VMReplication).",
                    vm.name,
                ),
                vm.name,
            )
            continue
        ctx.world.remove(vm)
        ctx.done(vm.name)
    return []


_REMOVE_OPTS = ("Force", "Passthru")
REMOVE_VM = Cmdlet(
    Sig(
        "Remove-VM",
        (Param("Name", "strings", ("VMName",)), VM_PARAMS[1], Param("Force", "switch"), PASSTHRU),
        (pset("Name", ("Name",), _REMOVE_OPTS), pset("VMObject", ("VM",), _REMOVE_OPTS)),
        ("Name",),
        "VM",
    ),
    remove_vm,
    mutating=True,
)

CMDLETS = (GET_SERVER, GET_ENTRY, NEW_ENTRY, SET_ENTRY, REMOVE_VM)
