"""``ferryman serve`` as its own process on Redis, driving a test failover in the lab."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.served import Served, served
from workflows.tokens import Role

pytestmark = pytest.mark.integration


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Served]:
    with served(tmp_path) as running:
        yield running


def test_serve_answers_health_and_runs_a_test_failover_through_its_gate(server: Served) -> None:
    with server.client() as anonymous:
        assert anonymous.get("/healthz").json() == {"status": "ok"}
        ready = anonymous.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}
        paths = anonymous.get("/openapi.json").json()["paths"]
        assert "/api/v1/runs/{run_id}/gates/{gate}/approve" in paths
        assert anonymous.get("/api/v1/runs").status_code == 401

    with server.client(Role.OPERATOR) as operator:
        started = operator.post("/api/v1/runs", json={"plan": "three-tier", "type": "test"})
        assert started.status_code == 201, started.text
        run_id = started.json()["id"]
        assert started.json()["dispatched"] is True
    assert server.settle(run_id, "waiting", "failed") == "waiting"

    with server.client(Role.APPROVER) as approver:
        approved = approver.post(
            f"/api/v1/runs/{run_id}/gates/confirm-databases/approve",
            json={"comment": "AG healthy", "idempotency_key": "gate-1"},
        )
        assert approved.status_code == 200, approved.text
        again = approver.post(
            f"/api/v1/runs/{run_id}/gates/confirm-databases/approve",
            json={"comment": "AG healthy", "idempotency_key": "gate-1"},
        )
        assert again.status_code == 200 and again.json()["replayed"] is True

    # follow the run as server-sent events until it ends
    events: list[str] = []
    with (
        server.client(Role.VIEWER) as viewer,
        viewer.stream("GET", f"/api/v1/runs/{run_id}/follow", timeout=120) as stream,
    ):
        for line in stream.iter_lines():
            if line.startswith("event: "):
                events.append(line[len("event: ") :])
            elif line.startswith("data: ") and events[-1] == "end":
                assert json.loads(line[len("data: ") :]) == {"status": "succeeded"}
    assert events[0] == "run" and events[-1] == "end"
    assert len(server.test_vms()) == 7

    with server.client(Role.OPERATOR) as operator:
        cleanup = operator.post(f"/api/v1/runs/{run_id}/cleanup", json={"notes": "checked"})
        assert cleanup.status_code == 201, cleanup.text
    assert server.settle(cleanup.json()["id"], "succeeded", "failed") == "succeeded"
    assert server.test_vms() == []

    with server.client(Role.VIEWER) as viewer:
        report = viewer.get(f"/api/v1/runs/{run_id}/report").json()
        assert report["approvals"][0]["decided_by"] == "approver-served (approver via token)"
        assert [f["operation"] for f in report["follow_ups"]] == ["cleanup"]
        metrics = viewer.get("/metrics").text
        assert 'ferryman_runs{status="succeeded",type="cleanup"} 1.0' in metrics

