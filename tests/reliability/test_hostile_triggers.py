"""The trigger consumer never loses a request when PostgreSQL goes away under it.

A store failure is not the message's fault: the trigger is requeued (never dead-lettered) and
starts its run once PostgreSQL is back, with the consumer still running. The cluster and the
Redis are the test's own.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection

from tests.support.servers import PostgresCluster, RedisServer, wait_for
from tests.triggers.test_foreign_producer import EXAMPLE, Recording, envelope, redis_cli_lpush
from workflows.engine import Engine
from workflows.settings import Settings
from workflows.store import Database, repository
from workflows.triggers import DEAD_QUEUE, TriggerConsumer, bundle_loader

pytestmark = pytest.mark.integration


@pytest.fixture
def postgres() -> Iterator[PostgresCluster]:
    """A throwaway cluster (user postgres must reach its directory, so not pytest's tmp)."""
    directory = Path(tempfile.mkdtemp(prefix="ferryman-pg-"))
    directory.chmod(0o755)
    cluster = PostgresCluster(directory / "cluster")
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        if cluster.running():
            cluster.stop("immediate")
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def request(key: str) -> str:
    body = {"plan": "three-tier", "type": "test", "requested_by": "ops", "idempotency_key": key}
    return envelope(json.dumps(body))


def test_a_trigger_waits_out_a_postgres_restart(
    postgres: PostgresCluster,
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = Settings(
        database_url=postgres.url().replace("postgresql://", "postgresql+psycopg://")
    )
    db = Database(settings.database_url)
    engine = Engine(db, Recording(), settings)
    connection = Connection(redis_server.url())
    consumer = TriggerConsumer(engine, connection, bundle_loader([str(EXAMPLE)]))
    thread = threading.Thread(target=consumer.run, kwargs={"poll": 0.1}, daemon=True)

    def keys() -> list[Any]:
        with db.session() as session:
            return sorted(r.idempotency_key for r in repository.list_runs(session=session))

    caplog.set_level("WARNING", logger="workflows.triggers")
    thread.start()
    try:
        redis_cli_lpush(redis_server.port, request("before"))
        wait_for(lambda: keys() == ["before"], timeout=60, what="the first run")
        # end it, so that its VMs are free for the next run of the same plan
        with db.session() as session:
            first = repository.find_run_by_key(session, idempotency_key="before")
        assert first is not None
        engine.cancel(first.id, by="test")
        postgres.stop("fast")
        redis_cli_lpush(redis_server.port, request("during"))
        wait_for(lambda: "trigger requeued" in caplog.text, timeout=60, what="a requeue")
        assert redis_server.client().llen(DEAD_QUEUE) == 0
        postgres.start()
        wait_for(lambda: keys() == ["before", "during"], timeout=90, what="the requeued run")
        assert thread.is_alive()
        assert redis_server.client().llen(DEAD_QUEUE) == 0, "a valid trigger was dead-lettered"
    finally:
        consumer.stop()
        thread.join(timeout=30)
        connection.release()
        db.dispose()
    assert not thread.is_alive()
