"""The protection reading the API shows: what ``ferryman protect status`` reads from the
hosts (lag on each primary's own clock, RPO at risk as protection judges it), taken at most once
per :data:`HEALTH_TTL` seconds and shared by ``/metrics``, the console's health table and the
``rpo_at_risk`` webhooks."""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from workflows.protection import VmReport, read_protection

if TYPE_CHECKING:
    from workflows.api.services import Services

log = logging.getLogger(__name__)

HEALTH_TTL = 15.0  # seconds a reading is reused (scrapes and the console poll it)


@dataclass
class Reading:
    """One protection reading of the hosts, with the plans each VM is in."""

    reports: list[VmReport] = field(default_factory=list)
    plans: dict[str, list[str]] = field(default_factory=dict)
    error: str = ""


class ProtectionReadings:
    """The reading ``ferryman protect status`` does, taken at most once per ``ttl`` seconds
    (scrapes in between get the same one; one reading at a time)."""

    def __init__(self, ttl: float = HEALTH_TTL) -> None:
        self.ttl = ttl
        self._taken: tuple[float, Reading] | None = None
        self._lock = threading.Lock()

    def get(self, services: Services) -> Reading:
        """The latest reading, taken now if the last one is older than ``ttl``."""
        with self._lock:
            if self._taken is not None and time.monotonic() - self._taken[0] < self.ttl:
                return self._taken[1]
            reading = self._read(services)
            self._taken = (time.monotonic(), reading)
            return reading

    @staticmethod
    def _read(services: Services) -> Reading:
        from workflows.compiler import _all_hosts
        from workflows.runtime import protection_reader

        try:
            bundle = services.bundle()
            fabric = bundle.fabric
            hosts = _all_hosts(fabric, list(fabric.sites))
            ctx = services.executor().context("metrics", "protect", "failover", hosts, {})
            reports = read_protection(fabric, protection_reader(ctx), datetime.now(UTC))
        except Exception as exc:  # a host down or a plan invalid: the other metrics still go
            log.warning("replication metrics: the hosts could not be read: %s", exc)
            return Reading(error=str(exc) or type(exc).__name__)
        plans: dict[str, list[str]] = defaultdict(list)
        for name, plan in sorted(bundle.plans.items()):
            for group in plan.groups:
                for vm in group.vms:
                    if name not in plans[vm.name]:
                        plans[vm.name].append(name)
        return Reading(reports, dict(plans))




def rows(reading: Reading) -> list[dict[str, Any]]:
    """One row per VM and plan it is in (a VM no plan names: plan ``-``): replica host,
    state, health, lag in seconds, whether its RPO is at risk; one error row when the hosts
    could not be read."""
    if reading.error:
        return [{"vm": "-", "plan": "-", "host": "-", "state": "unknown", "error": reading.error}]
    found: list[dict[str, Any]] = []
    for report in reading.reports:
        obs, want = report.observed, report.desired
        replica = obs.replica_host if obs else (want.replica_host if want else "")
        last = obs.last_replication if obs else None
        for plan in reading.plans.get(report.vm, ["-"]):
            found.append(
                {
                    "vm": report.vm,
                    "plan": plan,
                    "pairing": report.pairing,
                    "host": replica,
                    "primary_host": obs.host if obs else (want.primary_host if want else ""),
                    "state": obs.state if obs else "Disabled",
                    "health": obs.health if obs else "unknown",
                    "last_replication": last.isoformat() if last else None,
                    "lag": None if report.lag_seconds is None else round(report.lag_seconds, 1),
                    "rpo_at_risk": report.rpo_at_risk,
                    "error": "",
                }
            )
    return found
