"""Dispatching a stage to Celery: a chord of the stage's units whose callback is ``advance``.

Signatures are built by task *name*, so the engine never imports task code; each stage is sent
on its own when the previous one finished (workflows/ARCHITECTURE.md: a whole plan as one
nested canvas makes every message carry the rest of the plan).
"""

from __future__ import annotations

from typing import Any

from celery import Celery, chord, group

from workflows.compiler import Stage
from workflows.steps import ENGINE_QUEUE, TASK_ADVANCE, TaskUnit


def unit_kwargs(run_id: str, stage: Stage, unit: TaskUnit) -> dict[str, Any]:
    """What a unit's task message carries: ids Flower shows first, then the steps (no secret)."""
    return {
        "run_id": run_id,
        "stage": stage.index,
        "group": unit.group,
        "vm": unit.vm,
        "unit_key": unit.key,
        "unit": unit.to_json(),
    }


class CeleryDispatcher:
    """Sends stages through a Celery app."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def dispatch(self, run_id: str, stage: Stage) -> None:
        """Send ``stage`` as chord(group(units)) -> advance(run_id, stage)."""
        callback = self.app.signature(
            TASK_ADVANCE,
            kwargs={"run_id": run_id, "stage": stage.index},
            queue=ENGINE_QUEUE,
            immutable=True,  # advance reads the store, not the units' return values
        )
        if not stage.units:
            callback.apply_async()
            return
        header = [
            self.app.signature(unit.task, kwargs=unit_kwargs(run_id, stage, unit), queue=unit.queue)
            for unit in stage.units
        ]
        chord(group(header), callback).apply_async()
