"""The Redis transport: every message sent through one client per channel, on a real server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kombu import Connection, Exchange, Queue

from tests.support.servers import RedisServer, redis_server
from workers.app import RedisChannel, RedisTransport, broker_transport, create_app
from workflows.settings import Settings


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with redis_server() as running:
        yield running


def test_a_ferryman_app_on_redis_uses_it(tmp_path: Path, server: RedisServer) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/t.db", broker_url=server.url(3))
    app = create_app(settings)
    with app.connection_for_write() as conn:
        assert isinstance(conn.default_channel, RedisChannel)
        assert conn.default_channel.client.connection_pool.connection_kwargs["port"] == server.port
        assert conn.default_channel.client.connection_pool.connection_kwargs["db"] == 3


def test_tls_and_other_brokers_keep_kombus_transport() -> None:
    assert broker_transport("redis://127.0.0.1:6379/0") is RedisTransport
    assert broker_transport("rediss://127.0.0.1:6380/0") is None  # its scheme turns TLS on
    assert broker_transport("amqp://guest@127.0.0.1//") is None


def test_messages_and_events_go_through_one_client(server: RedisServer) -> None:
    queue = Queue("one-client", Exchange("one-client"), routing_key="one-client")
    events = Exchange("one-client-events", type="fanout")
    with Connection(server.url(4), transport=RedisTransport) as conn:
        channel = conn.channel()
        producer = conn.Producer(channel)
        for n in range(3):
            producer.publish({"n": n}, exchange=queue.exchange, routing_key="one-client",
                             declare=[queue])  # fmt: skip
            producer.publish({"event": n}, exchange=events, declare=[events])
        sender = channel._sender
        assert sender is not None
        producer.publish({"n": 3}, exchange=queue.exchange, routing_key="one-client")
        assert channel._sender is sender  # no new client for a message

        got = [queue(channel).get(no_ack=True).payload for _ in range(4)]
        assert got == [{"n": 0}, {"n": 1}, {"n": 2}, {"n": 3}]

        channel._pool = None  # what kombu does after a connection error: a new pool
        producer.publish({"n": 4}, exchange=queue.exchange, routing_key="one-client")
        assert channel._sender is not sender
        assert channel._sender.connection_pool is channel.pool
        message = queue(channel).get(no_ack=True)
        assert message is not None and message.payload == {"n": 4}
        channel.close()
