"""Executors that switch a VM's DNS records to its new address and put them back.

UPDATE_DNS switches each record named in the plan to the address WAIT_IP found, verifies it
on every authoritative server, and keeps what it replaced in the undo record. A record that
already points at the address is left alone (a redelivered task sends no update).
"""

from __future__ import annotations

from typing import Any

from plans.errors import FerrymanError
from workers.executors.base import param
from workers.executors.context import StepContext
from workers.executors.errors import StepParamsError
from workflows.steps import StepOutcome, StepSpec


def _addresses(ctx: StepContext, spec: StepSpec) -> list[str]:
    explicit = spec.params.get("addresses")
    if explicit:
        return [str(a) for a in explicit]
    found = ctx.prior.get("wait_ip", {}).get("addresses")
    if not found:
        raise StepParamsError(
            f"step {spec.key}: update_dns for VM {spec.vm} has no address: the wait_ip step "
            "must run before it in the same task (or give params.addresses)"
        )
    return [str(a) for a in found]


def _target(zones: dict[str, Any], zone: str, spec: StepSpec) -> dict[str, Any]:
    target = zones.get(zone)
    if not isinstance(target, dict):
        raise StepParamsError(
            f"step {spec.key}: record zone {zone!r} has no target in params.zones; add the "
            "zone to the fabric's dns_zones and recompile the run"
        )
    return {**target, "zone": zone}


def update_dns(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """Switch, verify, and record the previous records for RESTORE_DNS / compensation."""
    records = param(spec, "records", list, [])
    zones = param(spec, "zones", dict, {})
    addresses = _addresses(ctx, spec)
    snapshots: list[dict[str, Any]] = []
    done: list[dict[str, Any]] = []
    try:
        for record in records:
            zone = str(record["zone"])
            name = str(record["name"])
            target = _target(zones, zone, spec)
            ops = ctx.dns(target)
            old, changed = ops.switch(
                name, addresses, ttl=record.get("ttl"), ptr=bool(record.get("ptr", False))
            )
            if changed:
                snapshots.append({"target": target, "snapshot": old})
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


def _undo(snapshots: list[dict[str, Any]]) -> dict[str, Any] | None:
    return {"action": "restore_dns", "snapshots": snapshots} if snapshots else None


def restore_dns(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """Put back the snapshots UPDATE_DNS captured (``params["snapshots"]``); idempotent."""
    snapshots = param(spec, "snapshots", list, [])
    restored: list[str] = []
    for entry in reversed(snapshots):
        target = entry.get("target")
        snapshot = entry.get("snapshot")
        if not isinstance(target, dict) or not isinstance(snapshot, dict):
            raise StepParamsError(
                f"step {spec.key}: restore_dns needs snapshots of {{target, snapshot}} as "
                "update_dns records them"
            )
        if ctx.dns(target).restore(snapshot):
            restored.extend(str(r.get("name")) for r in snapshot.get("records", []))
    return StepOutcome(result={"restored": restored}, changed=bool(restored))
