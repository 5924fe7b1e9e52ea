"""A running step's progress in its record: the figures a long step reports (an initial
replication's percent and bytes), written to the step's ``result`` while it runs.

The executor reports as often as it reads its host; the store gets at most one write per
``interval`` seconds per step, plus the last figures when the step ends without success (a
success writes its own result, which carries the final figures). A write goes through only
while the step is running and held by this delivery, so a step taken over meanwhile is left
to its new owner. ``ferryman runs show``, ``runs follow`` and the API's run view read it back
from ``result["progress"]``; no column of its own is needed.
"""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType
from typing import Any

from sqlalchemy import update
from sqlmodel import col

from workflows.statuses import StepStatus
from workflows.store import Database, Step
from workflows.store.steprows import StepRow

log = logging.getLogger(__name__)

INTERVAL = 2.0  # seconds: at most one progress write per step this often
KEY = "progress"


def last_progress(result: dict[str, Any] | None) -> dict[str, Any] | None:
    """The progress an earlier start of a step recorded in its ``result``, if any."""
    found = (result or {}).get(KEY)
    return dict(found) if isinstance(found, dict) else None


class StepProgress:
    """Throttled progress writes for one running step (a context manager around its run)."""

    def __init__(
        self,
        db: Database,
        step: Step | StepRow,
        delivery: str | None,
        *,
        interval: float = INTERVAL,
    ) -> None:
        self.db = db
        self.step_id = step.id
        self.delivery = delivery
        self.interval = interval
        # as read with the step (an ORM row's column left unread is never loaded afresh)
        self.last = last_progress(step.__dict__.get("result"))
        self._written_at: float | None = None
        self._unwritten: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def attach(self, ctx: Any) -> None:
        """Give the step's context this writer as its progress hook (a context without
        one, e.g. a test's fake, is left as it is)."""
        if hasattr(ctx, "on_progress"):
            ctx.on_progress = self.report
            ctx.last_progress = self.last

    def report(self, figures: dict[str, Any]) -> None:
        """The executor's latest figures: written now unless written under ``interval`` ago."""
        now = time.monotonic()
        with self._lock:
            self.last = dict(figures)
            if self._written_at is not None and now - self._written_at < self.interval:
                self._unwritten = self.last
                return
            self._written_at = now
            self._unwritten = None
        self._write(dict(figures))

    def flush(self) -> None:
        """Write figures held back by the throttle (the step ends without success)."""
        with self._lock:
            pending, self._unwritten = self._unwritten, None
        if pending is not None:
            self._write(pending)

    def __enter__(self) -> StepProgress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if error is not None:
            try:
                self.flush()
            except Exception as exc:  # the step's own failure matters more than its figures
                log.warning("progress of step %s could not be recorded: %s", self.step_id, exc)

    def _write(self, figures: dict[str, Any]) -> None:
        if self.step_id is None:
            return
        owner = (
            col(Step.task_id).is_(None)
            if self.delivery is None
            else col(Step.task_id) == self.delivery
        )
        try:
            with self.db.session() as session:
                session.execute(
                    update(Step)
                    .where(
                        col(Step.id) == self.step_id,
                        col(Step.status) == StepStatus.RUNNING.value,
                        owner,
                    )
                    .values(result={KEY: figures})
                    .execution_options(synchronize_session=False)
                )
        except Exception as exc:  # a store hiccup: the next report writes again
            log.warning("progress of step %s could not be recorded: %s", self.step_id, exc)
            with self._lock:
                self._written_at = None
