"""A run trigger from a producer that is not Python: the README's redis-cli example, verbatim.

kombu's Redis transport keeps a queue as a Redis list of JSON envelopes; any client that can
LPUSH such an envelope can start a run. This test pushes one with ``redis-cli`` and checks that
the consumer turns it into exactly one run, and that a malformed envelope is dead-lettered.
"""

from __future__ import annotations

import base64
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection

from tests.support.servers import RedisServer
from tests.workflows.fakes import Recording
from workflows.engine import Engine
from workflows.settings import Settings
from workflows.store import Database, repository
from workflows.triggers import DEAD_QUEUE, TriggerConsumer, bundle_loader

EXAMPLE = Path(__file__).resolve().parents[2] / "plans" / "examples" / "three-tier.yaml"

pytestmark = pytest.mark.integration


@pytest.fixture
def redis_port(tmp_path: Path) -> Iterator[int]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server.port
    server.stop()


def envelope(body: str) -> str:
    """What the README tells a non-Python producer to LPUSH onto ``ferryman.runs``."""
    return json.dumps(
        {
            "body": base64.b64encode(body.encode()).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {},
            "properties": {
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
                "delivery_mode": 2,
                "priority": 0,
                "delivery_info": {"exchange": "ferryman.runs", "routing_key": "ferryman.runs"},
            },
        }
    )


def redis_cli_lpush(port: int, item: str) -> None:
    subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), "LPUSH", "ferryman.runs", item],
        check=True,
        capture_output=True,
    )


def consume_until(consumer: TriggerConsumer, done: Any, timeout: float = 20) -> None:
    thread = threading.Thread(target=consumer.run, kwargs={"poll": 0.1}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not done():
            time.sleep(0.05)
    finally:
        consumer.stop()
        thread.join(timeout=10)


def test_redis_cli_producer_starts_exactly_one_run(redis_port: int, tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/runs.db")
    db = Database(settings.database_url)
    dispatcher = Recording()
    engine = Engine(db, dispatcher, settings)
    request = {
        "plan": "three-tier",
        "type": "test",
        "requested_by": "nagios",
        "idempotency_key": "incident-4711",
    }
    # The same trigger twice (at-least-once producers repeat themselves), then a broken one.
    redis_cli_lpush(redis_port, envelope(json.dumps(request)))
    redis_cli_lpush(redis_port, envelope(json.dumps(request)))
    redis_cli_lpush(redis_port, envelope('{"plan": "three-tier", "type": "tset"}'))

    with Connection(f"redis://127.0.0.1:{redis_port}/0") as conn:
        consumer = TriggerConsumer(engine, conn, bundle_loader([str(EXAMPLE)]))

        def drained() -> bool:
            import redis

            return redis.Redis(port=redis_port).llen("ferryman.runs") == 0

        consume_until(consumer, drained)
        dead = conn.SimpleQueue(DEAD_QUEUE)
        letter = dead.get(timeout=10)
        reason = letter.payload["reason"]
        letter.ack()
        dead.close()

    with db.session() as session:
        runs = repository.list_runs(session=session)
    assert [run.idempotency_key for run in runs] == ["incident-4711"]
    assert runs[0].requested_by == "nagios"
    assert len({run_id for run_id, _ in dispatcher.sent}) == 1
    assert reason.startswith("the message is not a run request")
    assert "type:" in reason and "requested_by:" in reason and "idempotency_key:" in reason
