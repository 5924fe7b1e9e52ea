"""Scheduled drills against the lab: a schedule set over the API, a due slot started once by
two ticks at the same time, the test failover (with its health check) cleaned up by the beat's
task and the report kept; a rejected drill and a missed slot notify a webhook."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlmodel import col, select

from tests.api.conftest import Receiver, Stack
from tests.api.served import until
from workers.embedded import Runtime
from workflows.api.app import create_app
from workflows.api.services import Services
from workflows.drills import GRACE, Cron, Drills, plans_loader, slot_key
from workflows.notifications import Backoff
from workflows.statuses import RunStatus
from workflows.steps import TASK_DRILLS
from workflows.store import Run
from workflows.store.tables import Drill, DrillSchedule
from workflows.tokens import Role

pytestmark = pytest.mark.integration

PLAN = "three-tier"
GATE = "confirm-databases"
EVERY_MINUTE = "* * * * *"
KEY_VARIABLE = "DRILL_WEBHOOK_KEY"


def _schedule(stack: Stack, client: TestClient, cron: str = EVERY_MINUTE) -> datetime:
    """Set the plan's schedule; its first slot."""
    done = client.put(
        f"/api/v1/plans/{PLAN}/drill", json={"cron": cron}, headers=stack.as_(Role.ADMINISTRATOR)
    )
    assert done.status_code == 200, done.text
    return datetime.fromisoformat(done.json()["next"])


def _drills(stack: Stack) -> list[Drill]:
    with stack.runtime.db.session() as session:
        return list(session.exec(select(Drill).where(Drill.plan == PLAN)).all())


def _tick_by_beat(stack: Stack) -> None:
    """What Celery beat does every minute: send the tick task to the workers."""
    stack.runtime.app.send_task(TASK_DRILLS, kwargs={})


def _drill_reaches(stack: Stack, *statuses: str) -> Drill:
    """Tick as the beat does (every half second here, not every minute) until a drill of the
    plan has one of ``statuses``."""
    deadline = time.monotonic() + 120
    while True:
        _tick_by_beat(stack)
        found = [d for d in _drills(stack) if d.status in statuses]
        if found:
            return found[0]
        if time.monotonic() > deadline:
            raise TimeoutError(f"no drill became {' or '.join(statuses)}: {_drills(stack)}")
        time.sleep(0.5)


@pytest.fixture(autouse=True)
def no_drills(runtime: Runtime) -> None:
    """Each test starts without schedules or drills (the module's tests share a store, and a
    slot of one test can be a slot of the next: its run's idempotency key is let go)."""
    with runtime.db.session() as session:
        for row in [*session.exec(select(Drill)).all(), *session.exec(select(DrillSchedule))]:
            session.delete(row)
        session.execute(
            update(Run)
            .where(col(Run.idempotency_key).startswith("drill:"))
            .values(idempotency_key=None)
        )


def test_schedules_are_validated_and_need_an_administrator(stack: Stack) -> None:
    client = stack.client
    path = f"/api/v1/plans/{PLAN}/drill"
    assert client.get(path, headers=stack.as_(Role.VIEWER)).status_code == 404
    refused = client.put(path, json={"cron": "0 3 * * *"}, headers=stack.as_(Role.OPERATOR))
    assert refused.status_code == 403
    admin = stack.as_(Role.ADMINISTRATOR)
    bad = client.put(path, json={"cron": "0 25 * * *"}, headers=admin)
    assert bad.status_code == 422
    assert bad.json()["detail"].startswith("cron expression '0 25 * * *': hour 25 is out of 0-23")
    zone = client.put(path, json={"cron": "0 3 * * *", "timezone": "Mars/Base"}, headers=admin)
    assert zone.status_code == 422 and "unknown time zone 'Mars/Base'" in zone.json()["detail"]
    unknown = client.put("/api/v1/plans/nope/drill", json={"cron": "0 3 * * *"}, headers=admin)
    assert unknown.status_code == 404

    made = client.put(
        path, json={"cron": "0 3 * * sun", "timezone": "Europe/Stockholm"}, headers=admin
    )
    assert made.status_code == 200, made.text
    shown = client.get(path, headers=stack.as_(Role.VIEWER)).json()
    assert shown["cron"] == "0 3 * * sun" and shown["timezone"] == "Europe/Stockholm"
    upcoming = datetime.fromisoformat(shown["next"])
    assert upcoming.weekday() in (5, 6) and upcoming.minute == 0  # 03:00 Stockholm on a Sunday
    assert shown["drills"] == []
    assert client.delete(path, headers=stack.as_(Role.VIEWER)).status_code == 403
    assert client.delete(path, headers=admin).json() == {"plan": PLAN, "removed": True}
    assert client.get(path, headers=admin).status_code == 404

    changes = client.get("/api/v1/audit", params={"run": ""}, headers=admin).json()
    kinds = [e["event"] for e in changes if e["data"] and e["data"].get("plan") == PLAN]
    assert kinds[:2] == ["drill_schedule_removed", "drill_schedule_set"]
    assert all(e["actor"].startswith("administrator-") for e in changes if e["event"] in kinds)


def test_a_due_drill_starts_once_is_cleaned_up_and_keeps_its_report(stack: Stack) -> None:
    with stack.runtime.db.session() as session:
        before = list(session.exec(select(Run.id)).all())
    slot = _schedule(stack, stack.client)
    ticks = [Drills(stack.runtime.engine, plans_loader(stack.services.settings)) for _ in range(2)]
    barrier = threading.Barrier(len(ticks))
    results: list[Any] = []

    def tick(drills: Drills) -> None:
        barrier.wait()
        results.append(drills.tick(slot + timedelta(seconds=5)))

    threads = [threading.Thread(target=tick, args=(t,)) for t in ticks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # two ticks for one slot: one drill, one run
    assert sorted(len(r.started) for r in results) == [0, 1]
    assert all(r.errors == [] for r in results)
    (drill,) = _drills(stack)
    assert drill.status == "testing" and drill.slot == slot
    with stack.runtime.db.session() as session:
        runs = session.exec(select(Run).where(col(Run.id).not_in(before))).all()
    assert [r.id for r in runs] == [drill.run_id]
    assert runs[0].operation == "test"
    assert runs[0].idempotency_key == slot_key(PLAN, slot)
    again = ticks[0].tick(slot + timedelta(seconds=30))
    assert again.started == [] and again.missed == []

    # a drill's test failover waits at the plan's gates like any other
    assert drill.run_id is not None
    stack.settle(drill.run_id, RunStatus.WAITING)
    approved = stack.client.post(
        f"/api/v1/runs/{drill.run_id}/gates/{GATE}/approve",
        json={"comment": "drill"},
        headers=stack.as_(Role.APPROVER),
    )
    assert approved.status_code == 200, approved.text
    stack.settle(drill.run_id, RunStatus.SUCCEEDED)

    # the beat's task moves it on: cleanup, then the report
    finished = _drill_reaches(stack, "succeeded", "failed")
    assert finished.status == "succeeded", finished.error
    assert finished.cleanup_run_id is not None
    assert stack.test_vms() == []
    summary = finished.report or {}
    assert summary["run"]["status"] == "succeeded"
    assert summary["cleanup"]["status"] == "succeeded"
    checks = summary["health_checks"]
    assert checks and all(c["status"] == "succeeded" for c in checks)
    assert summary["approvals"][0]["decided_by"].startswith("approver-")

    shown = stack.client.get(f"/api/v1/plans/{PLAN}/drill", headers=stack.as_(Role.VIEWER))
    (listed,) = shown.json()["drills"]
    assert listed["status"] == "succeeded" and listed["run"] == drill.run_id
    report = stack.client.get(listed["report"], headers=stack.as_(Role.VIEWER))
    assert report.status_code == 200 and report.json()["run"]["id"] == drill.run_id
    follow_ups = report.json()["follow_ups"]
    assert [(f["operation"], f["status"]) for f in follow_ups] == [("cleanup", "succeeded")]


def test_a_failed_and_a_missed_drill_notify(
    stack: Stack, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_VARIABLE, "drill-key")
    receiver.fail_first = 0
    services = Services(
        stack.runtime.engine,
        stack.services.settings,
        app=stack.runtime.app,
        notify_interval=0.1,
        notify_backoff=Backoff(base=0.2, ceiling=1.0, max_attempts=5),
    )
    with TestClient(create_app(services)) as client:
        hook = {
            "name": "drills",
            "url": receiver.url,
            "secret": f"env:{KEY_VARIABLE}",
            "events": ["drill_failed", "drill_missed", "drill_succeeded"],
            "plan": PLAN,
        }
        made = client.post("/api/v1/webhooks", json=hook, headers=stack.as_(Role.ADMINISTRATOR))
        assert made.status_code == 201, made.text
        hourly = f"{(datetime.now(UTC) + timedelta(minutes=2)).minute} * * * *"
        slot = _schedule(stack, client, hourly)
        drills = Drills(stack.runtime.engine, plans_loader(stack.services.settings))

        # the beat was down for the first slot: missed when the next tick comes
        late = drills.tick(slot + GRACE + timedelta(minutes=1))
        assert late.started == [] and len(late.missed) == 1
        (missed,) = _drills(stack)
        assert missed.status == "missed" and "was the beat running?" in missed.error
        until(lambda: receiver.received("drill_missed"), what="the drill_missed notification")
        told = json.loads(receiver.received("drill_missed")[0]["body"])
        assert told["drill"]["plan"] == PLAN and told["drill"]["status"] == "missed"

        # the next slot starts; an approver rejects its gate: the drill fails
        following = Cron.parse(hourly).following(slot + GRACE + timedelta(minutes=1), UTC)
        assert following == slot + timedelta(hours=1)
        started = drills.tick(following + timedelta(seconds=1))
        assert len(started.started) == 1
        drill = next(d for d in _drills(stack) if d.status == "testing")
        assert drill.run_id is not None
        stack.settle(drill.run_id, RunStatus.WAITING)
        rejected = client.post(
            f"/api/v1/runs/{drill.run_id}/gates/{GATE}/reject",
            json={"comment": "databases not healthy"},
            headers=stack.as_(Role.APPROVER),
        )
        assert rejected.status_code == 200, rejected.text
        failed = _drill_reaches(stack, "failed", "succeeded")
        assert failed.status == "failed" and drill.run_id in failed.error
        until(lambda: receiver.received("drill_failed"), what="the drill_failed notification")
        told = json.loads(receiver.received("drill_failed")[0]["body"])
        assert told["event"] == "drill_failed"
        assert told["drill"]["id"] == failed.id and told["run"]["id"] == drill.run_id
        assert told["drill"]["report"] == f"/api/v1/runs/{drill.run_id}/report"
        assert receiver.received("drill_succeeded") == []
        until(lambda: stack.test_vms() == [], what="the rejected drill's test VMs undone")


def test_a_slot_whose_vms_are_held_is_missed(stack: Stack) -> None:
    manual = stack.client.post(
        "/api/v1/runs", json={"plan": PLAN, "type": "test"}, headers=stack.as_(Role.OPERATOR)
    )
    assert manual.status_code == 201, manual.text
    held_by = manual.json()["id"]
    stack.settle(held_by, RunStatus.WAITING)
    slot = _schedule(stack, stack.client)
    result = Drills(stack.runtime.engine, plans_loader(stack.services.settings)).tick(
        slot + timedelta(seconds=1)
    )
    assert result.started == [] and len(result.missed) == 1
    (missed,) = _drills(stack)
    assert missed.status == "missed" and missed.run_id is None
    assert missed.error.startswith("not started: ") and held_by in missed.error

    stack.client.post(
        f"/api/v1/runs/{held_by}/gates/{GATE}/approve", headers=stack.as_(Role.APPROVER), json={}
    )
    stack.settle(held_by, RunStatus.SUCCEEDED)
    cleanup = stack.client.post(f"/api/v1/runs/{held_by}/cleanup", headers=stack.as_(Role.OPERATOR))
    stack.settle(cleanup.json()["id"], RunStatus.SUCCEEDED)


def test_serve_with_the_in_memory_broker_ticks_drills_itself(stack: Stack) -> None:
    services = Services(
        stack.runtime.engine, stack.services.settings, app=stack.runtime.app, drill_interval=0.2
    )
    now = datetime.now(UTC)
    slot = now.replace(second=0, microsecond=0)
    with stack.runtime.db.session() as session:  # set a second before this minute's slot
        session.add(DrillSchedule(plan=PLAN, cron=EVERY_MINUTE, since=slot - timedelta(seconds=1)))
    with TestClient(create_app(services)) as client:

        def started() -> Drill | None:
            return next((d for d in _drills(stack) if d.slot == slot and d.run_id), None)

        drill = until(started, what="the ticker to start this minute's drill")
        admin = stack.as_(Role.ADMINISTRATOR)
        assert client.delete(f"/api/v1/plans/{PLAN}/drill", headers=admin).status_code == 200
        assert drill.run_id is not None
        stack.settle(drill.run_id, RunStatus.WAITING)
        client.post(
            f"/api/v1/runs/{drill.run_id}/gates/{GATE}/approve",
            json={},
            headers=stack.as_(Role.APPROVER),
        )

        def finished() -> Drill | None:
            done = [d for d in _drills(stack) if d.id == drill.id and d.finished_at]
            return done[0] if done else None

        outcome = until(finished, what="the ticker to clean the drill up")
        assert outcome.status == "succeeded", outcome.error
    assert stack.test_vms() == []
