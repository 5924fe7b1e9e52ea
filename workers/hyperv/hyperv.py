"""HyperVHost: typed Hyper-V cmdlets on one host, over any PowerShellRunner.

Each method is one cmdlet with named parameters. Cmdlets that Hyper-V marks high-impact
(failover, reverse, commit) get ``-Confirm:$false`` because a remote session has no one to
answer a prompt. Any error record, terminating or not, fails the call with
:class:`~workers.errors.CmdletFailed` naming the host, cmdlet and FullyQualifiedErrorId: a
half-done failover must never look like success.

Hyper-V's ``-Name``/``-VMName`` parameters (and a network adapter's ``-Name``) take
PowerShell wildcard patterns, so a VM named ``app[1]`` would match ``app1`` and one named
``web`01`` nothing at all. Every VM and adapter name therefore goes out escaped with
:func:`escape_wildcards`, and reads keep only objects whose name is the literal one.
``-SwitchName`` names one switch literally and goes out as written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from workers.errors import CmdletFailed
from workers.hyperv.models import Adapter, RecoveryPoint, ReplicationInfo, VMInfo, first
from workers.powershell import PowerShellRunner, PSResult

TEST_SUFFIX = " - Test"

# The wait for a guest's address on the host itself: one call that returns once an adapter of
# the VM reports an address not in -Known, or once -TimeoutMs have passed, and outputs the VM's
# adapters as Get-VMNetworkAdapter does. Between its local reads it sleeps a twentieth of the
# time waited (-WaitedMs before this call, plus its own), at least -PollMs and at most
# -MaxPollMs, never past its deadline: a local read crosses no network, so the host looks
# twice as often as a polling client would (an address is noticed within 5% of the wait).
# A read's error (a VM the host does not have) ends it at once. Fixed text, values only as
# parameters; one line with no control characters (they would travel escaped). The lab runs
# the same text (``lab/hyperv/hostscripts.py``).
WAIT_FOR_ADDRESS_SCRIPT = (
    "param([string]$VMName, [string[]]$Known = @(), [int]$TimeoutMs = 0, [int]$PollMs = 50, "
    "[int]$MaxPollMs = 3000, [int]$WaitedMs = 0) "
    "$clock = [Diagnostics.Stopwatch]::StartNew(); "
    "while ($true) { "
    "$adapters = @(Get-VMNetworkAdapter -VMName $VMName -ErrorAction Stop); "
    "$new = @($adapters | ForEach-Object { $_.IPAddresses } | "
    "Where-Object { $_ -and $Known -notcontains $_ }); "
    "$left = $TimeoutMs - $clock.ElapsedMilliseconds; "
    "if ($new.Count -gt 0 -or $left -le 0) { $adapters; break }; "
    "$pause = [Math]::Min([double]$MaxPollMs, "
    "[Math]::Max([double]$PollMs, ($WaitedMs + $clock.ElapsedMilliseconds) / 20.0)); "
    "Start-Sleep -Milliseconds ([int][Math]::Min($pause, [double]$left)) "
    "}"
)
WAIT_FOR_ADDRESS_LABEL = "Get-VMNetworkAdapter (wait for an address)"
# How long a call may take beyond the wait it asks the host for (latency, a busy host).
WAIT_CALL_ALLOWANCE = 60.0
# Snapshot types that are replica recovery points (the rest are ordinary checkpoints).
RECOVERY_SNAPSHOT_TYPES = ("Replica", "AppConsistentReplica", "SyncedReplica")


def name_of_test_vm(vm: str) -> str:
    """The name Hyper-V gives the VM that ``Start-VMFailover -AsTest`` creates."""
    return f"{vm}{TEST_SUFFIX}"


class ReplicationAuth(Enum):
    """``Enable-VMReplication -AuthenticationType``: Kerberos (HTTP) or certificate (HTTPS)."""

    KERBEROS = "Kerberos"
    CERTIFICATE = "Certificate"


@dataclass(frozen=True)
class ReplicationSettings:
    """What ``Enable-VMReplication`` needs (the protection profile, resolved for one VM)."""

    replica_server: str
    replica_port: int = 8083
    authentication: ReplicationAuth = ReplicationAuth.KERBEROS
    frequency_sec: int = 300
    recovery_history: int = 0
    vss_frequency_hours: int | None = None
    compression: bool = True
    certificate_thumbprint: str | None = None

    def parameters(self, vm: str) -> dict[str, Any]:
        """The cmdlet's named parameters for ``vm``."""
        params: dict[str, Any] = {
            "VMName": escape_wildcards(vm),
            "ReplicaServerName": self.replica_server,
            "ReplicaServerPort": self.replica_port,
            "AuthenticationType": self.authentication.value,
            "ReplicationFrequencySec": self.frequency_sec,
            "RecoveryHistory": self.recovery_history,
            "CompressionEnabled": self.compression,
        }
        if self.vss_frequency_hours is not None:
            params["VSSSnapshotFrequencyHour"] = self.vss_frequency_hours
        if self.certificate_thumbprint:
            params["CertificateThumbprint"] = self.certificate_thumbprint
        return params


class HyperVHost:
    """One Hyper-V host (``host_name`` as the fabric names it) reached through ``runner``."""

    def __init__(self, runner: PowerShellRunner, host_name: str) -> None:
        self.runner = runner
        self.host_name = host_name

    # --- reads --------------------------------------------------------------------------------

    def get_vm(self, name: str) -> VMInfo:
        """``Get-VM -Name``; a VM that is not on this host raises CmdletFailed."""
        result = self._call("Get-VM", {"Name": escape_wildcards(name)})
        return VMInfo.from_output(self._one(result, "Get-VM", name, ("Name", "VMName")))

    def get_replication(self, vm: str) -> ReplicationInfo:
        """``Get-VMReplication -VMName``: state, health, mode, servers, frequency, last time."""
        result = self._call("Get-VMReplication", {"VMName": escape_wildcards(vm)})
        one = self._one(result, "Get-VMReplication", vm, ("VMName", "Name"))
        return ReplicationInfo.from_output(one)

    def get_recovery_points(self, vm: str) -> list[RecoveryPoint]:
        """Replica recovery points of ``vm`` (``Get-VMSnapshot``), oldest first."""
        result = self._call("Get-VMSnapshot", {"VMName": escape_wildcards(vm)})
        points = [RecoveryPoint.from_output(o) for o in of_vm(result.output, vm)]
        points = [p for p in points if p.snapshot_type in RECOVERY_SNAPSHOT_TYPES]
        return sorted(points, key=lambda p: (p.created is None, p.created or datetime.min))

    def get_network_adapters(self, vm: str) -> list[Adapter]:
        """``Get-VMNetworkAdapter -VMName``: adapters with switch and guest IP addresses."""
        result = self._call("Get-VMNetworkAdapter", {"VMName": escape_wildcards(vm)})
        return [Adapter.from_output(o) for o in of_vm(result.output, vm)]

    def wait_for_adapter_addresses(
        self,
        vm: str,
        *,
        known: Sequence[str] = (),
        timeout: float,
        poll: float = 0.05,
        max_poll: float = 3.0,
        waited: float = 0.0,
    ) -> list[Adapter]:
        """The adapters of ``vm`` once one reports an address not in ``known``, or after
        ``timeout`` seconds (then as they are): one call that waits on the host
        (:data:`WAIT_FOR_ADDRESS_SCRIPT`), reading locally every ``poll`` seconds, later a
        twentieth of the time waited (``waited`` seconds before this call included), at most
        ``max_poll``. A VM the host does not have raises CmdletFailed, as
        :meth:`get_network_adapters` does."""
        params: dict[str, Any] = {
            "VMName": escape_wildcards(vm),
            "TimeoutMs": _milliseconds(timeout),
            "PollMs": max(1, _milliseconds(poll)),
            "MaxPollMs": max(1, _milliseconds(max_poll)),
            "WaitedMs": _milliseconds(waited),
        }
        if known:
            params["Known"] = list(known)
        try:
            result = self.runner.run_script(
                WAIT_FOR_ADDRESS_SCRIPT, params, timeout=timeout + WAIT_CALL_ALLOWANCE
            )
        except CmdletFailed as exc:
            # the runner names any script "script"; name what this one does instead
            message = str(exc)
            generic = f"script failed on {self.host_name}: "
            if message.startswith(generic):
                message = (
                    f"{WAIT_FOR_ADDRESS_LABEL} failed on {self.host_name}: "
                    + message[len(generic) :]
                )
            raise CmdletFailed(
                message,
                host=self.host_name,
                cmdlet=WAIT_FOR_ADDRESS_LABEL,
                fully_qualified_error_id=exc.fully_qualified_error_id,
                category=exc.category,
                target=exc.target,
            ) from exc
        if result.errors:
            raise failed(self.host_name, WAIT_FOR_ADDRESS_LABEL, result)
        return [Adapter.from_output(o) for o in of_vm(result.output, vm)]

    # --- power --------------------------------------------------------------------------------

    def start_vm(self, vm: str) -> VMInfo | None:
        """``Start-VM -Name -Passthru``: the VM as Start-VM left it (it returns once the VM
        has started), or None when the host sent no object back."""
        result = self._call("Start-VM", {"Name": escape_wildcards(vm)}, ("Passthru",))
        found = named(result.output, vm, ("Name", "VMName"))
        return VMInfo.from_output(found[0]) if len(found) == 1 else None

    def stop_vm(
        self, vm: str, *, force: bool = False, turn_off: bool = False, passthru: bool = False
    ) -> VMInfo | None:
        """``Stop-VM -Name`` (guest shutdown); ``force`` skips the guest's objections,
        ``turn_off`` pulls the plug. With ``passthru``, the VM as Stop-VM left it (None when
        the host sent no object back), so a caller need not read it again."""
        switches = [s for s, on in (("Force", force), ("TurnOff", turn_off)) if on]
        if passthru:
            switches.append("Passthru")
        result = self._call("Stop-VM", {"Name": escape_wildcards(vm)}, switches)
        found = named(result.output, vm, ("Name", "VMName")) if passthru else []
        return VMInfo.from_output(found[0]) if len(found) == 1 else None

    # --- failover -----------------------------------------------------------------------------

    def start_failover(
        self,
        vm: str,
        *,
        prepare: bool = False,
        as_test: bool = False,
        recovery_snapshot: RecoveryPoint | str | None = None,
    ) -> None:
        """``Start-VMFailover``: ``prepare`` on the primary (planned), plain or ``as_test`` on
        the replica, by default to the latest recovery point.

        ``recovery_snapshot`` chooses an older point: a :class:`RecoveryPoint` or its name or
        ID (looked up with :meth:`get_recovery_points`; an unknown one raises CmdletFailed).
        Hyper-V's ``-VMRecoverySnapshot`` takes a live ``VMSnapshot`` object, which a client
        cannot send back (it only holds a deserialised copy), so the point is read and failed
        over to in one pipeline on the host::

            Get-VMSnapshot -VMName X -Name P -SnapshotType T | Start-VMFailover -Confirm:$false
        """
        if prepare and (as_test or recovery_snapshot is not None):
            raise ValueError("-Prepare runs on the primary and takes no test or recovery point")
        switches = [s for s, on in (("Prepare", prepare), ("AsTest", as_test)) if on]
        if recovery_snapshot is None:
            params = {"VMName": escape_wildcards(vm), "Confirm": False}
            self._call("Start-VMFailover", params, switches)
            return
        self._failover_to_point(vm, self._recovery_point(vm, recovery_snapshot), switches)

    def _failover_to_point(self, vm: str, point: RecoveryPoint, switches: Sequence[str]) -> None:
        snapshot_type = (
            point.snapshot_type if point.snapshot_type in RECOVERY_SNAPSHOT_TYPES else "Replica"
        )
        label = "Get-VMSnapshot | Start-VMFailover"
        result = self.runner.run_pipeline(
            [
                (
                    "Get-VMSnapshot",
                    {
                        # Both take wildcards: the VM and the point must match only themselves.
                        "VMName": escape_wildcards(point.vm_name or vm),
                        "Name": escape_wildcards(point.name),
                        "SnapshotType": snapshot_type,
                    },
                    (),
                ),
                # -Passthru: the failed-over VM comes back, so "nothing was piped in" (the
                # point vanished between the read and the failover) cannot pass for success.
                ("Start-VMFailover", {"Confirm": False}, (*switches, "Passthru")),
            ]
        )
        if result.errors:
            raise failed(self.host_name, label, result)
        if not result.output:
            raise CmdletFailed(
                f"{label} on {self.host_name} failed nothing over: recovery point "
                f"{point.name!r} of {vm} is gone (merged or pruned since it was listed); "
                "list the points again and choose one, or fail over to the latest",
                host=self.host_name,
                cmdlet=label,
                fully_qualified_error_id="RecoveryPointNotFound",
                category="ObjectNotFound",
                target=vm,
            )

    def _recovery_point(self, vm: str, wanted: RecoveryPoint | str) -> RecoveryPoint:
        if isinstance(wanted, RecoveryPoint):
            return wanted
        points = self.get_recovery_points(vm)
        for point in points:
            if wanted in (point.name, point.id):
                return point
        raise CmdletFailed(
            f"{vm} on {self.host_name} has no recovery point {wanted!r} (has: "
            f"{', '.join(p.name for p in points) or 'none'}); choose one of those or the latest",
            host=self.host_name,
            cmdlet="Get-VMSnapshot",
            fully_qualified_error_id="RecoveryPointNotFound",
            category="ObjectNotFound",
            target=vm,
        )

    def stop_failover(self, vm: str) -> None:
        """``Stop-VMFailover``: cancel a prepared/uncommitted failover or delete a test VM."""
        self._call("Stop-VMFailover", {"VMName": escape_wildcards(vm), "Confirm": False})

    def complete_failover(self, vm: str) -> None:
        """``Complete-VMFailover``: commit an unplanned failover (irreversible)."""
        self._call("Complete-VMFailover", {"VMName": escape_wildcards(vm), "Confirm": False})

    # --- replication --------------------------------------------------------------------------

    def set_replication_reverse(self, vm: str, replica_server: str | None = None) -> None:
        """``Set-VMReplication -Reverse`` on the new primary (optionally to a new replica)."""
        params: dict[str, Any] = {"VMName": escape_wildcards(vm), "Confirm": False}
        if replica_server is not None:
            params["ReplicaServerName"] = replica_server
        self._call("Set-VMReplication", params, ["Reverse"])

    def set_replication_as_replica(self, vm: str) -> None:
        """``Set-VMReplication -AsReplica`` on the old primary after an unplanned failover."""
        params = {"VMName": escape_wildcards(vm), "Confirm": False}
        self._call("Set-VMReplication", params, ["AsReplica"])

    def enable_replication(self, vm: str, settings: ReplicationSettings) -> None:
        """``Enable-VMReplication`` with the protection profile's settings."""
        self._call("Enable-VMReplication", settings.parameters(vm))

    def start_initial_replication(
        self,
        vm: str,
        *,
        destination_path: str | None = None,
        start_time: datetime | None = None,
    ) -> None:
        """``Start-VMInitialReplication``: now, at ``start_time``, or offline to a path."""
        params: dict[str, Any] = {"VMName": escape_wildcards(vm)}
        if destination_path is not None:
            params["DestinationPath"] = destination_path
        if start_time is not None:
            params["InitialReplicationStartTime"] = start_time
        self._call("Start-VMInitialReplication", params)

    # --- networks -----------------------------------------------------------------------------

    def connect_network(self, vm: str, switch: str, adapter: str | None = None) -> None:
        """``Connect-VMNetworkAdapter -VMName -SwitchName`` (every adapter, or one by name)."""
        # -SwitchName is literal (one switch, no pattern); -VMName and -Name are patterns.
        params: dict[str, Any] = {"VMName": escape_wildcards(vm), "SwitchName": switch}
        if adapter is not None:
            params["Name"] = escape_wildcards(adapter)
        self._call("Connect-VMNetworkAdapter", params)

    def connect_adapter(self, vm: str, adapter_id: str, switch: str | None) -> None:
        """Connect one adapter of ``vm``, picked by its ``Id``, to ``switch`` (None: disconnect).

        Hyper-V names every adapter "Network Adapter" unless someone renamed it, so ``-Name``
        cannot tell two apart, and a host refuses a client's copy of an adapter as
        ``-VMNetworkAdapter``. The live adapter is therefore picked on the host, inside one
        pipeline: ``Get-VMNetworkAdapter -VMName | Where-Object Id -EQ | Connect-...``.
        """
        cmdlet = "Connect-VMNetworkAdapter" if switch else "Disconnect-VMNetworkAdapter"
        params: dict[str, Any] = {"SwitchName": switch} if switch else {}
        label = f"Get-VMNetworkAdapter | Where-Object | {cmdlet}"
        result = self.runner.run_pipeline(
            [
                ("Get-VMNetworkAdapter", {"VMName": escape_wildcards(vm)}, ()),
                ("Where-Object", {"Property": "Id", "Value": adapter_id}, ("EQ",)),
                # -Passthru: an adapter that vanished between the read and now pipes nothing,
                # which must not pass for a connected adapter.
                (cmdlet, params, ("Passthru",)),
            ]
        )
        if result.errors:
            raise failed(self.host_name, label, result)
        if not result.output:
            raise CmdletFailed(
                f"{cmdlet} on {self.host_name} found no adapter {adapter_id!r} on VM {vm!r}; "
                "it was removed or the VM was replaced since it was read",
                host=self.host_name,
                cmdlet=cmdlet,
                fully_qualified_error_id="ObjectNotFound",
                category="ObjectNotFound",
                target=adapter_id,
            )

    def disconnect_network(self, vm: str) -> None:
        """``Disconnect-VMNetworkAdapter -VMName``: leave every adapter unconnected."""
        self._call("Disconnect-VMNetworkAdapter", {"VMName": escape_wildcards(vm)})

    # --- plumbing -----------------------------------------------------------------------------

    def _call(
        self, cmdlet: str, params: Mapping[str, Any], switches: Sequence[str] = ()
    ) -> PSResult:
        result = self.runner.run(cmdlet, params, switches=switches)
        if result.errors:
            raise failed(self.host_name, cmdlet, result)
        return result

    def _one(
        self, result: PSResult, cmdlet: str, name: str, keys: Sequence[str]
    ) -> Mapping[str, Any]:
        """The one object named ``name`` (by the first of ``keys`` it has): never another VM
        that a pattern happened to match, and never a guess between two of the same name."""
        found = named(result.output, name, keys)
        if not found:
            others = sorted({str(first(o, *keys)) for o in result.output})
            extra = f" (only {', '.join(others)}, none of them that VM)" if others else ""
            raise CmdletFailed(
                f"{cmdlet} on {self.host_name} found no VM named {name!r}{extra}; check the "
                "plan's VM name and which host holds it",
                host=self.host_name,
                cmdlet=cmdlet,
                fully_qualified_error_id="ObjectNotFound",
                category="ObjectNotFound",
                target=name,
            )
        if len(found) > 1:
            raise CmdletFailed(
                f"{cmdlet} on {self.host_name} found {len(found)} VMs named {name!r}; rename "
                "all but one in Hyper-V Manager (a name must pick out one VM on a host)",
                host=self.host_name,
                cmdlet=cmdlet,
                fully_qualified_error_id="AmbiguousVMName",
                category="InvalidResult",
                target=name,
            )
        return found[0]


def named(
    objects: Sequence[Mapping[str, Any]], name: str, keys: Sequence[str]
) -> list[Mapping[str, Any]]:
    """The objects whose name (the first of ``keys`` present) is ``name``.

    Hyper-V matches names ignoring case, so a name that differs only in case still counts;
    but an exact match wins, so ``App`` and ``app`` side by side never both stand for one.
    """
    names = [(o, str(first(o, *keys) or "")) for o in objects]
    exact = [o for o, n in names if n == name]
    return exact or [o for o, n in names if n.casefold() == name.casefold()]


def of_vm(objects: Sequence[Mapping[str, Any]], vm: str) -> list[Mapping[str, Any]]:
    """Objects that belong to ``vm`` by their ``VMName``, in order; one without a ``VMName``
    is kept (the escaped ``-VMName`` already named only ``vm``)."""
    mine = named([o for o in objects if first(o, "VMName")], vm, ("VMName",))
    return [o for o in objects if not first(o, "VMName") or any(o is m for m in mine)]


def _milliseconds(seconds: float) -> int:
    """Whole milliseconds for an ``[int]`` parameter (never negative, at most Int32)."""
    return min(2**31 - 1, max(0, round(seconds * 1000)))


def escape_wildcards(text: str) -> str:
    """``text`` with PowerShell's wildcard characters escaped (as WildcardPattern.Escape
    does), for ``-Name`` parameters that would otherwise match patterns."""
    return "".join("`" + ch if ch in "*?[]`" else ch for ch in text)


def failed(host: str, cmdlet: str, result: PSResult) -> CmdletFailed:
    """The CmdletFailed for a result's first error record (host, cmdlet, error id, category)."""
    error = result.errors[0]
    return CmdletFailed(
        f"{cmdlet} failed on {host}: {error.message} [{error.fully_qualified_error_id}]",
        host=host,
        cmdlet=cmdlet,
        fully_qualified_error_id=error.fully_qualified_error_id,
        category=error.category,
        target=error.target,
    )
