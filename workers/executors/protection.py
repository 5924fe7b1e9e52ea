"""Executors of protection runs (:mod:`workflows.protection`), and the reader that tells
``ferryman protect status`` what replicates.

=====================  ==========================================  ===========================
kind (host)            does                                        does nothing when
=====================  ==========================================  ===========================
enable_replication     the replica's storage location (the         the VM already replicates
(primary)              Replica server's authorization entry),      toward that replica host
                       Enable-VMReplication with the profile
initial_replication    Start-VMInitialReplication (now, at the     both ends Replicating;
(primary)              scheduled time, or offline export, then     started already: only waits
                       Import-VMInitialReplication on the
                       replica); waits until both replicate,
                       reporting percent and bytes sent
set_replication        Set-VMReplication with the settings that    settings already the
(primary)              differ from the profile                     profile's
remove_replication     Remove-VMReplication on the primary, then   neither end replicates
(primary)              on the replica
delete_replica         Remove-VM -Force of the replica             no such VM on the host
(replica)
=====================  ==========================================  ===========================

Each reads first, so a step started again (a redelivery after a worker died, a resume) picks
up where the relationship is: an initial replication already under way is waited for, never
started a second time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from workers.errors import CmdletFailed
from workers.executors.base import host_of, input_of, refused_as_step_error, vm_of
from workers.executors.context import StepContext
from workers.executors.errors import InvalidReplicationState, StepFailed, StepParamsError
from workers.hyperv.hyperv import ReplicationAuth
from workers.hyperv.hyperv import ReplicationSettings as EnableSettings
from workers.hyperv.protection import ProtectionHost, Relationship
from workflows.inputs import (
    DeleteReplicaInput,
    EnableReplicationInput,
    InitialReplicationInput,
    PartialProtectionSettings,
    RemoveReplication,
    RemoveReplicationInput,
    RestoreReplicationSettings,
    SetReplicationInput,
)
from workflows.protection import Observed, ReplicationSettings
from workflows.steps import StepOutcome, StepSpec
from workflows.waiting import wait_until

TRUST_GROUP = "ferryman"
_STARTED = {"InitialReplicationInProgress", "Replicating"}


def _host(ctx: StepContext, name: str) -> ProtectionHost:
    return ProtectionHost(ctx.hyperv(name))


def _same(a: str, b: str) -> bool:
    return a.split(".")[0].casefold() == b.split(".")[0].casefold()


def _state(rel: Relationship | None) -> str:
    return "not replicating" if rel is None else f"{rel.mode} in {rel.state}, health {rel.health}"


# --- enable -----------------------------------------------------------------------------------


def enable_replication(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """Where the replica goes, then Enable-VMReplication toward the replica host."""
    vm, host = vm_of(spec), host_of(spec)
    params = input_of(spec, EnableReplicationInput)
    replica, settings = params.replica_host, params.settings
    primary = _host(ctx, host)
    rel = primary.relationship(vm)
    if rel is not None:
        if rel.mode == "Primary" and _same(rel.replica_server, replica):
            return StepOutcome(result={"state": rel.state}, changed=False)
        raise InvalidReplicationState(
            f"VM {vm} on {host} already replicates ({_state(rel)}, replica "
            f"{rel.replica_server or 'unknown'}), not toward {replica}: disable it first "
            f"(ferryman protect disable FABRIC --vm {vm}) or change the fabric"
        )
    result: dict[str, Any] = {}
    classification = params.storage_classification
    if classification:
        target = _host(ctx, replica)
        # A storage mapping's target classification is a folder of the Replica server's
        # default location; the authorization entry of the primary server points there.
        location = f"{target.default_storage().rstrip(chr(92))}\\{classification}"
        with refused_as_step_error(
            spec,
            replica,
            "New-VMReplicationAuthorizationEntry",
            lambda: "",
            "Check the Replica server's configuration, then resume the run",
        ):
            target.authorize(host, location, TRUST_GROUP)
        result["storage_location"] = location
    hv = ctx.hyperv(host)
    auth = settings.authentication
    enable = EnableSettings(
        replica_server=replica,
        replica_port=settings.port,
        authentication=ReplicationAuth(auth),
        frequency_sec=settings.frequency,
        recovery_history=settings.recovery_history,
        vss_frequency_hours=settings.vss_hours or None,
        compression=settings.compression,
    )
    with refused_as_step_error(
        spec,
        host,
        "Enable-VMReplication",
        lambda: _state(primary.relationship(vm)),
        f"Check that {replica} is a Replica server accepting {auth} on port "
        f"{settings.port}, then resume the run",
    ):
        hv.enable_replication(vm, enable)
    after = primary.relationship(vm)
    result["state"] = after.state if after else "unknown"
    # Undo: drop the relationship again (the replica VM it created goes with delete_replica).
    undo = RemoveReplication(host=host, vm=vm, replica_host=replica)
    return StepOutcome(result=result, undo=undo)


# --- initial replication ----------------------------------------------------------------------


def initial_replication(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """Start the initial replication by the profile's method and wait until both ends
    replicate; one already started (this step's earlier start) is only waited for."""
    vm, host = vm_of(spec), host_of(spec)
    params = input_of(spec, InitialReplicationInput)
    replica, method, timeout = params.replica_host, params.method, params.timeout
    primary = _host(ctx, host)
    rel = primary.relationship(vm)
    if rel is None or rel.mode != "Primary":
        raise InvalidReplicationState(
            f"VM {vm} on {host} is {_state(rel)}: initial replication needs replication "
            "enabled on the primary (the enable_replication step); resume the run"
        )
    started = rel.state in _STARTED
    if rel.state == "Replicating":
        return StepOutcome(result={"state": rel.state, "method": method}, changed=False)
    if rel.state != "ReadyForInitialReplication" and not started:
        raise InvalidReplicationState(
            f"VM {vm} on {host} is {_state(rel)}: initial replication needs "
            "ReadyForInitialReplication; check the relationship by hand"
        )
    total = rel.pending_bytes
    if not started:
        start_time = params.start_time if method == "scheduled" else None
        export = params.export_path if method == "offline" else None
        if method == "offline" and not export:
            raise StepParamsError(f"step {spec.key}: offline needs export_path; fix the profile")
        with refused_as_step_error(
            spec,
            host,
            "Start-VMInitialReplication",
            lambda: _state(primary.relationship(vm)),
            f"Check that {replica} is reachable and accepting replication, then resume the run",
        ):
            ctx.hyperv(host).start_initial_replication(
                vm,
                destination_path=export or None,
                start_time=datetime.fromisoformat(start_time) if start_time else None,
            )
    if method == "offline":
        _import_offline(ctx, spec, params.import_path or "", vm, replica)
    meter = _Meter(ctx, total)
    # A copy takes minutes to hours: look often at first, then at a tenth of the time waited.
    done = wait_until(
        lambda: meter.replicating(primary, vm),
        timeout=timeout,
        interval=max(ctx.poll_interval, 0.05),
        lateness=0.1,
        max_interval=30.0,
    )
    if done is None:
        now = primary.relationship(vm)
        raise StepFailed(
            f"initial replication of VM {vm} from {host} to {replica} did not finish within "
            f"{timeout:g} s ({_state(now)}, {now.pending_bytes if now else 0} bytes to go); "
            "resume the run to keep waiting"
        )
    total = max(meter.total, done.pending_bytes)
    return StepOutcome(
        result={
            "state": done.state,
            "method": method,
            "resumed": started,
            "bytes": total,
            "progress": meter.finished(),
        }
    )


class _Meter:
    """How far an initial replication got, from the backlog its primary reports
    (``Measure-VMReplication``'s PendingReplicationSize) against the largest backlog seen,
    by this start of the step or an earlier one; reported to the step's context at each read.
    """

    def __init__(self, ctx: StepContext, pending: int) -> None:
        self.ctx = ctx
        earlier = ctx.last_progress or {}
        self.total = max(int(pending), int(earlier.get("bytes_total") or 0))
        self.sent = int(earlier.get("bytes_transferred") or 0)
        self.percent = float(earlier.get("percent") or 0.0)

    def replicating(self, host: ProtectionHost, vm: str) -> Relationship | None:
        """The relationship once both ends replicate (None meanwhile, progress reported)."""
        rel = host.relationship(vm)
        if rel is not None and rel.state == "Replicating":
            return rel
        if rel is not None:
            self.total = max(self.total, rel.pending_bytes)
            # a backlog that grows again (writes in the guest) never moves the figures back
            self.sent = max(self.sent, self.total - rel.pending_bytes)
            percent = 100.0 * self.sent / self.total if self.total else 0.0
            self.percent = max(self.percent, min(round(percent, 1), 99.9))
            self.ctx.progress(self._figures(rel.state))
        return None

    def finished(self) -> dict[str, Any]:
        """The final figures: everything sent."""
        self.percent, self.sent = 100.0, self.total
        return self._figures("Replicating")

    def _figures(self, state: str) -> dict[str, Any]:
        return {
            "percent": self.percent,
            "bytes_transferred": self.sent,
            "bytes_total": self.total,
            "state": state,
        }


def _import_offline(ctx: StepContext, spec: StepSpec, path: str, vm: str, replica: str) -> None:
    """Import-VMInitialReplication on the replica, unless the copy is already in."""
    if not path:
        raise StepParamsError(f"step {spec.key}: offline needs import_path; fix the profile")
    target = _host(ctx, replica)
    rel = target.relationship(vm)
    if rel is not None and rel.state == "Replicating":
        return
    with refused_as_step_error(
        spec,
        replica,
        "Import-VMInitialReplication",
        lambda: _state(target.relationship(vm)),
        f"Copy the export to {path} on {replica}, then resume the run",
    ):
        target.import_initial(vm, path)


# --- settings and removal ---------------------------------------------------------------------


def set_replication(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """Set-VMReplication with the profile's settings that differ from the live ones."""
    vm, host = vm_of(spec), host_of(spec)
    wanted = input_of(spec, SetReplicationInput).settings.model_dump(exclude_none=True)
    primary = _host(ctx, host)
    rel = primary.relationship(vm)
    if rel is None or rel.mode != "Primary":
        raise InvalidReplicationState(
            f"VM {vm} on {host} is {_state(rel)}: its settings change on the primary; "
            "check the fabric's primary host"
        )
    live = settings_of(rel).__dict__
    changes = {k: v for k, v in wanted.items() if live.get(k) != v}
    if not changes:
        return StepOutcome(result={"changed": {}}, changed=False)
    with refused_as_step_error(
        spec,
        host,
        "Set-VMReplication",
        lambda: _state(primary.relationship(vm)),
        "Check the profile's settings against the Replica server, then resume the run",
    ):
        primary.set_settings(vm, changes)
    before = {k: live.get(k) for k in changes}
    undo = RestoreReplicationSettings(
        host=host, vm=vm, settings=PartialProtectionSettings(**before)
    )
    return StepOutcome(result={"changed": changes, "before": before}, undo=undo)


def remove_replication(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """Remove-VMReplication on the primary, then on the replica."""
    vm, host = vm_of(spec), host_of(spec)
    replica = input_of(spec, RemoveReplicationInput).replica_host
    removed = []
    for name in (host, replica):
        if not name:
            continue
        end = _host(ctx, name)
        if end.relationship(vm) is None:
            continue
        with refused_as_step_error(
            spec, name, "Remove-VMReplication", lambda: "", "Resume the run once it is reachable"
        ):
            end.remove_replication(vm)
        removed.append(name)
    return StepOutcome(result={"removed_on": removed}, changed=bool(removed))


def delete_replica(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """Remove-VM -Force of the replica VM (its replication removed first)."""
    vm, host = vm_of(spec), host_of(spec)
    input_of(spec, DeleteReplicaInput)
    target = _host(ctx, host)
    if not target.has_vm(vm):
        return StepOutcome(result={"deleted": False}, changed=False)
    with refused_as_step_error(
        spec, host, "Remove-VM", lambda: _state(target.relationship(vm)), "Resume the run"
    ):
        target.remove_vm(vm)
    return StepOutcome(result={"deleted": True})


# --- reading for protect status ---------------------------------------------------------------


def settings_of(rel: Relationship) -> ReplicationSettings:
    """The comparable settings of a live relationship."""
    return ReplicationSettings(
        frequency=rel.frequency,
        recovery_history=rel.recovery_history,
        vss_hours=rel.vss_hours,
        compression=rel.compression,
        authentication=rel.authentication,
        port=rel.port,
    )


class HostProtectionReader:
    """:class:`workflows.protection.ProtectionReader` over a step context's hosts."""

    def __init__(self, ctx: StepContext) -> None:
        self.ctx = ctx

    def replications(self, host: str) -> list[Observed]:
        """Every relationship ``host`` is the primary of, with the host's clock read right
        after them (a host that refuses Get-Date leaves lag to the caller's clock)."""
        out = []
        end = _host(self.ctx, host)
        relationships = end.relationships()
        try:
            host_now = end.clock() if relationships else None
        except CmdletFailed:
            host_now = None
        for rel in relationships:
            out.append(
                Observed(
                    vm=rel.vm,
                    host=host,
                    replica_host=rel.replica_server.split(".")[0].lower(),
                    state=rel.state,
                    mode=rel.mode,
                    health=rel.health,
                    settings=settings_of(rel),
                    last_replication=rel.last_replication,
                    pending_bytes=rel.pending_bytes,
                    host_now=host_now,
                )
            )
        return out

    def has_vm(self, host: str, vm: str) -> bool:
        """Whether ``vm`` exists on ``host``."""
        return _host(self.ctx, host).has_vm(vm)
