"""The web console: server-rendered pages over the same actions as the API, no CDN.

Pages: an overview (gates waiting, recent runs, replication health), the run history, the
drills (every plan's schedule and the latest drills, linked to their reports), a run's
page (a live Gantt of its stages and steps, its gate with approve/reject for those allowed,
cleanup, the report), starting a failover after a confirmation naming its VMs, and the
auditors' report. The one script (``static/console.js``) follows a run's server-sent events
and swaps in its timeline; everything works offline.

Sign-in is a token pasted once (``/login``) and kept in an HttpOnly, SameSite=Strict cookie;
each form posts to the console's own origin, which :mod:`workflows.api.auth` requires.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import col, select
from starlette.concurrency import run_in_threadpool

from plans.errors import FerrymanError
from workflows import drills, report
from workflows.api.actions import Forbidden, permission_for
from workflows.api.auth import COOKIE, authenticated, current_principal, record_denial
from workflows.api.services import Services
from workflows.compiler import RunOperation
from workflows.statuses import TERMINAL_RUN, RunStatus
from workflows.store import Run, repository
from workflows.tokens import Permission, Principal, authenticate

MAX_FORM_BYTES = 64 * 1024


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _badge(status: str) -> str:
    return f'<span class="badge {_e(status)}">{_e(status)}</span>'


def page(title: str, body: str, who: Principal | None, *, status_code: int = 200) -> HTMLResponse:
    """A console page with its navigation."""
    nav = ""
    if who is not None:
        nav = (
            '<nav><a href="/">Overview</a> <a href="/runs">Runs</a> <a href="/drills">Drills</a> '
            + ('<a href="/start">Start a test failover</a> ' if who.may(Permission.TEST) else "")
            + (
                '<a href="/tokens">Tokens</a> <a href="/webhooks">Webhooks</a> '
                if who.may(Permission.ADMINISTER)
                else ""
            )
            + f'<span class="who">signed in as <b id="principal">{_e(who.name)}</b> '
            f"({_e(who.role.value)})</span>"
            '<form method="post" action="/logout" class="inline">'
            '<button type="submit">Sign out</button></form></nav>'
        )
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)} - Ferryman</title>"
        '<link rel="stylesheet" href="/static/console.css">'
        '<script src="/static/console.js" defer></script></head>'
        f'<body><header><a class="brand" href="/">Ferryman</a>{nav}</header>'
        f"<main>{body}</main></body></html>"
    )
    return HTMLResponse(document, status_code=status_code)


def _principal(request: Request) -> Principal | None:
    """The signed-in principal, or None (the page then asks to sign in: not a refusal)."""
    try:
        return authenticated(request, audit=False)
    except HTTPException:
        return None


def _refused(request: Request, who: Principal, exc: Forbidden) -> HTMLResponse:
    record_denial(request, 403, str(exc), principal=who, needed=exc.needed)
    return _error_page(who, 403, str(exc))


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise HTTPException(413, "form too large")
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {key: values[-1] for key, values in parsed.items()}


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _runs_table(runs: list[Run]) -> str:
    if not runs:
        return '<p class="empty">No runs yet.</p>'
    rows = "".join(
        f'<tr><td><a class="run-link" href="/runs/{_e(r.id)}">{_e(r.id)}</a></td>'
        f"<td>{_e(r.plan)}</td><td>{_e(r.operation)}</td><td>{_e(r.direction)}</td>"
        f"<td>{_badge(r.status)}</td><td>{_e(r.requested_by)}</td>"
        f"<td>{_e(f'{r.created_at:%Y-%m-%d %H:%M:%S}')}</td></tr>"
        for r in runs
    )
    return (
        '<table class="runs"><thead><tr><th>run</th><th>plan</th><th>operation</th>'
        "<th>direction</th><th>status</th><th>requested by</th><th>created (UTC)</th></tr>"
        f"</thead><tbody>{rows}</tbody></table>"
    )


def _health_table(readings: list[dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td>{_e(r['vm'])}</td><td>{_e(r['plan'])}</td><td>{_e(r['host'])}</td>"
        f"<td>{_e(r.get('state'))}</td><td>{_badge(str(r.get('health', 'unknown')))}</td>"
        f"<td>{_e(r.get('lag'))}</td><td>{_e(r.get('error'))}</td></tr>"
        for r in readings
    )
    return (
        '<table class="health"><thead><tr><th>VM</th><th>plan</th><th>replica host</th>'
        "<th>state</th><th>health</th><th>lag (s)</th><th>error</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def _error_page(who: Principal | None, status: int, message: str) -> HTMLResponse:
    return page(
        "Refused" if status == 403 else "Error",
        f'<p class="error" id="error">{_e(message)}</p><p><a href="/">Back</a></p>',
        who,
        status_code=status,
    )


def router() -> APIRouter:
    """The console's pages (left out of the OpenAPI document)."""
    routes = APIRouter(include_in_schema=False)

    def signed_in(
        handler: Callable[[Request, Principal], Response],
    ) -> Callable[[Request], Any]:
        async def wrapped(request: Request) -> Response:
            who = _principal(request)
            if who is None:
                return RedirectResponse(f"/login?next={quote(request.url.path)}", 303)
            try:
                return await run_in_threadpool(handler, request, who)
            except Forbidden as exc:
                return await run_in_threadpool(_refused, request, who, exc)
            except FerrymanError as exc:
                from workflows.api.app import _status_for

                return _error_page(who, _status_for(exc), str(exc))

        return wrapped

    # -- sign-in

    @routes.get("/login")
    def login_page(request: Request) -> HTMLResponse:
        target = request.query_params.get("next", "/")
        return page(
            "Sign in",
            '<h1>Sign in</h1><form method="post" action="/login" class="card">'
            f'<input type="hidden" name="next" value="{_e(target)}">'
            '<label>API token <input type="password" name="token" id="token" '
            'autocomplete="off" required></label>'
            '<button type="submit" id="sign-in">Sign in</button></form>'
            "<p>Tokens are made with <code>ferryman tokens create --name NAME --role ROLE</code>."
            "</p>",
            None,
        )

    @routes.post("/login")
    async def login(request: Request) -> Response:
        form = await _form(request)
        token = form.get("token", "").strip()
        services = _services(request)

        def check() -> Principal | None:
            with services.db.session() as session:
                return authenticate(session, token)

        who = await run_in_threadpool(check)
        if who is None:
            await run_in_threadpool(record_denial, request, 401, "sign-in with an unknown token")
            return page(
                "Sign in",
                '<p class="error" id="error">Unknown or revoked token.</p>'
                '<p><a href="/login">Try again</a></p>',
                None,
                status_code=401,
            )
        target = form.get("next", "/")
        if not target.startswith("/") or target.startswith("//"):
            target = "/"
        response = RedirectResponse(target, 303)
        response.set_cookie(
            COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @routes.post("/logout")
    def logout() -> Response:
        response = RedirectResponse("/login", 303)
        response.delete_cookie(COOKIE)
        return response

    # -- overview and history

    def overview(request: Request, who: Principal) -> Response:
        services = _services(request)
        with services.db.session() as session:
            recent = repository.list_runs(session, limit=15)
            waiting = repository.list_runs(session, status=[RunStatus.WAITING], limit=50)
            gates = {
                r.id: repository.approval_for(session, run_id=r.id, stage=r.current_stage)
                for r in waiting
            }
        items = "".join(
            f'<li><a href="/runs/{_e(r.id)}">{_e(r.id)}</a> ({_e(r.plan)}, {_e(r.operation)}) '
            f"waits at gate <b>{_e(gate.name if gate else '?')}</b>: "
            f"{_e(gate.instructions if gate else '')}</li>"
            for r in waiting
            for gate in [gates[r.id]]
        )
        body = (
            "<h1>Overview</h1>"
            '<section><h2>Waiting at gates</h2><ul id="waiting">'
            + (items or '<li class="empty">No run waits at a gate.</li>')
            + "</ul></section>"
            f'<section><h2>Recent runs</h2>{_runs_table(recent)}'
            '<p><a href="/runs">All runs</a></p></section>'
            f"<section><h2>Replication health</h2>{_health_table(services.replication())}"
            "</section>"
        )
        return page("Overview", body, who)

    def history(request: Request, who: Principal) -> Response:
        services = _services(request)
        query = select(Run).order_by(col(Run.created_at).desc()).limit(200)
        params = request.query_params
        if params.get("status"):
            query = query.where(Run.status == params["status"])
        if params.get("plan"):
            query = query.where(Run.plan == params["plan"])
        if params.get("operation"):
            query = query.where(Run.operation == params["operation"])
        with services.db.session() as session:
            runs = list(session.exec(query).all())
        options = "".join(
            f'<option value="{s.value}"{" selected" if params.get("status") == s.value else ""}>'
            f"{s.value}</option>"
            for s in RunStatus
        )
        body = (
            "<h1>Runs</h1>"
            '<form method="get" action="/runs" class="filters">'
            f'<label>status <select name="status"><option value="">any</option>{options}'
            "</select></label>"
            f'<label>plan <input name="plan" value="{_e(params.get("plan", ""))}"></label>'
            '<label>operation <input name="operation" '
            f'value="{_e(params.get("operation", ""))}"></label>'
            '<button type="submit">Filter</button></form>'
            + _runs_table(runs)
        )
        return page("Runs", body, who)

    def drills_page(request: Request, who: Principal) -> Response:
        services = _services(request)
        with services.db.session() as session:
            schedules = [drills.schedule_json(s) for s in drills.list_schedules(session)]
            recent = [drills.drill_json(d) for d in drills.drills_of(session, None, 50)]
        return page("Drills", _drills_body(schedules, recent), who)

    routes.add_api_route("/", signed_in(overview), methods=["GET"])
    routes.add_api_route("/runs", signed_in(history), methods=["GET"])
    routes.add_api_route("/drills", signed_in(drills_page), methods=["GET"])

    # -- a run

    def run_page(request: Request, who: Principal) -> Response:
        services = _services(request)
        run_id = request.path_params["run_id"]
        with services.db.session() as session:
            data = report.build(session, run_id)
            gate = None
            if data["run"]["status"] == RunStatus.WAITING:
                gate = repository.approval_for(
                    session, run_id=data["run"]["id"], stage=data["run"]["current_stage"]
                )
        return page(f"Run {data['run']['id']}", _run_body(data, gate, who), who)

    def timeline_fragment(request: Request, who: Principal) -> Response:
        services = _services(request)
        with services.db.session() as session:
            data = report.build(session, request.path_params["run_id"])
        return HTMLResponse(report.gantt_html(data))

    def report_page(request: Request, who: Principal) -> Response:
        services = _services(request)
        with services.db.session() as session:
            data = report.build(session, request.path_params["run_id"])
        run_id = data["run"]["id"]
        links = (
            '<p class="no-print">'
            f'<a href="/api/v1/runs/{_e(run_id)}/report">JSON</a> · '
            f'<a href="/runs/{_e(run_id)}">run page</a> · '
            '<button type="button" onclick="window.print()">Print / save as PDF</button></p>'
        )
        return page(f"Report {run_id}", links + report.html_body(data), who)

    routes.add_api_route("/runs/{run_id}", signed_in(run_page), methods=["GET"])
    routes.add_api_route("/runs/{run_id}/timeline", signed_in(timeline_fragment), methods=["GET"])
    routes.add_api_route("/runs/{run_id}/report", signed_in(report_page), methods=["GET"])

    # -- actions (forms)

    def posted(
        act: Callable[[Services, Principal, Request, dict[str, str]], str],
    ) -> Callable[[Request], Any]:
        async def handler(request: Request) -> Response:
            try:
                who = current_principal(request)
            except HTTPException as exc:
                return _error_page(None, exc.status_code, str(exc.detail))
            form = await _form(request)
            try:
                target = await run_in_threadpool(act, _services(request), who, request, form)
            except Forbidden as exc:
                return await run_in_threadpool(_refused, request, who, exc)
            except FerrymanError as exc:
                from workflows.api.app import _status_for

                return _error_page(who, _status_for(exc), str(exc))
            return RedirectResponse(target, 303)

        return handler

    def decide(approved: bool) -> Callable[[Services, Principal, Request, dict[str, str]], str]:
        def act(services: Services, who: Principal, request: Request, form: dict[str, str]) -> str:
            run_id, gate = request.path_params["run_id"], request.path_params["gate"]
            from workflows.api.actions import require

            require(who, Permission.DECIDE, "approve or reject gates")
            with services.db.session() as session:
                run = repository.get_run(session, run_id=run_id, with_inputs=False)
                open_gate = repository.approval_for(
                    session, run_id=run.id, stage=run.current_stage
                )
            if run.status != RunStatus.WAITING or open_gate is None or open_gate.name != gate:
                from workflows.engine import RunStateError

                raise RunStateError(f"run {run.id} is {run.status}, not waiting at gate {gate}")
            services.actions.decide(
                who, run.id, approved=approved, comment=form.get("comment", "")
            )
            return f"/runs/{run.id}"

        return act

    def cleanup(services: Services, who: Principal, request: Request, form: dict[str, str]) -> str:
        outcome = services.actions.follow_up(
            who, request.path_params["run_id"], RunOperation.CLEANUP, notes=form.get("notes", "")
        )
        return f"/runs/{outcome.run.id}"

    routes.add_api_route(
        "/runs/{run_id}/gates/{gate}/approve", posted(decide(True)), methods=["POST"]
    )
    routes.add_api_route(
        "/runs/{run_id}/gates/{gate}/reject", posted(decide(False)), methods=["POST"]
    )
    routes.add_api_route("/runs/{run_id}/cleanup", posted(cleanup), methods=["POST"])

    # -- starting a failover

    def start_form(request: Request, who: Principal) -> Response:
        services = _services(request)
        bundle = services.bundle()
        plans = "".join(
            f'<option value="{_e(name)}">{_e(name)}: {_e(p.description)}</option>'
            for name, p in sorted(bundle.plans.items())
        )
        types = "".join(
            f'<option value="{t}">{t}</option>'
            for t in ("test", "planned", "unplanned")
            if who.may(permission_for(t))
        )
        body = (
            "<h1>Start a failover</h1>"
            '<form method="get" action="/start/confirm" class="card">'
            f'<label>plan <select name="plan" id="plan">{plans}</select></label>'
            f'<label>type <select name="type" id="type">{types}</select></label>'
            '<button type="submit" id="review">Review</button></form>'
        )
        return page("Start", body, who)

    def confirm(request: Request, who: Principal) -> Response:
        services = _services(request)
        name = request.query_params.get("plan", "")
        kind = request.query_params.get("type", "test")
        if kind not in ("test", "planned", "unplanned"):
            return _error_page(who, 422, f"type {kind!r}: choose test, planned or unplanned")
        from workflows.api.actions import require

        require(who, permission_for(kind), f"start a {kind} failover")
        bundle = services.bundle()
        plan = bundle.plan(name)
        vms = list(plan.vm_names())
        groups = "".join(
            f"<li><b>{_e(group.name)}</b>: "
            + ", ".join(f'<span class="vm">{_e(vm.name)}</span>' for vm in group.vms)
            + "</li>"
            for group in plan.groups
        )
        body = (
            f"<h1>Start a {_e(kind)} failover of {_e(name)}?</h1>"
            f'<p id="confirmation">This {_e(kind)} failover acts on {len(vms)} VMs: '
            f'<b id="vm-list">{_e(", ".join(vms))}</b>.</p>'
            f"<ol>{groups}</ol>"
            '<form method="post" action="/start" class="card">'
            f'<input type="hidden" name="plan" value="{_e(name)}">'
            f'<input type="hidden" name="type" value="{_e(kind)}">'
            f'<button type="submit" id="confirm">Start the {_e(kind)} failover of '
            f"{len(vms)} VMs</button> <a href=\"/start\">Cancel</a></form>"
        )
        return page("Confirm", body, who)

    def start(services: Services, who: Principal, request: Request, form: dict[str, str]) -> str:
        outcome = services.actions.start(
            who, services.bundle(), form.get("plan", ""), form.get("type", "test")
        )
        return f"/runs/{outcome.run.id}"

    routes.add_api_route("/start", signed_in(start_form), methods=["GET"])
    routes.add_api_route("/start/confirm", signed_in(confirm), methods=["GET"])
    routes.add_api_route("/start", posted(start), methods=["POST"])
    return routes


def _run_body(data: dict[str, Any], gate: Any, who: Principal) -> str:
    run = data["run"]
    run_id = run["id"]
    terminal = RunStatus(run["status"]) in TERMINAL_RUN
    parts = [
        f'<h1>Run <span class="run-id">{_e(run_id)}</span></h1>',
        f'<div id="run" data-run="{_e(run_id)}" data-status="{_e(run["status"])}" '
        f'data-terminal="{"1" if terminal else "0"}">',
        f'<p>{_e(run["operation"])} of <b>{_e(run["plan"])}</b> ({_e(run["direction"])}): '
        f'<span id="run-status" class="badge {_e(run["status"])}">{_e(run["status"])}</span>'
        f" &middot; requested by {_e(run['requested_by'])}"
        + (
            f' &middot; follows <a href="/runs/{_e(run["parent"])}">{_e(run["parent"])}</a>'
            if run["parent"]
            else ""
        )
        + "</p>",
    ]
    if run["error"]:
        parts.append(f'<p class="error" id="run-error">{_e(run["error"])}</p>')
    if gate is not None:
        parts.append(
            f'<section class="gate" id="gate"><h2>Gate: {_e(gate.name)}</h2>'
            f"<p>{_e(gate.instructions)}</p>"
        )
        if who.may(Permission.DECIDE):
            base = f"/runs/{quote(run_id)}/gates/{quote(gate.name)}"
            parts.append(
                f'<form method="post" action="{base}/approve" class="card" id="decide">'
                '<label>comment <textarea name="comment" id="comment" rows="2"></textarea>'
                "</label>"
                '<button type="submit" id="approve">Approve</button> '
                f'<button type="submit" id="reject" formaction="{base}/reject">Reject</button>'
                "</form>"
            )
        else:
            parts.append(
                f'<p class="note" id="no-decision">Your role ({_e(who.role.value)}) cannot '
                "decide gates; an approver or administrator can.</p>"
            )
        parts.append("</section>")
    actions = [f'<a href="/runs/{_e(run_id)}/report" id="report-link">Report</a>']
    if (
        run["operation"] == RunOperation.TEST
        and terminal
        and who.may(Permission.TEST)
        and not any(
            f["operation"] == "cleanup" and f["status"] != "failed" for f in data["follow_ups"]
        )
    ):
        actions.append(
            f'<form method="post" action="/runs/{_e(run_id)}/cleanup" class="inline">'
            '<input type="hidden" name="notes" value="cleaned up from the console">'
            '<button type="submit" id="cleanup">Clean up the test failover</button></form>'
        )
    parts.append(f'<p class="actions">{" ".join(actions)}</p>')
    parts.append(f'<section><h2>Timeline</h2><div id="timeline">{report.gantt_html(data)}</div>')
    parts.append("</section>")
    if data["follow_ups"]:
        items = "".join(
            f'<li><a href="/runs/{_e(f["id"])}">{_e(f["id"])}</a> {_e(f["operation"])} '
            f"{_badge(f['status'])}</li>"
            for f in data["follow_ups"]
        )
        parts.append(f'<section><h2>Follow-up runs</h2><ul id="follow-ups">{items}</ul></section>')
    approvals = "".join(
        f"<li>{_e(a['name'])}: {_badge(a['status'])} by {_e(a['decided_by'])} "
        f"at {_e(a['decided_at'])}: {_e(a['comment'])}</li>"
        for a in data["approvals"]
    )
    if approvals:
        parts.append(f'<section><h2>Gates</h2><ul id="approvals">{approvals}</ul></section>')
    parts.append("</div>")
    return "".join(parts)



def _drills_body(schedules: list[dict[str, Any]], recent: list[dict[str, Any]]) -> str:
    """Every plan's drill schedule with its next slot, and the latest drills with their RTO
    and links to the run, its cleanup and its report."""
    rows = "".join(
        f'<tr data-schedule="{_e(s["plan"])}"><td>{_e(s["plan"])}</td>'
        f"<td><code>{_e(s['cron'])}</code></td><td>{_e(s['timezone'])}</td>"
        f"<td>{_e(s['next'] or '-') if s['enabled'] else 'disabled'}</td>"
        f"<td>{_e(s['updated_by'] or s['created_by'] or '')}</td></tr>"
        for s in schedules
    )
    drilled = "".join(_drill_row(d) for d in recent)
    return (
        "<h1>Drills</h1>"
        "<p>A drill is a test failover of a plan at the times of its schedule, with the plan's "
        "health checks, cleaned up afterwards; its report is kept. An administrator sets a "
        "schedule with <code>ferryman drills set PLAN --cron '0 3 * * sun'</code> or "
        "<code>PUT /api/v1/plans/PLAN/drill</code>.</p>"
        '<h2>Schedules</h2><table id="drill-schedules"><tr><th>plan</th><th>cron</th>'
        "<th>time zone</th><th>next slot</th><th>set by</th></tr>"
        + (rows or '<tr><td colspan="5" class="empty">No plan is drilled.</td></tr>')
        + "</table>"
        '<h2>Latest drills</h2><table id="drills"><tr><th>slot</th><th>plan</th>'
        "<th>status</th><th>RTO achieved</th><th>run</th><th>cleanup</th><th>report</th>"
        "<th>error</th></tr>"
        + (drilled or '<tr><td colspan="8" class="empty">No drills yet.</td></tr>')
        + "</table>"
    )


def _drill_row(drill: dict[str, Any]) -> str:
    rto = ((drill.get("summary") or {}).get("rto") or {}).get("achieved")
    run, cleanup = drill["run"], drill["cleanup"]
    return (
        f'<tr data-drill="{_e(drill["id"])}"><td>{_e(drill["slot"])}</td>'
        f"<td>{_e(drill['plan'])}</td><td>{_badge(drill['status'])}</td>"
        f"<td>{'-' if rto is None else f'{rto:.1f} s'}</td>"
        + (f'<td><a href="/runs/{_e(run)}">{_e(run)}</a></td>' if run else "<td>-</td>")
        + (f'<td><a href="/runs/{_e(cleanup)}">{_e(cleanup)}</a></td>' if cleanup else "<td>-</td>")
        + (f'<td><a href="/runs/{_e(run)}/report">report</a></td>' if run else "<td>-</td>")
        + f"<td>{_e(drill['error'] or '')}</td></tr>"
    )
