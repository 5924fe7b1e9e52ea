"""Rows as JSON, one shape wherever a run is listed: the API, ``ferryman runs list|show
--json`` and webhook payloads."""

from __future__ import annotations

from typing import Any

from workflows.store.tables import Run


def run_summary(run: Run) -> dict[str, Any]:
    """A run's row as listed: what it is, where it stands, when, and its error."""
    return {
        "id": run.id,
        "plan": run.plan,
        "operation": run.operation,
        "direction": run.direction,
        "status": run.status,
        "parent": run.parent_id,
        "requested_by": run.requested_by,
        "current_stage": run.current_stage,
        "created_at": run.created_at.isoformat(),
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "error": run.error,
    }
