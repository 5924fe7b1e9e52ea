"""Protection as desired state: the fabric says which VMs replicate, how and where to; the hosts
say what replicates now; the difference becomes a protection run.

Pure, like the compiler: :func:`desired_protection` reads the fabric, :func:`assess` compares
it with what a :class:`ProtectionReader` found on the hosts (one :class:`Observed` per
relationship seen from its primary), and :func:`compile_protection` / :func:`compile_disable`
turn the differences into a :class:`~workflows.compiler.CompiledRun` of per-VM units that the
engine runs like any recovery plan: recorded step by step, resumable, listed by ``ferryman
runs``. The reader is the workers' (:mod:`workers.executors.protection`); the CLI wires it.

Per VM, one unit on the primary site's queue:

* not replicating, listed: ENABLE_REPLICATION (the replica's storage location, then
  ``Enable-VMReplication`` with the profile) and INITIAL_REPLICATION (over the network now, at
  the scheduled time, or offline: export, then import on the replica), which completes only
  once both ends replicate;
* replicating with settings other than the profile's: SET_REPLICATION;
* replicating in a paired cloud but no longer listed, with ``prune``: REMOVE_REPLICATION (and
  DELETE_REPLICA with the pairing's ``delete_replica_on_disable``).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from plans.errors import ConfigurationError
from plans.model import Direction, Fabric, OnError, Pairing
from workflows.compiler import CompiledRun, RunOperation, Stage, StageKind, _all_hosts
from workflows.inputs import (
    DeleteReplicaInput,
    EnableReplicationInput,
    InitialReplicationInput,
    PartialProtectionSettings,
    ProtectionSettings,
    RemoveReplicationInput,
    SetReplicationInput,
)
from workflows.steps import TASK_VM, StepKind, StepSpec, TaskUnit, site_queue

PORTS = {"Kerberos": 8083, "Certificate": 8084}
# Lag past this many copy intervals puts the VM's recovery point objective at risk.
RPO_RISK_CYCLES = 2.0
PLAN_NAME = "protection"


class ProtectionError(ConfigurationError):
    """The request does not fit the fabric (unknown VM, nothing to do); the message says why."""


@dataclass(frozen=True)
class ReplicationSettings:
    """The settings a profile gives and ``Get-VMReplication`` shows, compared one by one."""

    frequency: int
    recovery_history: int
    vss_hours: int
    compression: bool
    authentication: str  # Kerberos | Certificate
    port: int

    def differences(self, actual: ReplicationSettings) -> list[Difference]:
        """The settings where ``actual`` is not this (the desired) one."""
        mine, theirs = asdict(self), asdict(actual)
        return [Difference(k, mine[k], theirs[k]) for k in mine if mine[k] != theirs[k]]


@dataclass(frozen=True)
class Difference:
    """One setting whose live value is not the profile's."""

    setting: str
    desired: Any
    actual: Any


@dataclass(frozen=True)
class Desired:
    """One VM as the fabric wants it protected."""

    vm: str
    pairing: str
    primary_site: str
    recovery_site: str
    primary_host: str
    replica_host: str
    settings: ReplicationSettings
    method: str = "network"
    start_time: str | None = None
    export_path: str | None = None
    import_path: str | None = None
    storage_classification: str | None = None
    delete_replica: bool = False


@dataclass(frozen=True)
class Observed:
    """One replication relationship as its primary host reports it."""

    vm: str
    host: str
    replica_host: str
    state: str
    mode: str
    health: str
    settings: ReplicationSettings
    last_replication: datetime | None = None
    pending_bytes: int = 0
    # the primary's own clock when it was read: lag is measured on it (None: the caller's)
    host_now: datetime | None = None


class ProtectionReader(Protocol):
    """Reads what replicates on the hosts (implemented over PowerShell by the workers)."""

    def replications(self, host: str) -> list[Observed]:
        """Every relationship ``host`` is the primary of."""
        ...

    def has_vm(self, host: str, vm: str) -> bool:
        """Whether ``vm`` exists on ``host``."""
        ...


class Action(enum.StrEnum):
    """What ``protect apply`` would do for a VM."""

    NONE = "none"  # in sync
    ENABLE = "enable"  # listed, not replicating
    RECONCILE = "reconcile"  # replicating with other settings
    PRUNE = "prune"  # replicating, not listed (only with --prune)
    WAIT = "wait"  # initial replication or resynchronisation under way
    MISSING = "missing"  # listed, but not on its primary host
    MISPLACED = "misplaced"  # replicating toward another replica host than the fabric's
    REVERSED = "reversed"  # failed over: its primary is on the recovery site (left alone)


@dataclass
class VmReport:
    """One VM's line of ``protect status``: desired and actual side by side."""

    vm: str
    pairing: str
    action: Action
    desired: Desired | None
    observed: Observed | None
    differences: list[Difference] = field(default_factory=list)
    lag_seconds: float | None = None
    rpo_at_risk: bool = False
    resync_pending: bool = False

    @property
    def healthy(self) -> bool:
        """In sync and within its recovery point objective."""
        return self.action is Action.NONE and not self.rpo_at_risk and not self.resync_pending

    def to_json(self) -> dict[str, Any]:
        """The report as plain JSON (``protect status --json``)."""
        obs, want = self.observed, self.desired
        return {
            "vm": self.vm,
            "pairing": self.pairing,
            "action": self.action.value,
            "in_sync": self.healthy,
            "desired": None if want is None else asdict(want.settings),
            "actual": None if obs is None else asdict(obs.settings),
            "differences": [asdict(d) for d in self.differences],
            "primary_host": obs.host if obs else (want.primary_host if want else None),
            "replica_host": obs.replica_host if obs else (want.replica_host if want else None),
            "state": obs.state if obs else "Disabled",
            "mode": obs.mode if obs else "None",
            "health": obs.health if obs else "NotApplicable",
            "last_replication": (
                obs.last_replication.isoformat() if obs and obs.last_replication else None
            ),
            "host_time": obs.host_now.isoformat() if obs and obs.host_now else None,
            "lag_seconds": self.lag_seconds,
            "rpo_at_risk": self.rpo_at_risk,
            "resync_pending": self.resync_pending,
            "pending_bytes": obs.pending_bytes if obs else 0,
        }


# --- desired state ----------------------------------------------------------------------------


def profile_settings(pairing: Pairing) -> ReplicationSettings:
    """The replication settings a pairing's profile asks for."""
    profile = pairing.profile
    auth = "Certificate" if profile.authentication == "certificate" else "Kerberos"
    return ReplicationSettings(
        frequency=profile.replication_frequency,
        recovery_history=profile.recovery_points,
        vss_hours=profile.app_consistent_frequency or 0,
        compression=profile.compression,
        authentication=auth,
        port=profile.port or PORTS[auth],
    )


def desired_protection(fabric: Fabric) -> dict[str, Desired]:
    """Every VM the fabric's pairings protect, by name."""
    out: dict[str, Desired] = {}
    for name, pairing in fabric.pairings.items():
        settings = profile_settings(pairing)
        initial = pairing.profile.initial_replication
        for vm, protected in pairing.vms.items():
            out[vm] = Desired(
                vm=vm,
                pairing=name,
                primary_site=pairing.primary.site,
                recovery_site=pairing.recovery.site,
                primary_host=protected.primary_host,
                replica_host=protected.replica_host,
                settings=settings,
                method=initial.method,
                start_time=initial.start_time.isoformat() if initial.start_time else None,
                export_path=initial.export_path,
                import_path=initial.import_path,
                storage_classification=_target_classification(
                    fabric, pairing, protected.storage_classification
                ),
                delete_replica=pairing.profile.delete_replica_on_disable,
            )
    return out


def _target_classification(fabric: Fabric, pairing: Pairing, source: str | None) -> str | None:
    """The recovery site's storage classification a storage mapping gives ``source``."""
    if source is None:
        return None
    for mapping in fabric.storage_mappings:
        source_ref = (mapping.source.site, mapping.source.classification)
        if source_ref == (pairing.primary.site, source) and (
            mapping.target.site == pairing.recovery.site
        ):
            return mapping.target.classification
    return None


# --- comparing --------------------------------------------------------------------------------

_WAITING = {
    "InitialReplicationInProgress",
    "ReadyForInitialReplication",
    "Resynchronizing",
}
_RESYNC = {"WaitingForStartResynchronize", "ResynchronizeSuspended", "Resynchronizing"}


def observe(fabric: Fabric, reader: ProtectionReader) -> dict[str, Observed]:
    """Every relationship whose primary is a host of a pairing's site, by VM: the primary
    site's first, then the recovery site's (VMs failed over and replicating back)."""
    hosts: list[str] = []
    for role in ("primary", "recovery"):
        for pairing in fabric.pairings.values():
            site = pairing.primary.site if role == "primary" else pairing.recovery.site
            for host in fabric.sites[site].hosts:
                if host not in hosts:
                    hosts.append(host)
    spelled = {h.lower(): h for h in _all_hosts(fabric, list(fabric.sites))}
    found: dict[str, Observed] = {}
    for host in hosts:
        for obs in reader.replications(host):
            if obs.mode == "Primary":
                # The fabric's spelling of the replica host (hosts report their own).
                replica = obs.replica_host.split(".")[0]
                obs = replace(obs, replica_host=spelled.get(replica.lower(), replica))
                found.setdefault(obs.vm, obs)
    return found


def assess(
    fabric: Fabric,
    observed: dict[str, Observed],
    now: datetime,
    *,
    present: Iterable[str] = (),
    risk_cycles: float = RPO_RISK_CYCLES,
) -> list[VmReport]:
    """Compare the fabric with what replicates; ``present``: listed VMs found on their primary
    host (a listed VM neither replicating nor present is MISSING). Lag is measured on each
    primary's clock as read with its relationships, ``now`` only for a host that gave none."""
    desired = desired_protection(fabric)
    present_vms = set(present)
    recovery_hosts = {
        host.lower()
        for pairing in fabric.pairings.values()
        for host in fabric.sites[pairing.recovery.site].hosts
    }
    reports: list[VmReport] = []
    for vm, want in desired.items():
        obs = observed.get(vm)
        report = VmReport(vm, want.pairing, Action.NONE, want, obs)
        if obs is None:
            report.action = Action.ENABLE if vm in present_vms else Action.MISSING
        elif obs.host.lower() in recovery_hosts:
            # Failed over and replicating back: a failback, not protection, brings it home.
            report.action = Action.REVERSED
        elif obs.replica_host.lower() != want.replica_host.lower():
            report.action = Action.MISPLACED
        else:
            report.differences = want.settings.differences(obs.settings)
            if obs.state in _WAITING:
                report.action = Action.WAIT
            elif report.differences:
                report.action = Action.RECONCILE
        _lag(report, now, risk_cycles)
        reports.append(report)
    pairing_of_site = {p.primary.site: name for name, p in fabric.pairings.items()}
    for vm, obs in observed.items():
        if vm in desired or obs.host.lower() in recovery_hosts:
            continue
        site = fabric.host_endpoint(obs.host)[0] if _known_host(fabric, obs.host) else ""
        report = VmReport(vm, pairing_of_site.get(site, ""), Action.PRUNE, None, obs)
        _lag(report, now, risk_cycles)
        reports.append(report)
    return reports


def read_protection(fabric: Fabric, reader: ProtectionReader, now: datetime) -> list[VmReport]:
    """What ``ferryman protect status`` shows: the hosts read and compared with the fabric
    (``now``: the caller's clock, for a host that gives none of its own)."""
    observed = observe(fabric, reader)
    present = [
        d.vm
        for d in desired_protection(fabric).values()
        if d.vm not in observed and reader.has_vm(d.primary_host, d.vm)
    ]
    return assess(fabric, observed, now, present=present)


def _known_host(fabric: Fabric, host: str) -> bool:
    try:
        fabric.host_endpoint(host)
    except KeyError:
        return False
    return True


def _lag(report: VmReport, now: datetime, risk_cycles: float) -> None:
    obs = report.observed
    if obs is None:
        return
    report.resync_pending = obs.state in _RESYNC
    if obs.state != "Replicating" and not report.resync_pending:
        return
    frequency = obs.settings.frequency or 300
    if obs.last_replication is None:
        report.rpo_at_risk = True
        return
    # on the host's clock when it gave one: a host in another zone, with a skewed clock or
    # on a lab's scaled clock is measured against itself, not against this machine's clock
    report.lag_seconds = max(0.0, ((obs.host_now or now) - obs.last_replication).total_seconds())
    report.rpo_at_risk = report.lag_seconds > risk_cycles * frequency or obs.health == "Critical"


# --- compiling --------------------------------------------------------------------------------


def _unit(site: str, vm: str, steps: tuple[StepSpec, ...]) -> TaskUnit:
    return TaskUnit(key=f"protect/{vm}", task=TASK_VM, queue=site_queue(site), steps=steps, vm=vm)


def _enable_steps(want: Desired, timeout: float) -> tuple[StepSpec, ...]:
    base = f"protect/{want.vm}"
    enable = EnableReplicationInput(
        replica_host=want.replica_host,
        settings=ProtectionSettings(**asdict(want.settings)),
        storage_classification=want.storage_classification,
    )
    initial = InitialReplicationInput(
        replica_host=want.replica_host,
        method=want.method,  # type: ignore[arg-type]  # the profile's method, validated
        start_time=want.start_time,
        export_path=want.export_path,
        import_path=want.import_path,
        timeout=timeout,
    )
    return (
        StepSpec(
            f"{base}/enable_replication",
            StepKind.ENABLE_REPLICATION,
            want.vm,
            want.primary_host,
            enable,
        ),
        StepSpec(
            f"{base}/initial_replication",
            StepKind.INITIAL_REPLICATION,
            want.vm,
            want.primary_host,
            initial,
        ),
    )


def _reconcile_steps(want: Desired, obs: Observed) -> tuple[StepSpec, ...]:
    settings = SetReplicationInput(settings=PartialProtectionSettings(**asdict(want.settings)))
    key = f"protect/{want.vm}/set_replication"
    return (StepSpec(key, StepKind.SET_REPLICATION, want.vm, obs.host, settings),)


def _disable_steps(
    vm: str, primary: str, replica: str, delete_replica: bool
) -> tuple[StepSpec, ...]:
    remove = RemoveReplicationInput(replica_host=replica)
    steps = [
        StepSpec(
            f"unprotect/{vm}/remove_replication", StepKind.REMOVE_REPLICATION, vm, primary, remove
        )
    ]
    if delete_replica:
        key = f"unprotect/{vm}/delete_replica"
        steps.append(StepSpec(key, StepKind.DELETE_REPLICA, vm, replica, DeleteReplicaInput()))
    return tuple(steps)


def compile_protection(
    fabric: Fabric,
    reports: Sequence[VmReport],
    *,
    vms: Sequence[str] = (),
    prune: bool = False,
    timeout: float = 6 * 3600,
) -> CompiledRun | None:
    """The protection run that brings the hosts to the fabric (None: nothing to do).

    ``vms``: only these VMs (each must be listed, or replicating in a paired cloud);
    ``timeout``: seconds an initial replication may take before its step fails.
    """
    by_vm = {r.vm: r for r in reports}
    unknown = [vm for vm in vms if vm not in by_vm]
    if unknown:
        raise ProtectionError(
            f"VM {', '.join(unknown)} is neither listed by a pairing of the fabric nor "
            "replicating in a paired cloud; check the name"
        )
    chosen = [by_vm[vm] for vm in vms] if vms else list(reports)
    units: list[TaskUnit] = []
    for report in chosen:
        want, obs = report.desired, report.observed
        if report.action is Action.ENABLE and want is not None:
            units.append(_unit(want.primary_site, report.vm, _enable_steps(want, timeout)))
        elif report.action is Action.RECONCILE and want is not None and obs is not None:
            units.append(_unit(want.primary_site, report.vm, _reconcile_steps(want, obs)))
        elif report.action is Action.PRUNE and prune and obs is not None:
            site = fabric.host_endpoint(obs.host)[0]
            pairing = fabric.pairings.get(report.pairing)
            delete = bool(pairing and pairing.profile.delete_replica_on_disable)
            steps = _disable_steps(report.vm, obs.host, obs.replica_host, delete)
            units.append(_unit(site, report.vm, steps))
    if not units:
        return None
    return _compiled(fabric, RunOperation.PROTECT, units)


def compile_disable(
    fabric: Fabric, reports: Sequence[VmReport], vms: Sequence[str], *, delete_replica: bool
) -> CompiledRun:
    """The run that disables protection of ``vms`` (Remove-VMReplication on both ends; the
    replica deleted with ``delete_replica`` or the pairing's ``delete_replica_on_disable``)."""
    by_vm = {r.vm: r for r in reports}
    units: list[TaskUnit] = []
    for vm in vms:
        report = by_vm.get(vm)
        if report is None or report.observed is None:
            raise ProtectionError(
                f"VM {vm} does not replicate from a host of a paired cloud: nothing to disable"
            )
        obs = report.observed
        pairing = fabric.pairings.get(report.pairing)
        delete = delete_replica or bool(pairing and pairing.profile.delete_replica_on_disable)
        site = fabric.host_endpoint(obs.host)[0]
        if obs.replica_host not in _all_hosts(fabric, list(fabric.sites)):
            raise ProtectionError(
                f"VM {vm} replicates to {obs.replica_host}, which is not a host of the fabric; "
                "add it to its site"
            )
        units.append(_unit(site, vm, _disable_steps(vm, obs.host, obs.replica_host, delete)))
    return _compiled(fabric, RunOperation.UNPROTECT, units)


def _compiled(fabric: Fabric, operation: RunOperation, units: list[TaskUnit]) -> CompiledRun:
    stage = Stage(
        index=0,
        name=operation.value,
        kind=StageKind.UNITS,
        units=tuple(units),
        on_failure=OnError.CONTINUE,
    )
    return CompiledRun(
        plan=PLAN_NAME,
        operation=operation,
        direction=Direction.FAILOVER,
        hosts=_all_hosts(fabric, list(fabric.sites)),
        stages=(stage,),
    )
