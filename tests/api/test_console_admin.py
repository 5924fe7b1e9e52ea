"""The console's tokens and webhooks pages: an administrator makes a token (shown once, then
usable), revokes it, adds and disables a webhook; anyone else is refused and the refusal
audited; a cross-site form post is refused."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import make_tokens, settings_for
from workers.embedded import Runtime
from workflows.api.app import create_app
from workflows.api.auth import COOKIE
from workflows.api.services import Services
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
