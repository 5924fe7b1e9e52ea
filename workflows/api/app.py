"""The FastAPI application: ``/api/v1`` (plans, runs, gates, follow-ups), health and readiness.

Every route under ``/api/v1`` needs a token (:mod:`workflows.api.auth`); reads need the
``read`` permission, actions the permission :mod:`workflows.api.actions` names. Errors are JSON
``{"detail": "one line saying what to fix"}``: 401 no or bad token, 403 role, 404 unknown run
or plan, 409 the run is not in a state for that, 422 invalid input.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text
from sqlmodel import col, select
from starlette.concurrency import run_in_threadpool

from plans.bundle import UnknownPlan
from plans.errors import ConfigurationError, FerrymanError
from plans.problems import PlanInvalid
from workflows import report
from workflows.api import actions
from workflows.api.auth import Administrator, Caller, DenialThrottle, Reader, record_denial
from workflows.api.services import Services
from workflows.compiler import RunOperation
from workflows.drills import DrillScheduleNotFound
from workflows.engine import RunStateError
from workflows.notifications import WebhookNotFound
from workflows.operations import Outcome
from workflows.statuses import TERMINAL_RUN, RunStatus
from workflows.store import Conflict, Run, RunNotFound, repository
from workflows.store.views import run_summary
from workflows.tokens import Permission, Principal
from workflows.waiting import apoll

API = "/api/v1"
FOLLOW_INTERVAL = 0.5  # seconds between reads of a followed run


class StartRun(BaseModel):
    """``POST /api/v1/runs``: which plan, which failover."""

    model_config = ConfigDict(extra="forbid")

    plan: str = Field(min_length=1, max_length=128)
    type: Literal["test", "planned", "unplanned"]
    direction: Literal["failover", "failback"] = "failover"
    options: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)


class Decision(BaseModel):
    """Approve or reject a gate, with why (a retried request with the same key is answered
    with the first one's outcome)."""

    model_config = ConfigDict(extra="forbid")

    comment: str = Field(default="", max_length=4000)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)


class FollowUp(BaseModel):
    """A follow-up run (cleanup, commit, reverse, cancel-failover) with the operator's notes."""

    model_config = ConfigDict(extra="forbid")

    notes: str = Field(default="", max_length=4000)


class Cancel(BaseModel):
    """Why a run is stopped."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=4000)


class NewWebhook(BaseModel):
    """``POST /api/v1/webhooks``: where to send which notifications, signed with which key."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    url: str = Field(min_length=8, max_length=2000)
    secret: str = Field(min_length=5, max_length=300, description="env:NAME or file:PATH")
    events: list[str] = Field(min_length=1)
    plan: str | None = Field(default=None, max_length=128)


def outcome_json(outcome: Outcome) -> dict[str, Any]:
    """What an action did: the run it acted on or started, and how."""
    return {
        **run_summary(outcome.run),
        "action": outcome.action,
        "target": outcome.target.id if outcome.target else None,
        "dispatched": outcome.dispatched,
        "replayed": outcome.replayed,
        "detail": outcome.detail,
    }


def _status_for(exc: FerrymanError) -> int:
    if isinstance(exc, actions.Forbidden):
        return 403
    if isinstance(exc, RunNotFound | UnknownPlan | WebhookNotFound | DrillScheduleNotFound):
        return 404
    if isinstance(exc, RunStateError | Conflict):
        return 409
    if isinstance(exc, PlanInvalid | ConfigurationError):
        return 422
    return 400


def services_of(request: Request) -> Services:
    """The services the app was built with."""
    services: Services = request.app.state.services
    return services


Svc = Annotated[Services, Depends(services_of)]


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split()) if not isinstance(exc, PlanInvalid) else str(exc)


def create_app(services: Services) -> FastAPI:
    """The API and console over ``services``."""
    from workflows.api import console, console_admin, drill_routes, metrics

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        notifier = None
        if services.notify_interval is not None:
            from workflows.notifications import Notifier

            notifier = Notifier(
                services.db,
                interval=services.notify_interval,
                readings=services.replication,
                backoff=services.notify_backoff,
            ).start()
        ticker = None
        if services.drill_interval is not None:
            from workflows.drills import Drills, DrillTicker, plans_loader

            drills = Drills(services.engine, plans_loader(services.settings))
            ticker = DrillTicker(drills, interval=services.drill_interval).start()
        try:
            yield
        finally:
            if ticker is not None:
                ticker.stop()
            if notifier is not None:
                notifier.stop()

    app = FastAPI(
        lifespan=lifespan,
        title="Ferryman",
        version="1",
        description="Disaster-recovery orchestration for Hyper-V Replica sites.",
        docs_url=None,
        redoc_url=None,
    )
    if services.trusted is None:
        from workflows.api.sso import TrustedHeader

        services.trusted = TrustedHeader.from_settings(services.settings)
    app.state.services = services
    app.state.denials = DenialThrottle()

    @app.exception_handler(FerrymanError)
    async def ferryman_error(request: Request, exc: FerrymanError) -> JSONResponse:
        if isinstance(exc, actions.Forbidden):
            await run_in_threadpool(
                record_denial,
                request,
                403,
                str(exc),
                principal=exc.principal,
                needed=exc.needed,
            )
        return JSONResponse({"detail": _one_line(exc)}, status_code=_status_for(exc))

    app.include_router(system_router())
    app.include_router(api_router(), prefix=API)
    app.include_router(drill_routes.router(), prefix=API)
    app.include_router(metrics.router())
    app.include_router(console.router())
    app.include_router(console_admin.router())
    app.mount("/static", StaticFiles(packages=[("workflows.api", "static")]), name="static")
    return app


def system_router() -> APIRouter:
    """``/healthz`` (the process answers) and ``/readyz`` (the store and broker answer)."""
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @router.get("/readyz")
    def readyz(services: Svc) -> JSONResponse:
        """The store answers a query and the broker accepts a connection."""
        checks: dict[str, str] = {}
        try:
            with services.db.session() as session:
                session.exec(text("SELECT 1"))  # type: ignore[call-overload]
            checks["database"] = "ok"
        except Exception as exc:  # any failure means not ready; say which
            checks["database"] = f"unavailable: {type(exc).__name__}: {exc}"
        url = services.settings.broker_url
        if url.startswith("memory://"):
            checks["broker"] = "ok (in-memory)"
        else:
            from kombu import Connection

            try:
                with Connection(url, connect_timeout=2) as conn:
                    conn.ensure_connection(max_retries=1, timeout=2)
                checks["broker"] = "ok"
            except Exception as exc:  # the broker refused or is unreachable
                checks["broker"] = f"unavailable: {type(exc).__name__}: {exc}"
        ready = all(v.startswith("ok") for v in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    return router


def _plan_json(name: str, plan: Any) -> dict[str, Any]:
    data = plan.model_dump(mode="json")
    return {
        "name": name,
        "pairing": plan.pairing,
        "description": data.get("description", ""),
        "rto": data.get("rto"),
        "vms": list(plan.vm_names()),
        "groups": [
            {"name": g.get("name"), "vms": [vm.get("name") for vm in g.get("vms", [])]}
            for g in data.get("groups", [])
        ],
    }


def api_router() -> APIRouter:
    """Everything under ``/api/v1``."""
    router = APIRouter()

    # -- plans

    @router.get("/plans", tags=["plans"])
    def list_plans(services: Svc, _who: Reader) -> list[dict[str, Any]]:
        """The plans of the configured plan files."""
        bundle = services.bundle()
        return [_plan_json(name, plan) for name, plan in sorted(bundle.plans.items())]

    @router.get("/plans/{name}", tags=["plans"])
    def show_plan(name: str, services: Svc, _who: Reader) -> dict[str, Any]:
        """One plan: its groups, VMs and actions."""
        bundle = services.bundle()
        plan = bundle.plan(name)
        return {**_plan_json(name, plan), "plan": plan.model_dump(mode="json")}

    @router.post("/plans/validate", tags=["plans"])
    def validate_plans(services: Svc, _who: Reader) -> dict[str, Any]:
        """Every problem in the configured plan files, as ``FILE:LINE:COL: message``."""
        found = services.validation()
        return {
            "ok": found.ok,
            "errors": [str(p) for p in found.errors],
            "warnings": [str(p) for p in found.warnings],
            "files": found.bundle.files if found.bundle else [],
        }

    @router.get("/plans/{name}/check", tags=["plans"])
    def check_plan(
        name: str,
        services: Svc,
        _who: Reader,
        type: Literal["test", "planned", "unplanned"] = "test",
        direction: Literal["failover", "failback"] = "failover",
    ) -> dict[str, Any]:
        """Readiness of a plan for a failover type against the live sites."""
        from dataclasses import asdict

        from workflows.compiler import compile_run
        from workflows.readiness import (
            Verdict,
            dns_checks,
            lock_checks,
            replication_checks,
            static_checks,
            worker_checks,
            zones_used,
        )

        bundle = services.bundle()
        plan = bundle.plan(name)
        compiled = compile_run(bundle.fabric, name, plan, type, direction)
        executor = services.executor()
        checks = static_checks(bundle.fabric, plan)
        held, holders = lock_checks(
            compiled, bundle.snapshot(), services.settings.database_url
        )
        checks += held
        checks += replication_checks(
            compiled,
            type,
            lambda: executor.context("readiness", type, direction, compiled.hosts, {}),
            holders,
        )
        if services.app is not None:
            checks += worker_checks(compiled, services.settings.broker_url, services.app)
        checks += dns_checks(zones_used(compiled))
        return {
            "plan": name,
            "type": type,
            "ready": not any(c.verdict is Verdict.FAIL for c in checks),
            "checks": [asdict(c) for c in checks],
        }

    # -- protection

    @router.get("/protection", tags=["protection"])
    def protection(services: Svc, _who: Reader) -> dict[str, Any]:
        """Desired against actual protection of every VM (as ``ferryman protect status``),
        and the latest protection jobs (runs that protect or unprotect VMs)."""
        from workflows.cli.protect import read_reports

        reports = read_reports(services.bundle(), services.settings)
        jobs = select(Run).where(
            col(Run.operation).in_([RunOperation.PROTECT.value, RunOperation.UNPROTECT.value])
        )
        with services.db.session() as session:
            recent = session.exec(jobs.order_by(col(Run.created_at).desc()).limit(20)).all()
        return {
            "in_sync": all(r.healthy for r in reports),
            "vms": [r.to_json() for r in reports],
            "jobs": [run_summary(r) for r in recent],
        }

    # -- runs

    @router.post("/runs", status_code=201, tags=["runs"])
    def start_run(body: StartRun, services: Svc, who: Caller) -> dict[str, Any]:
        """Start a failover of a configured plan (an idempotency key returns the same run)."""
        actions.require(who, actions.permission_for(body.type), f"start a {body.type} failover")
        outcome = services.actions.start(
            who,
            services.bundle(),
            body.plan,
            body.type,
            body.direction,
            options=body.options,
            idempotency_key=body.idempotency_key,
        )
        return outcome_json(outcome)

    @router.get("/runs", tags=["runs"])
    def list_runs(
        services: Svc,
        _who: Reader,
        status: Annotated[list[RunStatus] | None, Query()] = None,
        plan: str | None = None,
        operation: RunOperation | None = None,
        parent: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> list[dict[str, Any]]:
        """The most recent runs first, filtered by status, plan, operation or parent."""
        query = select(Run).order_by(col(Run.created_at).desc()).limit(limit)
        if status:
            query = query.where(col(Run.status).in_([s.value for s in status]))
        if plan:
            query = query.where(Run.plan == plan)
        if operation:
            query = query.where(Run.operation == operation.value)
        if parent:
            query = query.where(Run.parent_id == parent)
        with services.db.session() as session:
            return [run_summary(r) for r in session.exec(query).all()]

    @router.get("/runs/{run_id}", tags=["runs"])
    def get_run(run_id: str, services: Svc, _who: Reader) -> dict[str, Any]:
        """A run: its steps, gates, timeline, audit trail and follow-ups."""
        with services.db.session() as session:
            return report.build(session, run_id)

    @router.get("/runs/{run_id}/report", tags=["runs"], response_model=None)
    def run_report(
        run_id: str,
        services: Svc,
        _who: Reader,
        format: Literal["json", "html"] = "json",
    ) -> dict[str, Any] | HTMLResponse:
        """The auditors' report: JSON, or a self-contained HTML page (``?format=html``)."""
        with services.db.session() as session:
            data = report.build(session, run_id)
        if format == "html":
            return HTMLResponse(report.html_document(data))
        return data

    @router.get(
        "/runs/{run_id}/follow",
        tags=["runs"],
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def follow(run_id: str, request: Request, services: Svc, _who: Reader) -> Any:
        """The run as server-sent events: a ``run`` event each time it changes, ``end`` when
        it is finished."""
        first = await run_in_threadpool(_follow_state, services, run_id)  # 404 before streaming
        return StreamingResponse(
            _events(request, services, run_id, first),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    # -- gates

    def _gate(services: Services, run_id: str, gate: str) -> None:
        with services.db.session() as session:
            run = repository.get_run(session, run_id=run_id, with_inputs=False)
            approval = repository.approval_for(session, run_id=run.id, stage=run.current_stage)
        if run.status != RunStatus.WAITING or approval is None:
            raise RunStateError(f"run {run.id} is {run.status}, not waiting at a gate")
        if approval.name != gate:
            raise RunStateError(f"run {run.id} waits at gate {approval.name!r}, not {gate!r}")

    @router.post("/runs/{run_id}/gates/{gate}/approve", tags=["gates"])
    def approve(
        run_id: str, gate: str, body: Decision, services: Svc, who: Caller
    ) -> dict[str, Any]:
        """Approve the gate the run waits at; the run continues."""
        return _decide(services, who, run_id, gate, True, body)

    @router.post("/runs/{run_id}/gates/{gate}/reject", tags=["gates"])
    def reject(
        run_id: str, gate: str, body: Decision, services: Svc, who: Caller
    ) -> dict[str, Any]:
        """Reject the gate the run waits at; the run fails (a test run is then undone)."""
        return _decide(services, who, run_id, gate, False, body)

    def _decide(
        services: Services, who: Principal, run_id: str, gate: str, ok: bool, body: Decision
    ) -> dict[str, Any]:
        actions.require(who, Permission.DECIDE, "approve or reject gates")
        if body.idempotency_key is None:
            _gate(services, run_id, gate)
        outcome = services.actions.decide(
            who, run_id, approved=ok, comment=body.comment, idempotency_key=body.idempotency_key
        )
        return outcome_json(outcome)

    # -- follow-ups and run actions

    def _follow_up(operation: RunOperation, doc: str) -> None:
        path = operation.value.replace("_", "-")

        def handler(
            run_id: str, services: Svc, who: Caller, body: FollowUp | None = None
        ) -> dict[str, Any]:
            notes = body.notes if body else ""
            return outcome_json(services.actions.follow_up(who, run_id, operation, notes=notes))

        handler.__doc__ = doc
        router.add_api_route(
            f"/runs/{{run_id}}/{path}",
            handler,
            methods=["POST"],
            status_code=201,
            tags=["runs"],
            name=f"{operation.value}_run",
        )

    _follow_up(RunOperation.CLEANUP, "Clean up a test failover: a cleanup run (test VMs, DNS).")
    _follow_up(RunOperation.COMMIT, "Commit an unplanned failover (Complete-VMFailover).")
    _follow_up(
        RunOperation.CANCEL_FAILOVER,
        "Cancel an uncommitted unplanned failover (Stop-VMFailover).",
    )
    _follow_up(RunOperation.REVERSE, "Reverse replication after a committed unplanned failover.")

    @router.post("/runs/{run_id}/cancel", tags=["runs"])
    def cancel(
        run_id: str, services: Svc, who: Caller, body: Cancel | None = None
    ) -> dict[str, Any]:
        """Stop a run: nothing new starts; running steps finish."""
        reason = body.reason if body else ""
        return outcome_json(services.actions.cancel(who, run_id, reason=reason))

    @router.post("/runs/{run_id}/resume", tags=["runs"])
    def resume(run_id: str, services: Svc, who: Caller) -> dict[str, Any]:
        """Re-run a failed run's failed steps and continue."""
        return outcome_json(services.actions.resume(who, run_id))

    @router.post("/runs/{run_id}/compensate", tags=["runs"])
    def compensate(run_id: str, services: Svc, who: Caller) -> dict[str, Any]:
        """Undo a run's completed steps, newest first, as a run of its own (``target`` is
        the run undone; without a new run when there was nothing to undo)."""
        return outcome_json(services.actions.compensate(who, run_id))

    # -- webhooks

    @router.post("/webhooks", status_code=201, tags=["webhooks"])
    def create_webhook(body: NewWebhook, services: Svc, who: Administrator) -> dict[str, Any]:
        """Notify a URL (HMAC-signed JSON) of gate waits, failures, successes, RPO at risk."""
        from workflows.notifications import create_webhook as create

        with services.db.session() as session:
            hook = create(
                session,
                name=body.name,
                url=body.url,
                secret=body.secret,
                events=body.events,
                plan=body.plan,
                created_by=who.actor,
            )
            return _webhook_json(hook)

    @router.get("/webhooks", tags=["webhooks"])
    def list_webhooks(services: Svc, _who: Administrator) -> list[dict[str, Any]]:
        """Every webhook, disabled ones included."""
        from workflows.store.tables import Webhook

        with services.db.session() as session:
            return [_webhook_json(h) for h in session.exec(select(Webhook)).all()]

    @router.delete("/webhooks/{name}", tags=["webhooks"])
    def delete_webhook(name: str, services: Svc, _who: Administrator) -> dict[str, Any]:
        """Stop notifying a webhook (its deliveries stay on record)."""
        from workflows.notifications import disable_webhook

        with services.db.session() as session:
            return _webhook_json(disable_webhook(session, name=name))

    @router.get("/webhooks/{name}/deliveries", tags=["webhooks"])
    def deliveries(
        name: str,
        services: Svc,
        _who: Administrator,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        """Each notification sent to the webhook: attempts, last answer, when delivered."""
        from workflows.notifications import WebhookNotFound
        from workflows.store.tables import Webhook, WebhookDelivery

        with services.db.session() as session:
            hook = session.exec(select(Webhook).where(Webhook.name == name)).first()
            if hook is None:
                raise WebhookNotFound(f"no webhook named {name!r}")
            rows = session.exec(
                select(WebhookDelivery)
                .where(WebhookDelivery.webhook_id == hook.id)
                .order_by(col(WebhookDelivery.id))
                .limit(limit)
            ).all()
            return [
                {
                    "id": d.id,
                    "event": d.event,
                    "subject": d.subject,
                    "run": d.run_id,
                    "status": d.status,
                    "attempts": d.attempts,
                    "last_status": d.last_status,
                    "last_error": d.last_error,
                    "created_at": d.created_at.isoformat(),
                    "delivered_at": d.delivered_at.isoformat() if d.delivered_at else None,
                }
                for d in rows
            ]

    return router


def _webhook_json(hook: Any) -> dict[str, Any]:
    return {
        "name": hook.name,
        "url": hook.url,
        "secret": hook.secret_ref,
        "events": hook.events,
        "plan": hook.plan,
        "enabled": hook.enabled,
        "created_by": hook.created_by,
        "created_at": hook.created_at.isoformat(),
    }


def _follow_state(services: Services, run_id: str) -> dict[str, Any]:
    with services.db.session() as session:
        return report.build(session, run_id)


async def _events(
    request: Request, services: Services, run_id: str, first: dict[str, Any]
) -> AsyncIterator[str]:
    """``run`` each time the run's report changes (the first at once), ``end`` once it has
    finished; stops when the client goes away."""
    pending: list[dict[str, Any]] = [first]

    async def look() -> dict[str, Any] | None:
        if pending:
            return pending.pop()
        if await request.is_disconnected():
            return None
        return await run_in_threadpool(_follow_state, services, run_id)

    last = ""
    async for state in apoll(look, timeout=math.inf, interval=FOLLOW_INTERVAL):
        if state is None:
            return
        payload = json.dumps(state, separators=(",", ":"), default=str)
        if payload != last:
            last = payload
            yield f"event: run\ndata: {payload}\n\n"
        if RunStatus(state["run"]["status"]) in TERMINAL_RUN:
            yield f"event: end\ndata: {json.dumps({'status': state['run']['status']})}\n\n"
            return
