"""What the API's handlers work with: the engine, the store, the plans, live replication reads.

Plans come from the configured plan files (``FERRYMAN_PLAN_PATHS``), read afresh on each use
so edits apply without a restart, as the queue triggers do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from plans import Bundle
from plans.bundle import ValidationReport, validate
from plans.errors import FerrymanError
from workflows.api.actions import Actions
from workflows.api.readings import ProtectionReadings, Reading, rows
from workflows.api.sso import TrustedHeader
from workflows.engine import Engine
from workflows.notifications import Backoff
from workflows.operations import Operations
from workflows.settings import Settings
from workflows.store import Database
from workflows.triggers import plan_files


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
    _readings: ProtectionReadings = field(default_factory=ProtectionReadings, repr=False)

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

    def protection(self) -> Reading:
        """The hosts' protection as ``ferryman protect status`` reads it (reused for
        :data:`~workflows.api.readings.HEALTH_TTL` seconds)."""
        return self._readings.get(self)

    def replication(self) -> list[dict[str, Any]]:
        """Each VM's replication: replica host, state, health, lag, RPO at risk (cached)."""
        return rows(self.protection())
