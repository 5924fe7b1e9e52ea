"""Hostile trigger messages on a real Redis: each is dead-lettered with its reason, none is lost,
and the consumer keeps running and still starts the good run that follows them."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from kombu import Connection

from tests.support.servers import RedisServer, wait_for
from tests.triggers.test_foreign_producer import EXAMPLE, Recording, envelope, redis_cli_lpush
from workflows.engine import Engine
from workflows.settings import Settings
from workflows.store import Database, repository
from workflows.triggers import DEAD_QUEUE, TriggerConsumer, bundle_loader

pytestmark = pytest.mark.integration


def request(key: str, **fields: Any) -> dict[str, Any]:
    body = {"plan": "three-tier", "type": "test", "requested_by": "ops", "idempotency_key": key}
    return body | fields


def raw_envelope(body: str, content_type: str = "application/json") -> str:
    data = json.loads(envelope(body))
    data["content-type"] = content_type
    return json.dumps(data)


class Consuming:
    """A TriggerConsumer running in a thread against a Redis of the test's own."""

    def __init__(self, redis_server: RedisServer, tmp_path: Path) -> None:
        self.redis = redis_server
        settings = Settings(database_url=f"sqlite:///{tmp_path}/runs.db")
        self.db = Database(settings.database_url)
        self.dispatcher = Recording()
        self.engine = Engine(self.db, self.dispatcher, settings)
        self.connection = Connection(redis_server.url())
        self.consumer = TriggerConsumer(self.engine, self.connection, bundle_loader([str(EXAMPLE)]))
        self.thread = threading.Thread(target=self.consumer.run, kwargs={"poll": 0.1}, daemon=True)

    def runs(self) -> list[Any]:
        with self.db.session() as session:
            return list(repository.list_runs(session=session))

    def letters(self) -> list[dict[str, Any]]:
        letters = []
        # LPUSH puts the newest first: reverse, oldest first
        # redis-py types a reply as sync-or-async: this client is sync
        for raw in reversed(cast(list[bytes], self.redis.client().lrange(DEAD_QUEUE, 0, -1))):
            item = json.loads(raw)
            body = item["body"]
            if item["properties"].get("body_encoding") == "base64":
                body = base64.b64decode(body).decode()
            letter = json.loads(body)
            letter["header"] = item["headers"].get("x-ferryman-reason", "")
            letters.append(letter)
        return letters

    def drained(self) -> bool:
        client = self.redis.client()
        return client.llen("ferryman.runs") == 0 and client.hlen("unacked") == 0


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def consuming(redis_server: RedisServer, tmp_path: Path) -> Iterator[Consuming]:
    setup = Consuming(redis_server, tmp_path)
    setup.thread.start()
    yield setup
    setup.consumer.stop()
    setup.thread.join(timeout=20)
    assert not setup.thread.is_alive()
    setup.connection.release()
    setup.db.dispose()


BROKEN_ENVELOPES = [
    ("not json at all", "the envelope is not JSON"),
    (json.dumps([1, 2]), "the envelope is not a JSON object"),
    (json.dumps({"body": "e30=", "content-type": "application/json"}), "no 'properties'"),
    (
        json.dumps(
            {
                "body": "%%%not base64%%%",
                "content-type": "application/json",
                "headers": {},
                "properties": {
                    "body_encoding": "base64",
                    "delivery_tag": "t1",
                    "delivery_info": {"exchange": "ferryman.runs", "routing_key": "ferryman.runs"},
                },
            }
        ),
        "not valid base64",
    ),
    (
        json.dumps({"body": "e30=", "properties": {"body_encoding": "base64"}}),
        "no delivery_info",
    ),
]


def test_undecodable_envelopes_are_dead_lettered_and_the_consumer_keeps_running(
    consuming: Consuming,
) -> None:
    for raw, _ in BROKEN_ENVELOPES:
        redis_cli_lpush(consuming.redis.port, raw)
    redis_cli_lpush(consuming.redis.port, envelope(json.dumps(request("after-the-junk"))))
    wait_for(lambda: len(consuming.runs()) == 1, timeout=30, what="the good trigger's run")
    wait_for(consuming.drained, timeout=30, what="every message taken")
    letters = consuming.letters()
    assert len(letters) == len(BROKEN_ENVELOPES)
    for (raw, reason), letter in zip(BROKEN_ENVELOPES, letters, strict=True):
        assert reason in letter["reason"] and letter["header"]
        assert letter["body"] == raw  # the original text, for whoever reads the dead letters
    assert consuming.consumer.should_stop is False and consuming.thread.is_alive()
    assert [run.idempotency_key for run in consuming.runs()] == ["after-the-junk"]


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (json.dumps(request("yaml")), "application/x-yaml", "only application/json"),
        ("plan: three-tier", "application/json", "the message is not JSON"),
        (
            json.dumps(request("typo", type="unplanned", options={"try_shutdwn": False})),
            "application/json",
            "unknown option 'try_shutdwn'",
        ),
        (
            json.dumps(request("soon", options={"wait_ip_timeout": "soon"})),
            "application/json",
            "option 'wait_ip_timeout'",
        ),
    ],
)
def test_bodies_that_cannot_start_a_run_are_dead_lettered(
    consuming: Consuming, body: str, content_type: str, reason: str
) -> None:
    redis_cli_lpush(consuming.redis.port, raw_envelope(body, content_type))
    wait_for(lambda: consuming.letters() != [], timeout=30, what="the dead letter")
    wait_for(consuming.drained, timeout=30, what="the message acknowledged")
    [letter] = consuming.letters()
    assert reason in letter["reason"]
    assert consuming.runs() == []


def test_a_reused_key_with_another_request_is_dead_lettered_naming_both(
    consuming: Consuming,
) -> None:
    first = request("incident-9")
    redis_cli_lpush(consuming.redis.port, envelope(json.dumps(first)))
    wait_for(lambda: len(consuming.runs()) == 1, timeout=30, what="the first run")
    run = consuming.runs()[0]
    # at-least-once: the same request again is the same run, not a dead letter
    redis_cli_lpush(consuming.redis.port, envelope(json.dumps(first)))
    other = request("incident-9", type="planned")
    redis_cli_lpush(consuming.redis.port, envelope(json.dumps(other)))
    wait_for(lambda: consuming.letters() != [], timeout=30, what="the dead letter")
    wait_for(consuming.drained, timeout=30, what="every message taken")
    [letter] = consuming.letters()
    reason = letter["reason"]
    assert "'incident-9'" in reason and run.id in reason
    assert "plan 'three-tier', test, failover" in reason
    assert "plan 'three-tier', planned, failover" in reason
    assert len(consuming.runs()) == 1


def test_the_consumer_reconnects_after_a_redis_restart(consuming: Consuming) -> None:
    redis_cli_lpush(consuming.redis.port, envelope(json.dumps(request("before"))))
    wait_for(lambda: len(consuming.runs()) == 1, timeout=30, what="the first run")
    consuming.engine.cancel(consuming.runs()[0].id, by="ops")  # frees the plan's VMs
    consuming.redis.stop()
    time.sleep(0.5)  # the consumer notices the broker is gone (its next BRPOP fails)
    consuming.redis.start()
    wait_for(lambda: redis.Redis(port=consuming.redis.port).ping(), timeout=30, what="redis again")
    redis_cli_lpush(consuming.redis.port, envelope(json.dumps(request("after"))))
    wait_for(lambda: len(consuming.runs()) == 2, timeout=60, what="the run after the restart")
    assert consuming.thread.is_alive()
    assert sorted(r.idempotency_key for r in consuming.runs()) == ["after", "before"]


def test_an_unused_key_is_a_fresh_run_per_message(consuming: Consuming) -> None:
    for count in range(1, 4):
        key = f"k-{uuid.uuid4().hex[:8]}"
        redis_cli_lpush(consuming.redis.port, envelope(json.dumps(request(key))))
        wait_for(lambda: len(consuming.runs()) == count, timeout=30, what=f"run {count}")  # noqa: B023
        # a VM is held by one run at a time: the next run of the plan waits for this one
        consuming.engine.cancel(consuming.runs()[0].id, by="ops")
    assert consuming.letters() == []
