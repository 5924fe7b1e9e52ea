"""``/api/v1/plans/{plan}/drill`` (a plan's drill schedule), ``/api/v1/drills`` (schedules and
recent drills) and ``/api/v1/audit`` (the audit trail outside runs: denied requests, schedule
changes).

A viewer reads schedules and drills; an administrator sets and removes schedules, and each
change is written to the audit trail with its principal. The audit listing is for
administrators.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import col, select

from workflows import drills
from workflows.api.auth import Administrator, Reader
from workflows.api.services import Services
from workflows.store import AuditEvent


class DrillSchedule(BaseModel):
    """``PUT /api/v1/plans/{plan}/drill``: when to drill the plan."""

    model_config = ConfigDict(extra="forbid")

    cron: str = Field(
        min_length=1,
        max_length=200,
        description="five fields: minute hour day-of-month month day-of-week, e.g. '0 3 * * sun'",
    )
    timezone: str = Field(default="UTC", min_length=1, max_length=64)


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


Svc = Annotated[Services, Depends(_services)]


def router() -> APIRouter:
    """The drill and audit routes (mounted under ``/api/v1``)."""
    routes = APIRouter()

    @routes.get("/plans/{plan}/drill", tags=["drills"])
    def get_drill(plan: str, services: Svc, _who: Reader) -> dict[str, Any]:
        """The plan's drill schedule (its next slot) and its latest drills."""
        with services.db.session() as session:
            schedule = drills.get_schedule(session, plan)
            return {
                **drills.schedule_json(schedule),
                "drills": [drills.drill_json(d) for d in drills.drills_of(session, plan)],
            }

    @routes.put("/plans/{plan}/drill", tags=["drills"])
    def put_drill(
        plan: str, body: DrillSchedule, services: Svc, who: Administrator
    ) -> dict[str, Any]:
        """Drill the plan at the slots of a cron expression (in a time zone, UTC by default):
        a test failover, the plan's health checks, cleanup, the report kept."""
        services.bundle().plan(plan)  # 404 for a plan the plan files do not have
        with services.db.session() as session:
            schedule = drills.set_schedule(
                session, plan=plan, cron=body.cron, timezone=body.timezone, by=who.actor
            )
            return drills.schedule_json(schedule)

    @routes.delete("/plans/{plan}/drill", tags=["drills"])
    def delete_drill(plan: str, services: Svc, who: Administrator) -> dict[str, Any]:
        """Stop drilling the plan (its drills stay on record)."""
        with services.db.session() as session:
            schedule = drills.remove_schedule(session, plan=plan, by=who.actor)
            return {"plan": schedule.plan, "removed": True}

    @routes.get("/drills", tags=["drills"])
    def list_drills(
        services: Svc,
        _who: Reader,
        plan: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> dict[str, Any]:
        """Every drill schedule, and the latest drills (of one plan)."""
        with services.db.session() as session:
            return {
                "schedules": [drills.schedule_json(s) for s in drills.list_schedules(session)],
                "drills": [drills.drill_json(d) for d in drills.drills_of(session, plan, limit)],
            }

    @routes.get("/audit", tags=["audit"])
    def audit(
        services: Svc,
        _who: Administrator,
        event: str | None = None,
        run: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        """The audit trail, newest first: run events, and (``run`` empty) denied requests and
        drill schedule changes."""
        query = select(AuditEvent).order_by(col(AuditEvent.id).desc()).limit(limit)
        if event:
            query = query.where(AuditEvent.event == event)
        if run is not None:
            query = query.where(AuditEvent.run_id == run)
        with services.db.session() as session:
            return [
                {
                    "id": e.id,
                    "at": e.at.isoformat(),
                    "run": e.run_id or None,
                    "event": e.event,
                    "actor": e.actor,
                    "message": e.message,
                    "data": e.data,
                }
                for e in session.exec(query).all()
            ]

    return routes
