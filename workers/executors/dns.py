"""Executors that switch a VM's DNS records to its new address and put them back.

UPDATE_DNS switches each record named in the plan to the address WAIT_IP found, verifies it
on every authoritative server, and keeps what it replaced in the undo record. A record that
already points at the address is left alone (a redelivered task sends no update).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from plans.errors import FerrymanError
from workers.executors.base import input_of
from workers.executors.context import StepContext
from workers.executors.errors import StepParamsError
from workflows.inputs import DnsSnapshot, RestoreDns, RestoreDnsInput, UpdateDnsInput, ZoneTarget
from workflows.steps import StepOutcome, StepSpec


def _addresses(ctx: StepContext, spec: StepSpec, explicit: Sequence[str] | None) -> list[str]:
    if explicit:
        return list(explicit)
    found = ctx.prior.get("wait_ip", {}).get("addresses")
    if not found:
        raise StepParamsError(
            f"step {spec.key}: update_dns for VM {spec.vm} has no address: the wait_ip step "
            "must run before it in the same task (or give params.addresses)"
        )
    return [str(a) for a in found]


def _target(zones: dict[str, ZoneTarget], zone: str, spec: StepSpec) -> ZoneTarget:
    target = zones.get(zone)
    if target is None:
        raise StepParamsError(
            f"step {spec.key}: record zone {zone!r} has no target in the step's zones; add the "
            "zone to the fabric's dns_zones and recompile the run"
        )
    return target


def update_dns(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """Switch, verify, and record the previous records for RESTORE_DNS / compensation."""
    params = input_of(spec, UpdateDnsInput)
    addresses = _addresses(ctx, spec, params.addresses)
    snapshots: list[DnsSnapshot] = []
    done: list[dict[str, Any]] = []
    try:
        for record in params.records:
            zone, name = record.zone, record.name
            target = _target(params.zones, zone, spec)
            ops = ctx.dns(target)
            old, changed = ops.switch(name, addresses, ttl=record.ttl, ptr=record.ptr)
            if changed:
                snapshots.append(DnsSnapshot(target=target, snapshot=old))
            verified = ops.verify(name, addresses)
            done.append(
                {
                    "zone": zone,
                    "name": name,
                    "addresses": addresses,
                    "changed": changed,
                    "servers": [a.get("server") for a in verified.get("answers", [])],
                }
            )
    except FerrymanError as exc:
        # Records switched before the failure still need restoring: the engine may read this.
        exc.undo = _undo(snapshots)  # type: ignore[attr-defined]
        raise
    return StepOutcome(result={"records": done}, undo=_undo(snapshots), changed=bool(snapshots))


def _undo(snapshots: list[DnsSnapshot]) -> RestoreDns | None:
    return RestoreDns(snapshots=tuple(snapshots)) if snapshots else None


def restore_dns(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """Put back the snapshots UPDATE_DNS captured (the input's ``snapshots``); idempotent."""
    return restore_snapshots(ctx, input_of(spec, RestoreDnsInput).snapshots)


def restore_snapshots(ctx: StepContext, snapshots: Sequence[DnsSnapshot]) -> StepOutcome:
    """Put ``snapshots`` back, newest first; ``changed`` False when every zone matched."""
    restored: list[str] = []
    for entry in reversed(snapshots):
        if ctx.dns(entry.target).restore(entry.snapshot):
            restored.extend(str(r.get("name")) for r in entry.snapshot.get("records", []))
    return StepOutcome(result={"restored": restored}, changed=bool(restored))
