"""The in-memory broker's transport: waits as long as asked, unless the worker must stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery.worker import state
from kombu import Connection, Exchange, Queue
from kombu.transport import memory

from workers.app import MemoryTransport, create_app
from workflows.settings import Settings


@pytest.fixture
def connection() -> Iterator[Connection]:
    with Connection("memory://", transport=MemoryTransport) as conn:
        yield conn


@pytest.fixture(autouse=True)
def worker_flags() -> Iterator[None]:
    saved = state.should_stop, state.should_terminate
    yield
    state.should_stop, state.should_terminate = saved


def consume(conn: Connection, name: str, got: list[object]) -> Queue:
    queue = Queue(name, Exchange(name), routing_key=name)
    consumer = conn.Consumer(queue, callbacks=[lambda body, message: got.append(body)])
    consumer.consume()
    return queue


def test_the_memory_broker_of_a_ferryman_app_uses_it(tmp_path: Path) -> None:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path}/t.db"))
    with app.connection_for_read() as conn:
        assert isinstance(conn.transport, MemoryTransport)


def test_other_brokers_keep_their_own_transport(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/t.db",
        broker_url="amqp://guest@127.0.0.1:1//",
        result_backend="redis://127.0.0.1:1/1",
    )
    app = create_app(settings)
    assert app.conf.broker_transport is None


def test_a_message_is_delivered_within_the_wait(connection: Connection) -> None:
    got: list[object] = []
    queue = consume(connection, "delivered", got)
    with connection.Producer() as producer:
        producer.publish({"n": 1}, exchange=queue.exchange, routing_key="delivered",
                         declare=[queue])  # fmt: skip
    connection.drain_events(timeout=5)
    assert got == [{"n": 1}]


def test_an_empty_queue_is_waited_on_for_the_whole_timeout(connection: Connection) -> None:
    consume(connection, "empty", [])
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        connection.drain_events(timeout=0.5)
    assert time.monotonic() - started >= 0.45  # not cut short into slices


def test_a_worker_told_to_stop_stops_waiting(connection: Connection) -> None:
    consume(connection, "stopping", [])

    def stop_soon() -> None:
        time.sleep(0.2)
        state.should_terminate = 0  # what Celery's start_worker sets: 0 is a stop too

    threading.Thread(target=stop_soon, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        connection.drain_events(timeout=120)
    assert time.monotonic() - started < 60  # the loop saw the flag, not the 120 s timeout



def test_a_memory_url_connects_without_a_host_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # kombu logged "No hostname was supplied. Reverting to default 'localhost'" for each
    # memory:// connection a Ferryman app cloned (twice in every `ferryman demo`)
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path}/f.db", broker_url="memory://"))
    with caplog.at_level("WARNING", logger="kombu.connection"):
        with app.connection_for_write() as conn:
            assert isinstance(conn.clone().transport, MemoryTransport)
        warned_by_ours = [r.getMessage() for r in caplog.records]
        with Connection("memory://", transport=memory.Transport) as plain:
            plain.clone()
    assert warned_by_ours == []
    # kombu's own memory transport still warns: the check sees the warning where it is made
    assert any("No hostname was supplied" in r.getMessage() for r in caplog.records)
