"""Webhooks: signed JSON for a gate wait and a run's end, retried after a failure, recorded."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import Receiver, Stack
from tests.api.served import until
from workflows.api.app import create_app
from workflows.api.services import Services
from workflows.notifications import Backoff
from workflows.statuses import RunStatus
from workflows.tokens import Role

pytestmark = pytest.mark.integration

KEY_VARIABLE = "WEBHOOK_TEST_KEY"
KEY = "k3y-for-the-receiver"


def _signed(request: dict[str, Any]) -> bool:
    expected = hmac.new(
        KEY.encode(), request["timestamp"].encode() + b"." + request["body"], hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(request["signature"], f"sha256={expected}")


def test_webhooks_are_signed_retried_and_recorded(
    stack: Stack, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    services = Services(
        stack.runtime.engine,
        stack.services.settings,
        app=stack.runtime.app,
        notify_interval=0.1,
        notify_backoff=Backoff(base=0.2, ceiling=1.0, max_attempts=5),
    )
    with TestClient(create_app(services)) as client:
        admin = stack.as_(Role.ADMINISTRATOR)
        hook = {
            "name": "ops",
            "url": receiver.url,
            "secret": f"env:{KEY_VARIABLE}",
            "events": ["gate_waiting", "run_failed", "run_succeeded"],
        }
        refused = client.post("/api/v1/webhooks", json=hook, headers=stack.as_(Role.OPERATOR))
        assert refused.status_code == 403
        literal = client.post("/api/v1/webhooks", json={**hook, "secret": KEY}, headers=admin)
        assert literal.status_code == 422 and "reference" in literal.json()["detail"]
        made = client.post("/api/v1/webhooks", json=hook, headers=admin)
        assert made.status_code == 201, made.text
        assert made.json()["secret"] == f"env:{KEY_VARIABLE}"
        other_plan = {**hook, "name": "other", "plan": "not-this-one"}
        assert client.post("/api/v1/webhooks", json=other_plan, headers=admin).status_code == 201

        started = client.post(
            "/api/v1/runs",
            json={"plan": "three-tier", "type": "test"},
            headers=stack.as_(Role.OPERATOR),
        )
        run_id = started.json()["id"]
        stack.settle(run_id, RunStatus.WAITING)
        until(lambda: receiver.received("gate_waiting"), what="the gate_waiting notification")
        client.post(
            f"/api/v1/runs/{run_id}/gates/confirm-databases/approve",
            json={"comment": "ok"},
            headers=stack.as_(Role.APPROVER),
        )
        stack.settle(run_id, RunStatus.SUCCEEDED)
        until(lambda: receiver.received("run_succeeded"), what="the run_succeeded notification")

        # the first request was answered 503 and retried; every request is signed
        assert receiver.requests[0]["answer"] == 503
        assert all(_signed(r) for r in receiver.requests)
        waiting = json.loads(receiver.received("gate_waiting")[0]["body"])
        assert waiting["run"]["id"] == run_id and waiting["gate"]["stage"] == 1
        assert waiting["message"].startswith("confirm-databases")
        done = json.loads(receiver.received("run_succeeded")[0]["body"])
        assert done["run"]["status"] == "succeeded"

        records = client.get("/api/v1/webhooks/ops/deliveries", headers=admin).json()
        by_event = {r["event"]: r for r in records}
        assert by_event["gate_waiting"]["attempts"] == 2
        assert by_event["gate_waiting"]["status"] == "delivered"
        assert by_event["run_succeeded"]["status"] == "delivered"
        assert client.get("/api/v1/webhooks/other/deliveries", headers=admin).json() == []
        assert client.get("/api/v1/webhooks/nope/deliveries", headers=admin).status_code == 404

        cleanup = client.post(f"/api/v1/runs/{run_id}/cleanup", headers=stack.as_(Role.OPERATOR))
        stack.settle(cleanup.json()["id"], RunStatus.SUCCEEDED)
        assert stack.test_vms() == []
