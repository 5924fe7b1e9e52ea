"""The HTTP API against the lab over real pypsrp: roles, gates, follow-ups, events, reports."""

from __future__ import annotations

import json

import pytest
from sqlmodel import select

from tests.api.conftest import Stack
from workflows.statuses import RunStatus
from workflows.store import Approval, AuditEvent, Run
from workflows.tokens import Role

pytestmark = pytest.mark.integration

TEST_RUN = {"plan": "three-tier", "type": "test"}


def _runs(stack: Stack) -> list[Run]:
    with stack.runtime.db.session() as session:
        return list(session.exec(select(Run)).all())


def test_requests_without_a_token_or_the_role_are_refused_and_change_nothing(
    stack: Stack,
) -> None:
    before = len(_runs(stack))
    client = stack.client
    missing = client.post("/api/v1/runs", json=TEST_RUN)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    forged = client.post(
        "/api/v1/runs", json=TEST_RUN, headers={"Authorization": "Bearer fm_not-a-real-token"}
    )
    assert forged.status_code == 401
    assert client.get("/api/v1/runs", headers={"Authorization": "Basic abc"}).status_code == 401
    viewer = client.post("/api/v1/runs", json=TEST_RUN, headers=stack.as_(Role.VIEWER))
    assert viewer.status_code == 403
    assert "viewer" in viewer.json()["detail"]
    approver = client.post("/api/v1/runs", json=TEST_RUN, headers=stack.as_(Role.APPROVER))
    assert approver.status_code == 403
    planned = {"plan": "three-tier", "type": "planned"}
    operator = client.post("/api/v1/runs", json=planned, headers=stack.as_(Role.OPERATOR))
    assert operator.status_code == 403
    assert "operator" in operator.json()["detail"]
    assert len(_runs(stack)) == before
    # reads need only a token of any role
    assert client.get("/api/v1/runs", headers=stack.as_(Role.VIEWER)).status_code == 200


def test_bad_input_gets_a_one_line_reason(stack: Stack) -> None:
    admin = stack.as_(Role.ADMINISTRATOR)
    unknown = stack.client.post(
        "/api/v1/runs", json={"plan": "nope", "type": "test"}, headers=admin
    )
    assert unknown.status_code == 404
    assert "known plans: three-tier" in unknown.json()["detail"]
    assert "\n" not in unknown.json()["detail"]
    wrong = stack.client.post(
        "/api/v1/runs", json={"plan": "three-tier", "type": "drill"}, headers=admin
    )
    assert wrong.status_code == 422
    missing = stack.client.get("/api/v1/runs/zzzzzzzz", headers=admin)
    assert missing.status_code == 404
    assert missing.json()["detail"].startswith("no run 'zzzzzzzz'")


def test_plans_are_listed_shown_validated_and_checked(stack: Stack) -> None:
    viewer = stack.as_(Role.VIEWER)
    plans = stack.client.get("/api/v1/plans", headers=viewer).json()
    assert [p["name"] for p in plans] == ["three-tier"]
    assert plans[0]["rto"] == 1800
    assert plans[0]["groups"][0] == {"name": "databases", "vms": ["sql-01", "sql-02"]}
    shown = stack.client.get("/api/v1/plans/three-tier", headers=viewer).json()
    assert shown["plan"]["pairing"] == "gold"
    valid = stack.client.post("/api/v1/plans/validate", headers=viewer).json()
    assert valid["ok"] is True and valid["errors"] == []
    check = stack.client.get("/api/v1/plans/three-tier/check?type=test", headers=viewer).json()
    replication = [c for c in check["checks"] if c["check"].startswith("replication on")]
    assert len(replication) == 7
    assert all(c["verdict"] == "pass" for c in replication), replication


def test_a_test_failover_is_started_approved_by_its_principal_and_cleaned_up(
    stack: Stack,
) -> None:
    client = stack.client
    started = client.post("/api/v1/runs", json=TEST_RUN, headers=stack.as_(Role.OPERATOR))
    assert started.status_code == 201, started.text
    run_id = started.json()["id"]
    assert started.json()["requested_by"].startswith("operator-")
    assert stack.settle(run_id, RunStatus.WAITING, RunStatus.FAILED).status == RunStatus.WAITING

    approve = f"/api/v1/runs/{run_id}/gates/confirm-databases/approve"
    body = {"comment": "availability group healthy"}
    assert client.post(approve, json=body, headers=stack.as_(Role.OPERATOR)).status_code == 403
    assert client.post(approve, json=body, headers=stack.as_(Role.VIEWER)).status_code == 403
    wrong_gate = client.post(
        f"/api/v1/runs/{run_id}/gates/other/approve", json=body, headers=stack.as_(Role.APPROVER)
    )
    assert wrong_gate.status_code == 409
    assert "confirm-databases" in wrong_gate.json()["detail"]
    with stack.runtime.db.session() as session:
        gate = session.exec(select(Approval).where(Approval.run_id == run_id)).one()
        assert gate.status == "pending"  # the refused requests changed nothing

    approved = client.post(approve, json=body, headers=stack.as_(Role.APPROVER))
    assert approved.status_code == 200, approved.text
    assert stack.settle(run_id, RunStatus.SUCCEEDED, RunStatus.FAILED).status == "succeeded"
    assert len(stack.test_vms()) == 7

    report = client.get(f"/api/v1/runs/{run_id}", headers=stack.as_(Role.VIEWER)).json()
    (decided,) = report["approvals"]
    approver_name = decided["decided_by"]
    assert approver_name.startswith("approver-") and "(approver via token)" in approver_name
    assert decided["comment"] == "availability group healthy"
    events = {e["event"]: e for e in report["events"]}
    assert events["gate_approved"]["actor"] == approver_name
    assert report["rto"]["target"] == 1800
    assert report["rto"]["achieved"] > report["rto"]["achieved_without_gates"] > 0
    assert report["rto"]["met"] is True

    # cleanup needs the operator role and is followed over server-sent events
    assert (
        client.post(f"/api/v1/runs/{run_id}/cleanup", headers=stack.as_(Role.APPROVER)).status_code
        == 403
    )
    cleanup = client.post(
        f"/api/v1/runs/{run_id}/cleanup",
        json={"notes": "checked the test VMs"},
        headers=stack.as_(Role.OPERATOR),
    )
    assert cleanup.status_code == 201, cleanup.text
    cleanup_id = cleanup.json()["id"]
    assert cleanup.json()["parent"] == run_id
    seen: list[tuple[str, dict[str, object]]] = []
    with client.stream(
        "GET", f"/api/v1/runs/{cleanup_id}/follow", headers=stack.as_(Role.VIEWER)
    ) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        event = ""
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: "):
                seen.append((event, json.loads(line[len("data: ") :])))
    assert seen[-1] == ("end", {"status": "succeeded"})
    runs = [data for name, data in seen if name == "run"]
    assert runs[-1]["run"]["status"] == "succeeded"  # type: ignore[index]
    assert stack.test_vms() == []

    listed = client.get(
        f"/api/v1/runs?parent={run_id}&operation=cleanup", headers=stack.as_(Role.VIEWER)
    ).json()
    assert [r["id"] for r in listed] == [cleanup_id]
    with stack.runtime.db.session() as session:
        actors = {
            e.event: e.actor
            for e in session.exec(select(AuditEvent).where(AuditEvent.run_id == run_id)).all()
        }
    assert actors["follow_up"].startswith("operator-")

    metrics = client.get("/metrics").text
    assert 'ferryman_runs{status="succeeded",type="test"}' in metrics
    assert 'ferryman_rto_achieved_seconds{gates="excluded",plan="three-tier"}' in metrics
    assert 'ferryman_step_duration_seconds_count{kind="test_failover"}' in metrics
    assert 'ferryman_replication_health{host="hv-sto-1",pairing="gold",plan="three-tier"' in metrics


def test_an_idempotency_key_returns_the_same_run_and_a_rejected_gate_fails_it(
    stack: Stack,
) -> None:
    body = {**TEST_RUN, "idempotency_key": "change-4711"}
    first = stack.client.post("/api/v1/runs", json=body, headers=stack.as_(Role.OPERATOR))
    again = stack.client.post("/api/v1/runs", json=body, headers=stack.as_(Role.OPERATOR))
    assert first.status_code == again.status_code == 201
    run_id = first.json()["id"]
    assert again.json()["id"] == run_id
    stack.settle(run_id, RunStatus.WAITING)
    rejected = stack.client.post(
        f"/api/v1/runs/{run_id}/gates/confirm-databases/reject",
        json={"comment": "replica lagging"},
        headers=stack.as_(Role.ADMINISTRATOR),
    )
    assert rejected.status_code == 200, rejected.text
    # a rejected test run is compensated automatically: its test VMs go away
    final = stack.settle(run_id, RunStatus.COMPENSATED, RunStatus.FAILED)
    assert final.status == RunStatus.COMPENSATED
    assert "replica lagging" in final.error
    assert stack.test_vms() == []


def test_protection_status_is_read_from_the_hosts(stack: Stack) -> None:
    assert stack.client.get("/api/v1/protection").status_code == 401
    answer = stack.client.get("/api/v1/protection", headers=stack.as_(Role.VIEWER))
    assert answer.status_code == 200, answer.text
    status = {vm["vm"]: vm for vm in answer.json()["vms"]}
    assert status["sql-01"]["state"] == "Replicating"
    assert status["sql-01"]["replica_host"].startswith("hv-got-")
    assert answer.json()["jobs"] == []
