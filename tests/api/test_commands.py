"""Signed operator commands on ``ferryman.commands`` (Redis): carried out once, or dead-lettered."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Exchange, Producer

from tests.api.served import Served, served, until
from workflows.commands import COMMANDS_QUEUE, DEAD_QUEUE, CommandConsumer, queues, sign
from workflows.tokens import Role

pytestmark = pytest.mark.integration

KEY = b"a-shared-key-of-enough-length-for-hmac"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Served]:
    with served(tmp_path) as running:
        yield running


def _send(conn: Connection, body: dict[str, Any], *, key: bytes | None = KEY) -> None:
    raw = json.dumps(body).encode("utf-8")
    headers = {"x-ferryman-signature": sign(key, raw)} if key is not None else {}
    with Producer(conn.channel()) as producer:
        producer.publish(
            raw,
            exchange=Exchange(COMMANDS_QUEUE, "direct"),
            routing_key=COMMANDS_QUEUE,
            content_type="application/json",
            content_encoding="utf-8",
            headers=headers,
            declare=[queues()[0]],  # bound before the consumer starts: nothing is dropped
        )


def test_signed_commands_are_authorised_idempotent_and_refusals_dead_lettered(
    server: Served,
) -> None:
    with server.client(Role.OPERATOR) as operator:
        run_id = operator.post("/api/v1/runs", json={"plan": "three-tier", "type": "test"}).json()[
            "id"
        ]
    server.settle(run_id, "waiting")

    with (
        Connection(server.redis.url()) as conn,
        Connection(server.redis.url()) as reader,
        Connection(server.redis.url()) as consuming,
    ):
        consumer = CommandConsumer(server.runtime.engine, consuming, KEY)
        thread = threading.Thread(target=consumer.run, kwargs={"poll": 0.2}, daemon=True)
        thread.start()
        dead = reader.SimpleQueue(DEAD_QUEUE)
        try:
            approve = {
                "command": "approve",
                "run": run_id,
                "gate": "confirm-databases",
                "comment": "from the change system",
                "principal": "carol",
                "role": "approver",
                "idempotency_key": f"{run_id}-approve",
            }
            _send(conn, approve, key=None)
            _send(conn, approve, key=b"another key")
            _send(conn, {**approve, "role": "operator", "principal": "bob"})
            _send(conn, {**approve, "gate": "other", "idempotency_key": "x"})
            _send(conn, {**approve, "comment": "ok\x1b[2J", "idempotency_key": "escape"})
            reasons = [dead.get(timeout=30).payload["reason"] for _ in range(5)]
            assert reasons[0].startswith("unsigned")
            assert reasons[1].startswith("bad signature")
            assert reasons[2].startswith("unauthorised: bob has role operator")
            assert "waits at gate 'confirm-databases', not 'other'" in reasons[3]
            assert reasons[4].startswith("comment contains the control character U+001B")
            assert server.status(run_id) == "waiting"  # none of them changed anything

            _send(conn, approve)
            assert server.settle(run_id, "succeeded", "failed") == "succeeded"
            _send(conn, approve)  # redelivered: nothing happens again, nothing dead-lettered
            cleanup = {
                "command": "cleanup",
                "run": run_id,
                "notes": "checked",
                "principal": "olle",
                "role": "operator",
                "idempotency_key": f"{run_id}-cleanup",
            }
            _send(conn, cleanup)
            _send(conn, cleanup)
            _send(conn, {**cleanup, "idempotency_key": f"{run_id}-cleanup-again"})
            assert dead.get(timeout=30).payload["reason"] == (
                f"run {run_id} already has a cleanup run"
            )
            _send(conn, {"command": "commit", "run": run_id}, key=KEY)
            assert dead.get(timeout=30).payload["reason"].startswith(
                "the message is not a command"
            )
            with server.client(Role.VIEWER) as viewer:
                children = until(
                    lambda: viewer.get(f"/api/v1/runs?parent={run_id}").json(),
                    what="the cleanup run",
                )
            assert [c["operation"] for c in children] == ["cleanup"]
            assert server.settle(children[0]["id"], "succeeded", "failed") == "succeeded"
            assert children[0]["requested_by"] == "olle (operator via signed command)"
            assert server.test_vms() == []
            with server.client(Role.VIEWER) as viewer:
                report = viewer.get(f"/api/v1/runs/{run_id}").json()
            (gate,) = report["approvals"]
            assert gate["decided_by"] == "carol (approver via signed command)"
            assert gate["comment"] == "from the change system"
            assert server.redis.client().llen(DEAD_QUEUE) == 0  # the repeats were not refused
        finally:
            consumer.stop()
            thread.join(timeout=30)
            dead.close()
