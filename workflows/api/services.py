"""What the API's handlers work with: the engine, the store, the plans, live replication reads.

Plans come from the configured plan files (``FERRYMAN_PLAN_PATHS``), read afresh on each use
so edits apply without a restart, as the queue triggers do.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from plans import Bundle
from plans.bundle import ValidationReport, validate
from plans.errors import FerrymanError
from workflows.api.actions import Actions
from workflows.api.sso import TrustedHeader
from workflows.compiler import compile_run
from workflows.engine import Engine
from workflows.notifications import Backoff
from workflows.operations import Operations
from workflows.settings import Settings
from workflows.store import Database
from workflows.triggers import plan_files

HEALTH_TTL = 15.0  # seconds a replication reading is reused (the console polls it)


@dataclass
class Services:
    """The engine, its store and settings, plus how to read plans and live replication."""

    engine: Engine
    settings: Settings
    app: Any = None  # the Celery app (worker checks), when there is one
    executor_factory: Callable[[], Any] | None = None
    # seconds between rounds of the webhook notifier (None: this process sends none)
    notify_interval: float | None = None
    notify_backoff: Backoff | None = None
    # seconds between ticks of the drill schedules in this process (None: Celery beat ticks;
    # ``ferryman serve`` ticks itself with the in-memory broker, which no beat can reach)
    drill_interval: float | None = None
    # single sign-on by a trusted proxy's header (None: taken from the settings' api_trusted_
    # fields when the app is made; off unless they are set)
    trusted: TrustedHeader | None = None
    _health: tuple[float, list[dict[str, Any]]] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def actions(self) -> Actions:
        """The operator actions, each behind its role check."""
        return Actions(Operations(self.engine))

    @property
    def db(self) -> Database:
        """The store."""
        return self.engine.db

    def validation(self) -> ValidationReport:
        """Every problem in the configured plan files."""
        files = plan_files(self.settings.plan_paths)
        if not files:
            raise FerrymanError("no plan files configured: set FERRYMAN_PLAN_PATHS")
        return validate(files)

    def bundle(self) -> Bundle:
        """The configured plan files as a bundle (raises when they have errors)."""
        from plans.problems import PlanInvalid

        report = self.validation()
        if report.bundle is None:
            raise PlanInvalid(report.problems)
        return report.bundle

    def executor(self) -> Any:
        """The step executor used for live reads of the sites."""
        if self.executor_factory is None:
            from workflows.runtime import executor_for

            self.executor_factory = lambda: executor_for(self.settings)
        return self.executor_factory()

    def replication(self, *, fresh: bool = False) -> list[dict[str, Any]]:
        """Each planned VM's replication on its replica host: state, health, lag (cached)."""
        with self._lock:
            if not fresh and self._health and time.monotonic() - self._health[0] < HEALTH_TTL:
                return self._health[1]
        readings = self._read_replication()
        with self._lock:
            self._health = (time.monotonic(), readings)
        return readings

    def _read_replication(self) -> list[dict[str, Any]]:
        try:
            bundle = self.bundle()
        except FerrymanError as exc:
            return [{"vm": "-", "plan": "-", "host": "-", "state": "unknown", "error": str(exc)}]
        executor = self.executor()
        readings: list[dict[str, Any]] = []
        now = datetime.now(UTC)
        for name, plan in sorted(bundle.plans.items()):
            try:
                compiled = compile_run(bundle.fabric, name, plan, "test")
                ctx = executor.context("health", "test", "failover", compiled.hosts, {})
            except FerrymanError as exc:
                readings.append(
                    {"vm": "-", "plan": name, "host": "-", "state": "unknown", "error": str(exc)}
                )
                continue
            for _stage, _unit, spec in compiled.steps():
                if spec.kind.value != "test_failover" or not spec.vm or not spec.host:
                    continue
                reading: dict[str, Any] = {"vm": spec.vm, "plan": name, "host": spec.host}
                try:
                    info = ctx.hyperv(spec.host).get_replication(spec.vm)
                except FerrymanError as exc:
                    reading.update(state="unknown", health="unknown", error=str(exc))
                else:
                    last = info.last_replication_time
                    if last is not None and last.tzinfo is None:
                        last = last.replace(tzinfo=UTC)
                    reading.update(
                        state=str(info.state.value),
                        health=str(info.health.value),
                        last_replication=last.isoformat() if last else None,
                        lag=round((now - last).total_seconds(), 1) if last else None,
                        error="",
                    )
                readings.append(reading)
        return readings
