"""The console's tokens, webhooks and drills pages: an administrator makes a token (shown once, then
usable), revokes it, adds and disables a webhook; anyone else is refused and the refusal
audited; a cross-site form post is refused."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import make_tokens, settings_for
from workers.embedded import Runtime
from workflows import drills
from workflows.api.app import create_app
from workflows.api.auth import COOKIE
from workflows.api.services import Services
from workflows.store.tables import Drill
from workflows.tokens import Role

ORIGIN = {"Origin": "http://testserver"}


@pytest.fixture
def console(
    runtime: Runtime, request: pytest.FixtureRequest
) -> Iterator[tuple[TestClient, dict[Role, str]]]:
    services = Services(runtime.engine, settings_for(runtime.engine.settings.database_url))
    tokens = make_tokens(runtime, request.node.name[5:30])
    with TestClient(create_app(services), follow_redirects=False) as client:
        yield client, tokens


def _signed_in(client: TestClient, token: str) -> None:
    client.cookies.set(COOKIE, token)


def test_an_administrator_makes_and_revokes_a_token(
    console: tuple[TestClient, dict[Role, str]],
) -> None:
    client, tokens = console
    _signed_in(client, tokens[Role.ADMINISTRATOR])
    listing = client.get("/tokens")
    assert listing.status_code == 200 and 'href="/tokens"' in listing.text
    made = client.post("/tokens", data={"name": "ci-pipeline", "role": "operator"}, headers=ORIGIN)
    assert made.status_code == 201, made.text
    found = re.search(r'<code id="new-token">([^<]+)</code>', made.text)
    assert found is not None
    token = found.group(1)
    assert 'data-token="ci-pipeline"' in made.text
    assert client.get("/tokens").text.count(token) == 0  # shown once

    api = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/runs", headers=api).status_code == 200
    revoked = client.post("/tokens/ci-pipeline/revoke", headers=ORIGIN)
    assert revoked.status_code == 303 and revoked.headers["location"] == "/tokens"
    assert client.get("/api/v1/runs", headers=api).status_code == 401

    again = client.post("/tokens", data={"name": "ci-pipeline", "role": "viewer"}, headers=ORIGIN)
    assert again.status_code == 422 and "a token named &#x27;ci-pipeline&#x27; exists" in again.text

    trail = client.get(
        "/api/v1/audit", headers={"Authorization": f"Bearer {tokens[Role.ADMINISTRATOR]}"}
    ).json()
    events = [e["event"] for e in trail if (e["data"] or {}).get("name") == "ci-pipeline"]
    assert events[:2] == ["token_revoked", "token_created"]
    assert token not in str(trail)


def test_an_administrator_adds_and_disables_a_webhook(
    console: tuple[TestClient, dict[Role, str]],
) -> None:
    client, tokens = console
    _signed_in(client, tokens[Role.ADMINISTRATOR])
    form = {
        "name": "console-hook",
        "url": "http://127.0.0.1:9/hook",
        "secret": "env:CONSOLE_HOOK_KEY",
        "events": ["drill_failed", "run_failed"],
        "plan": "",
    }
    added = client.post("/webhooks", data=form, headers=ORIGIN)
    assert added.status_code == 303, added.text
    listing = client.get("/webhooks").text
    row = re.search(r'<tr data-webhook="console-hook">.*?</tr>', listing)
    assert row is not None
    assert "drill_failed, run_failed" in row.group(0) and "every plan" in row.group(0)
    assert "0 delivered, 0 pending, 0 failed" in row.group(0)
    literal = client.post(
        "/webhooks", data={**form, "name": "x", "secret": "hunter2"}, headers=ORIGIN
    )
    assert literal.status_code == 422
    assert client.post("/webhooks/console-hook/disable", headers=ORIGIN).status_code == 303
    listing = client.get("/webhooks").text
    row = re.search(r'<tr data-webhook="console-hook">.*?</tr>', listing)
    assert row is not None and 'class="disabled"' in row.group(0)


def test_others_are_refused_and_audited(console: tuple[TestClient, dict[Role, str]]) -> None:
    client, tokens = console
    _signed_in(client, tokens[Role.APPROVER])
    page = client.get("/")
    assert page.status_code == 200 and 'href="/tokens"' not in page.text
    assert client.get("/tokens").status_code == 403
    assert client.get("/webhooks").status_code == 403
    made = client.post("/tokens", data={"name": "sneaky", "role": "administrator"}, headers=ORIGIN)
    assert made.status_code == 403

    _signed_in(client, tokens[Role.ADMINISTRATOR])
    forged = client.post("/tokens", data={"name": "forged", "role": "administrator"})
    assert forged.status_code == 403 and "cross-site request refused" in forged.text
    admin = {"Authorization": f"Bearer {tokens[Role.ADMINISTRATOR]}"}
    names = client.get("/tokens").text.split('data-token="')[1:]
    assert not any(n.startswith(("sneaky", "forged")) for n in names)
    denials = client.get("/api/v1/audit", params={"event": "access_denied"}, headers=admin).json()
    approver = [d for d in denials if d["data"]["role"] == "approver"]
    paths = {(d["data"]["method"], d["data"]["path"]) for d in approver}
    assert {("GET", "/tokens"), ("GET", "/webhooks"), ("POST", "/tokens")} <= paths
    assert all(d["data"]["needed"] == "administer" for d in approver if d["data"]["path"] != "/")


def test_the_drills_page_shows_schedules_and_drills_to_a_viewer(
    console: tuple[TestClient, dict[Role, str]], runtime: Runtime
) -> None:
    client, tokens = console
    _signed_in(client, tokens[Role.VIEWER])
    empty = client.get("/drills")
    assert empty.status_code == 200 and "No plan is drilled." in empty.text
    assert 'href="/drills"' in empty.text and "No drills yet." in empty.text

    with runtime.engine.db.session() as session:
        drills.set_schedule(session, plan="three-tier", cron="0 3 * * sun", by="admin")
        session.add(
            Drill(
                plan="three-tier",
                slot=datetime(2026, 12, 6, 3, 0, tzinfo=UTC),
                status="succeeded",
                run_id="run0drill001",
                cleanup_run_id="run0clean001",
                report={"rto": {"achieved": 42.25}},
            )
        )
        missed = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
        session.add(
            Drill(plan="three-tier", slot=missed, status="missed", error="VMs held by run abc")
        )
    listing = client.get("/drills").text
    schedule = re.search(r'<tr data-schedule="three-tier">.*?</tr>', listing)
    assert schedule is not None
    assert "<code>0 3 * * sun</code>" in schedule.group(0) and "admin" in schedule.group(0)
    assert re.search(r"\d{4}-\d\d-\d\dT03:00:00", schedule.group(0))  # the next slot
    rows = re.findall(r'<tr data-drill="\d+">.*?</tr>', listing)
    assert len(rows) == 2
    assert "succeeded" in rows[0] and "42.2 s" in rows[0]
    assert 'href="/runs/run0drill001/report"' in rows[0]
    assert 'href="/runs/run0clean001"' in rows[0]
    assert "missed" in rows[1] and "VMs held by run abc" in rows[1] and "report" not in rows[1]
