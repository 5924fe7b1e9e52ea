"""The console's administrator pages: API tokens (list, create shown once, revoke) and
webhooks (list with their deliveries, create, disable).

Only an administrator sees them; anyone else is refused (403, written to the audit trail).
Each form posts to the console's own origin, as :mod:`workflows.api.auth` requires; a token
made here is shown on the answer to its form and never again, and making or revoking one is
written to the audit trail with the administrator who did it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import func
from sqlmodel import col, select
from starlette.concurrency import run_in_threadpool

from plans.errors import FerrymanError
from workflows.api.actions import Forbidden, require
from workflows.api.auth import authenticated, record_denial
from workflows.api.console import MAX_FORM_BYTES, _e, _error_page, _principal, page
from workflows.api.services import Services
from workflows.notifications import NotificationEvent, create_webhook, disable_webhook
from workflows.store import AuditEvent
from workflows.store.tables import Webhook, WebhookDelivery
from workflows.tokens import Permission, Principal, Role, create_token, list_tokens, revoke_token

Page = Callable[[Services, Principal, Request], HTMLResponse]
Form = Callable[[Services, Principal, Request, dict[str, list[str]]], Response]


async def _form(request: Request) -> dict[str, list[str]]:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise HTTPException(413, "form too large")
    return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)


def _one(form: dict[str, list[str]], key: str) -> str:
    return (form.get(key) or [""])[-1].strip()


def _audit(services: Services, who: Principal, event: str, message: str, data: Any) -> None:
    with services.db.session() as session:
        session.add(AuditEvent(run_id="", event=event, actor=who.actor, message=message, data=data))


def router() -> APIRouter:
    """The tokens and webhooks pages (left out of the OpenAPI document)."""
    routes = APIRouter(include_in_schema=False)

    def administrator(who: Principal) -> None:
        require(who, Permission.ADMINISTER, "manage tokens and webhooks")

    def shown(handler: Page) -> Callable[[Request], Any]:
        async def wrapped(request: Request) -> Response:
            who = _principal(request)
            if who is None:
                return RedirectResponse(f"/login?next={quote(request.url.path)}", 303)
            services: Services = request.app.state.services
            try:
                administrator(who)
                return await run_in_threadpool(handler, services, who, request)
            except Forbidden as exc:
                await run_in_threadpool(
                    record_denial, request, 403, str(exc), principal=who, needed=exc.needed
                )
                return _error_page(who, 403, str(exc))

        return wrapped

    def posted(handler: Form) -> Callable[[Request], Any]:
        async def wrapped(request: Request) -> Response:
            try:
                who = await run_in_threadpool(authenticated, request)
            except HTTPException as exc:
                return _error_page(None, exc.status_code, str(exc.detail))
            services: Services = request.app.state.services
            form = await _form(request)
            try:
                administrator(who)
                return await run_in_threadpool(handler, services, who, request, form)
            except Forbidden as exc:
                await run_in_threadpool(
                    record_denial, request, 403, str(exc), principal=who, needed=exc.needed
                )
                return _error_page(who, 403, str(exc))
            except FerrymanError as exc:
                return _error_page(who, 422, str(exc))

        return wrapped

    # -- tokens

    def tokens_body(services: Services, notice: str = "") -> str:
        with services.db.session() as session:
            rows = list_tokens(session)
        lines = "".join(
            f'<tr data-token="{_e(t.name)}"><td>{_e(t.name)}</td><td>{_e(t.role)}</td>'
            f"<td><code>{_e(t.prefix)}…</code></td><td>{_e(t.created_by)}</td>"
            f"<td>{_e(f'{t.created_at:%Y-%m-%d %H:%M}')}</td>"
            f"<td>{_e(f'{t.last_used_at:%Y-%m-%d %H:%M}' if t.last_used_at else '')}</td>"
            + (
                f'<td class="revoked">revoked {t.revoked_at:%Y-%m-%d %H:%M}</td>'
                if t.revoked_at
                else f'<td><form method="post" action="/tokens/{_e(quote(t.name))}/revoke" '
                f'class="inline"><button type="submit" class="revoke">Revoke</button>'
                "</form></td>"
            )
            + "</tr>"
            for t in rows
        )
        roles = "".join(f'<option value="{r.value}">{r.value}</option>' for r in Role)
        return (
            notice + "<h1>API tokens</h1>"
            '<table id="tokens"><tr><th>name</th><th>role</th><th>starts</th><th>made by</th>'
            "<th>made (UTC)</th><th>last used</th><th></th></tr>"
            + (lines or '<tr><td colspan="7" class="empty">No tokens.</td></tr>')
            + "</table>"
            '<h2>Make a token</h2><form method="post" action="/tokens" class="card">'
            '<label>name <input name="name" id="token-name" required></label>'
            f'<label>role <select name="role" id="token-role">{roles}</select></label>'
            '<button type="submit" id="make-token">Make the token</button></form>'
        )

    def tokens_page(services: Services, who: Principal, _request: Request) -> HTMLResponse:
        return page("Tokens", tokens_body(services), who)

    def make_token(
        services: Services, who: Principal, _request: Request, form: dict[str, list[str]]
    ) -> Response:
        name, role = _one(form, "name"), _one(form, "role")
        with services.db.session() as session:
            row, token = create_token(session, name=name, role=role, created_by=who.actor)
        _audit(
            services,
            who,
            "token_created",
            f"token {row.name} ({row.role}) made",
            {"name": row.name, "role": row.role},
        )
        notice = (
            '<section class="card notice"><p>Token <b>'
            + _e(row.name)
            + "</b> ("
            + _e(row.role)
            + '): <code id="new-token">'
            + _e(token)
            + "</code></p><p>Copy it now: it is shown this once and stored only as a digest."
            "</p></section>"
        )
        return page("Tokens", tokens_body(services, notice), who, status_code=201)

    def revoke(
        services: Services, who: Principal, request: Request, _form: dict[str, list[str]]
    ) -> Response:
        name = request.path_params["name"]
        with services.db.session() as session:
            revoke_token(session, name=name)
        _audit(services, who, "token_revoked", f"token {name} revoked", {"name": name})
        return RedirectResponse("/tokens", 303)

    routes.add_api_route("/tokens", shown(tokens_page), methods=["GET"])
    routes.add_api_route("/tokens", posted(make_token), methods=["POST"])
    routes.add_api_route("/tokens/{name}/revoke", posted(revoke), methods=["POST"])

    # -- webhooks

    def webhooks_page(services: Services, who: Principal, _request: Request) -> HTMLResponse:
        with services.db.session() as session:
            hooks = session.exec(select(Webhook).order_by(col(Webhook.name))).all()
            counts: dict[tuple[int, str], int] = {
                (hook_id, status): count
                for hook_id, status, count in session.exec(
                    select(
                        WebhookDelivery.webhook_id,
                        WebhookDelivery.status,
                        func.count(),
                    ).group_by(col(WebhookDelivery.webhook_id), col(WebhookDelivery.status))
                ).all()
            }
        lines = "".join(
            f'<tr data-webhook="{_e(h.name)}"><td>{_e(h.name)}</td><td>{_e(h.url)}</td>'
            f"<td>{_e(', '.join(h.events))}</td><td>{_e(h.plan or 'every plan')}</td>"
            f"<td><code>{_e(h.secret_ref)}</code></td>"
            f'<td class="deliveries">{counts.get((h.id or 0, "delivered"), 0)} delivered, '
            f"{counts.get((h.id or 0, 'pending'), 0)} pending, "
            f"{counts.get((h.id or 0, 'failed'), 0)} failed</td>"
            + (
                f'<td><form method="post" action="/webhooks/{_e(quote(h.name))}/disable" '
                'class="inline"><button type="submit" class="disable">Disable</button>'
                "</form></td>"
                if h.enabled
                else '<td class="disabled">disabled</td>'
            )
            + "</tr>"
            for h in hooks
        )
        events = "".join(
            f'<label class="inline"><input type="checkbox" name="events" value="{e.value}">'
            f" {e.value}</label> "
            for e in NotificationEvent
        )
        body = (
            "<h1>Webhooks</h1>"
            '<table id="webhooks"><tr><th>name</th><th>URL</th><th>events</th><th>plan</th>'
            "<th>signing key</th><th>deliveries</th><th></th></tr>"
            + (lines or '<tr><td colspan="7" class="empty">No webhooks.</td></tr>')
            + "</table>"
            '<h2>Add a webhook</h2><form method="post" action="/webhooks" class="card">'
            '<label>name <input name="name" id="webhook-name" required></label>'
            '<label>URL <input name="url" id="webhook-url" required></label>'
            '<label>signing key <input name="secret" id="webhook-secret" '
            'placeholder="env:NAME or file:PATH" required></label>'
            f"<fieldset><legend>events</legend>{events}</fieldset>"
            '<label>plan <input name="plan" id="webhook-plan" placeholder="every plan">'
            "</label>"
            '<button type="submit" id="add-webhook">Add the webhook</button></form>'
        )
        return page("Webhooks", body, who)

    def add_webhook(
        services: Services, who: Principal, _request: Request, form: dict[str, list[str]]
    ) -> Response:
        with services.db.session() as session:
            hook = create_webhook(
                session,
                name=_one(form, "name"),
                url=_one(form, "url"),
                secret=_one(form, "secret"),
                events=[e for e in form.get("events", []) if e],
                plan=_one(form, "plan") or None,
                created_by=who.actor,
            )
            name = hook.name
        _audit(services, who, "webhook_created", f"webhook {name} added", {"name": name})
        return RedirectResponse("/webhooks", 303)

    def disable(
        services: Services, who: Principal, request: Request, _form: dict[str, list[str]]
    ) -> Response:
        name = request.path_params["name"]
        with services.db.session() as session:
            disable_webhook(session, name=name)
        _audit(services, who, "webhook_disabled", f"webhook {name} disabled", {"name": name})
        return RedirectResponse("/webhooks", 303)

    routes.add_api_route("/webhooks", shown(webhooks_page), methods=["GET"])
    routes.add_api_route("/webhooks", posted(add_webhook), methods=["POST"])
    routes.add_api_route("/webhooks/{name}/disable", posted(disable), methods=["POST"])
    return routes
