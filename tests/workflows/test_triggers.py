"""Queue triggers: a JSON message starts one run per idempotency key; bad ones are dead-lettered."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection

from plans.errors import FerrymanError
from tests.workflows.conftest import EXAMPLE
from tests.workflows.fakes import Recording
from workflows.engine import Engine
from workflows.settings import Settings
from workflows.store import Database, repository
from workflows.triggers import DEAD_QUEUE, TriggerConsumer, bundle_loader, queues


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/t.db")
    return Engine(Database(settings.database_url), Recording(), settings)


@pytest.fixture
def broker_url() -> str:
    # a private virtual host keeps this test's queues apart from other tests' messages
    return f"memory://localhost/{uuid.uuid4().hex}"


@pytest.fixture
def connection(broker_url: str) -> Iterator[Connection]:
    with Connection(broker_url, transport_options={"polling_interval": 0.005}) as conn:
        yield conn


def publish(conn: Connection, body: dict[str, Any] | str) -> None:
    runs = queues()[0]
    payload = body if isinstance(body, str) else json.dumps(body)
    with conn.Producer() as producer:
        producer.publish(
            payload,
            exchange=runs.exchange,
            routing_key=runs.routing_key,
            declare=[runs],
            content_type="application/json",
            content_encoding="utf-8",
        )


def dead_letters(conn: Connection, count: int) -> list[dict[str, Any]]:
    box = conn.SimpleQueue(DEAD_QUEUE)
    try:
        letters = []
        for _ in range(count):
            message = box.get(timeout=10)
            letters.append(message.payload)
            message.ack()
        return letters
    finally:
        box.close()


def request(**overrides: Any) -> dict[str, Any]:
    body = {
        "plan": "three-tier",
        "type": "test",
        "requested_by": "monitoring",
        "idempotency_key": "incident-7",
        "options": {},
    }
    body.update(overrides)
    return body


def test_messages_start_runs_once_and_bad_ones_are_dead_lettered(
    engine: Engine, connection: Connection, broker_url: str
) -> None:
    # kombu connections are not thread-safe: the consumer gets its own
    own = Connection(broker_url, transport_options={"polling_interval": 0.005})
    consumer = TriggerConsumer(engine, own, bundle_loader([str(EXAMPLE.parent)]))
    publish(connection, request())
    publish(connection, request())  # redelivered or duplicated: same key, same run
    publish(connection, "{not json")
    publish(connection, request(type="drill", idempotency_key="x"))
    publish(connection, request(plan="missing", idempotency_key="y"))
    publish(connection, request(idempotency_key="incident-8", direction="failback"))
    thread = threading.Thread(target=consumer.run, kwargs={"poll": 0.05})
    thread.start()
    try:
        letters = dead_letters(connection, 4)
    finally:
        consumer.stop()
        thread.join(10)
        own.release()
    assert not thread.is_alive()
    reasons = [letter["reason"] for letter in letters]
    assert reasons[0].startswith("the message is not JSON")
    assert letters[0]["body"] == "{not json"
    assert "type: Input should be 'test', 'planned' or 'unplanned'" in reasons[1]
    assert "no recovery plan named 'missing'" in reasons[2]
    with engine.db.session() as session:
        runs = repository.list_runs(session)
    assert [(r.idempotency_key, r.direction, r.requested_by) for r in runs] == [
        ("incident-7", "failover", "monitoring"),
    ]
    # incident-8 wants the same VMs while incident-7's test holds them
    assert f"held by run {runs[0].id} (test of plan three-tier" in reasons[3]


def test_deeply_nested_json_is_refused_with_a_clear_reason(engine: Engine) -> None:
    consumer = TriggerConsumer(engine, Connection("memory://"), bundle_loader([str(EXAMPLE)]))
    with pytest.raises(FerrymanError, match="not JSON Ferryman reads: it is nested too deeply"):
        consumer.handle("[" * 100_000 + "]" * 100_000)
    assert engine.dispatcher.sent == []  # type: ignore[attr-defined]


def test_plan_paths_load_only_plan_and_fabric_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from workflows.triggers import plan_files

    folder = tmp_path / "plans"
    folder.mkdir()
    for name in ("fabric.yaml", "three-tier.yaml"):
        (folder / name).write_text((EXAMPLE.parent / name).read_text())
    topology = Path(__file__).resolve().parents[2] / "deploy" / "lab" / "topology.yaml"
    (folder / "topology.yaml").write_text(topology.read_text())
    (folder / "compose.yml").write_text("services: {redis: {image: redis}}\n")
    skipped: list[Path] = []
    with caplog.at_level("WARNING", logger="workflows.triggers"):
        files = plan_files([str(folder)], skipped=skipped)
    assert [f.name for f in files] == ["fabric.yaml", "three-tier.yaml"]
    assert sorted(f.name for f in skipped) == ["compose.yml", "topology.yaml"]
    assert "skipped" in caplog.text and "topology.yaml" in caplog.text
    bundle = bundle_loader([str(folder)])()
    assert "three-tier" in bundle.plans  # type: ignore[attr-defined]
