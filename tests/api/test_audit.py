"""Refused requests go to the audit trail: who (when known), method, path, status and the
permission needed with the roles granting it, never the token; a refused request changes
nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import make_tokens, settings_for
from workers.embedded import Runtime
from workflows.api.app import create_app
from workflows.api.auth import DenialThrottle
from workflows.api.services import Services
from workflows.tokens import Role


@pytest.fixture
def client(
    runtime: Runtime, request: pytest.FixtureRequest
) -> Iterator[tuple[TestClient, dict[Role, str]]]:
    services = Services(runtime.engine, settings_for(runtime.engine.settings.database_url))
    tokens = make_tokens(runtime, request.node.name[5:30])  # token names: ROLE-TEST
    with TestClient(create_app(services)) as made:
        yield made, tokens


def _denials(client: TestClient, admin: str) -> list[dict[str, Any]]:
    answer = client.get(
        "/api/v1/audit",
        params={"event": "access_denied"},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert answer.status_code == 200, answer.text
    rows: list[dict[str, Any]] = answer.json()
    return rows


def test_refused_requests_are_audited_without_their_tokens(
    client: tuple[TestClient, dict[Role, str]],
) -> None:
    app, tokens = client
    admin = tokens[Role.ADMINISTRATOR]
    before = {row["id"] for row in _denials(app, admin)}
    viewer = {"Authorization": f"Bearer {tokens[Role.VIEWER]}"}
    forged = "fm_not-a-token-anyone-was-given"

    assert app.get("/api/v1/runs").status_code == 401
    assert app.get("/api/v1/runs", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    started = app.post("/api/v1/runs", json={"plan": "three-tier", "type": "test"}, headers=viewer)
    assert started.status_code == 403
    assert app.get("/api/v1/webhooks", headers=viewer).status_code == 403
    assert app.get("/api/v1/runs", params={"plan": "three-tier"}, headers=viewer).json() == []

    rows = [row for row in _denials(app, admin) if row["id"] not in before]
    by_path = {
        (row["data"]["path"], row["data"]["status"], row["data"]["principal"]): row for row in rows
    }
    anonymous = by_path[("/api/v1/runs", 401, None)]
    assert anonymous["actor"] == "" and anonymous["run"] is None
    assert anonymous["data"]["method"] == "GET"
    assert "authentication required" in anonymous["data"]["reason"]
    unknown = [r for r in rows if r["data"]["reason"] == "unknown or revoked token"]
    assert len(unknown) == 1 and unknown[0]["data"]["principal"] is None

    test_run = by_path[("/api/v1/runs", 403, "viewer-refused_requests_are_audi")]
    assert test_run["data"]["method"] == "POST" and test_run["data"]["role"] == "viewer"
    assert test_run["data"]["needed"] == "test"
    assert test_run["data"]["roles"] == ["operator", "administrator"]
    assert test_run["actor"] == "viewer-refused_requests_are_audi (viewer via token)"
    hooks = by_path[("/api/v1/webhooks", 403, "viewer-refused_requests_are_audi")]
    assert hooks["data"]["needed"] == "administer" and hooks["data"]["roles"] == ["administrator"]
    assert len(rows) == 4

    # no token, presented or stored, appears in what was recorded
    recorded = json.dumps(rows)
    assert forged not in recorded
    assert not any(token in recorded for token in tokens.values())


def test_the_audit_listing_is_for_administrators(
    client: tuple[TestClient, dict[Role, str]],
) -> None:
    app, tokens = client
    refused = app.get("/api/v1/audit", headers={"Authorization": f"Bearer {tokens[Role.APPROVER]}"})
    assert refused.status_code == 403
    (row,) = [
        r for r in _denials(app, tokens[Role.ADMINISTRATOR]) if r["data"]["path"] == "/api/v1/audit"
    ][:1]
    assert row["data"]["principal"] == "approver-the_audit_listing_is_for_"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_flood_of_anonymous_refusals_is_written_once_a_minute_with_its_count(
    client: tuple[TestClient, dict[Role, str]],
) -> None:
    app, tokens = client
    admin = tokens[Role.ADMINISTRATOR]
    clock = Clock()
    app.app.state.denials = DenialThrottle(clock=clock)  # type: ignore[attr-defined]
    before = {row["id"] for row in _denials(app, admin)}

    for _ in range(30):
        assert app.get("/api/v1/runs").status_code == 401  # every one is still refused
    viewer = {"Authorization": f"Bearer {tokens[Role.VIEWER]}"}
    for _ in range(3):  # a signed-in principal's refusals are always written
        assert app.get("/api/v1/webhooks", headers=viewer).status_code == 403
    new = [row for row in _denials(app, admin) if row["id"] not in before]
    anonymous = [row for row in new if row["data"]["principal"] is None]
    assert len(anonymous) == 1 and anonymous[0]["data"]["repeated"] == 0
    assert len([row for row in new if row["data"]["principal"] is not None]) == 3

    clock.now += 61
    assert app.get("/api/v1/runs").status_code == 401
    later = [
        row
        for row in _denials(app, admin)
        if row["id"] not in before and row["data"]["principal"] is None
    ]
    assert len(later) == 2
    assert sorted(row["data"]["repeated"] for row in later) == [0, 29]


def test_the_throttle_caps_refusals_from_many_addresses_and_carries_the_count() -> None:
    clock = Clock()
    throttle = DenialThrottle(window=60, burst=3, capacity=2, clock=clock)
    assert [throttle.admit(f"127.0.0.{n}", "no token") for n in range(5)] == [
        0,
        0,
        0,
        None,
        None,
    ]
    clock.now += 60
    # the two held back by the cap are counted into the next one written
    assert throttle.admit("127.0.0.9", "no token") == 2
    assert throttle.admit("127.0.0.9", "no token") is None
    assert throttle.admit("127.0.0.9", "bad scheme") == 0  # another reason is another entry
