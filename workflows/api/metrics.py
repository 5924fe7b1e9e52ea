"""Prometheus metrics at ``/metrics``, read from the store at each scrape.

The store is the only truth (runs are moved by many processes), so a collector reads it when
Prometheus asks instead of counters kept in this process: runs by type and outcome, step
durations by kind, time waiting at gates, RTO achieved per plan (its latest finished failover),
stages sent but not finished, and replication lag, health and RPO risk per VM from the reading
``ferryman protect status`` does (lag on each primary's own clock), taken at most every 15 s.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    CollectorRegistry,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from sqlmodel import col, select

from workflows import report
from workflows.api.services import Services
from workflows.compiler import RunOperation
from workflows.statuses import RunStatus
from workflows.store import Approval, Run, Step

STEP_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
GATE_BUCKETS = (1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 24 * 3600.0)
HEALTH = {"Normal": 0, "Warning": 1, "Critical": 2}
RECENT_STEPS = 100_000  # durations of at most this many latest steps go into the histograms
log = logging.getLogger(__name__)


def _histogram(
    name: str, doc: str, label: str, values: dict[str, list[float]], buckets: tuple[float, ...]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=[label])
    for key, seconds in sorted(values.items()):
        counts = []
        for bound in buckets:
            counts.append((str(bound), sum(1 for s in seconds if s <= bound)))
        counts.append(("+Inf", len(seconds)))
        family.add_metric([key], counts, sum_value=sum(seconds))
    return family


class StoreCollector:
    """Reads the figures from the store (and live replication) at each collection."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Iterator[Metric]:
        """The metric families, as of now."""
        with self.services.db.session() as session:
            runs = session.exec(select(Run.operation, Run.status)).all()
            steps = session.exec(
                select(Step.kind, Step.started_at, Step.finished_at)
                .where(col(Step.finished_at).is_not(None))
                .order_by(col(Step.id).desc())
                .limit(RECENT_STEPS)
            ).all()
            gates = session.exec(select(Approval.requested_at, Approval.decided_at)).all()
            open_stages = session.exec(
                select(Run.id).where(
                    Run.status == RunStatus.RUNNING.value,
                    col(Run.dispatched_stage).is_not(None),
                )
            ).all()
            latest: dict[str, dict[str, Any]] = {}
            finished = session.exec(
                select(Run)
                .where(
                    col(Run.operation).in_(
                        [RunOperation.TEST, RunOperation.PLANNED, RunOperation.UNPLANNED]
                    ),
                    Run.status == RunStatus.SUCCEEDED.value,
                )
                .order_by(col(Run.finished_at).desc())
                .limit(200)
            ).all()
            for run in finished:
                if run.plan not in latest:
                    latest[run.plan] = report.build(session, run.id)["rto"]

        by_outcome = GaugeMetricFamily(
            "ferryman_runs", "Runs in the store by type and outcome", labels=["type", "status"]
        )
        for (operation, status), count in sorted(Counter(runs).items()):
            by_outcome.add_metric([operation, status], count)
        yield by_outcome

        durations: dict[str, list[float]] = defaultdict(list)
        for kind, started, ended in steps:
            if started is not None and ended is not None:
                durations[kind].append((ended - started).total_seconds())
        yield _histogram(
            "ferryman_step_duration_seconds",
            "Step durations by kind",
            "kind",
            durations,
            STEP_BUCKETS,
        )

        waits = [
            (decided - requested).total_seconds()
            for requested, decided in gates
            if requested is not None and decided is not None
        ]
        yield _histogram(
            "ferryman_gate_wait_seconds",
            "Time runs waited at gates until decided",
            "scope",
            {"all": waits},
            GATE_BUCKETS,
        )
        waiting = GaugeMetricFamily("ferryman_gates_open", "Gates waiting for a decision now")
        waiting.add_metric([], sum(1 for _r, decided in gates if decided is None))
        yield waiting

        rto = GaugeMetricFamily(
            "ferryman_rto_achieved_seconds",
            "RTO achieved by the latest successful failover of each plan (start to last VM up)",
            labels=["plan", "gates"],
        )
        target = GaugeMetricFamily(
            "ferryman_rto_target_seconds", "The plan's rto target", labels=["plan"]
        )
        for plan, figures in sorted(latest.items()):
            if figures["achieved"] is not None:
                rto.add_metric([plan, "included"], figures["achieved"])
                rto.add_metric([plan, "excluded"], figures["achieved_without_gates"])
            if figures["target"] is not None:
                target.add_metric([plan], figures["target"])
        yield rto
        yield target

        stages = GaugeMetricFamily(
            "ferryman_stages_unfinished",
            "Runs whose current stage was dispatched and has not finished",
        )
        stages.add_metric([], len(open_stages))
        yield stages

        yield from self._replication()

    def _replication(self) -> Iterator[Metric]:
        labels = ["plan", "pairing", "vm", "host", "replica_host"]
        lag = GaugeMetricFamily(
            "ferryman_replication_lag_seconds",
            "Seconds since the VM's last replication, on its primary host's own clock (as "
            "ferryman protect status reads it)",
            labels=labels,
        )
        health = GaugeMetricFamily(
            "ferryman_replication_health",
            "Replication health per VM: 0 Normal, 1 Warning, 2 Critical, -1 unknown",
            labels=[*labels, "state"],
        )
        at_risk = GaugeMetricFamily(
            "ferryman_replication_rpo_at_risk",
            "1 when the VM's lag passed two copy intervals or its health is Critical",
            labels=labels,
        )
        read = GaugeMetricFamily(
            "ferryman_replication_read_ok",
            "1 when the protection reading of the hosts succeeded (0: see the server's log)",
        )
        if self.services.settings.plan_paths:
            reading = self.services.protection()
            read.add_metric([], 0 if reading.error else 1)
            for report in reading.reports:
                obs, want = report.observed, report.desired
                host = obs.host if obs else (want.primary_host if want else "")
                replica = obs.replica_host if obs else (want.replica_host if want else "")
                for plan in reading.plans.get(report.vm, [""]):
                    names = [plan, report.pairing, report.vm, host, replica]
                    if report.lag_seconds is not None:
                        lag.add_metric(names, report.lag_seconds)
                    state = obs.state if obs else "Disabled"
                    health.add_metric([*names, state], HEALTH.get(obs.health if obs else "", -1))
                    at_risk.add_metric(names, 1 if report.rpo_at_risk else 0)
        yield lag
        yield health
        yield at_risk
        yield read


def router() -> APIRouter:
    """``GET /metrics`` in the Prometheus text format (no token: scrape it from inside)."""
    routes = APIRouter(tags=["metrics"])
    @routes.get("/metrics", response_class=Response)
    def metrics(request: Request) -> Response:
        """Prometheus metrics."""
        services: Services = request.app.state.services
        registry = CollectorRegistry(auto_describe=False)
        registry.register(StoreCollector(services))
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return routes
