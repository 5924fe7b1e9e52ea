"""Publishing trigger messages and reading what the consumer made of them."""

from __future__ import annotations

import base64
import json
import random
import threading
from typing import Any, cast

from kombu import Connection
from sqlmodel import func, select

from tests.reliability.drill import Stack
from workers.app import transport_options
from workers.embedded import Runtime
from workflows.steps import RUNS_QUEUE
from workflows.store import Run
from workflows.triggers import DEAD_QUEUE, queues

CONFIRM_TIMEOUT = 20.0  # seconds to wait for a broker to take a message before sending again
PUBLISH_ATTEMPTS = 6


def publish(stack: Stack, bodies: list[str | bytes]) -> None:
    """Put raw bodies on ``ferryman.runs`` as a client of any language would.

    Each send gets :data:`CONFIRM_TIMEOUT` seconds (publisher confirms included, on RabbitMQ)
    and is made again on a new connection after that, as a careful producer does: a node
    restarted under it can leave a send waiting on a socket that never answers, whatever
    timeout the client library was given. The trigger is idempotent by its key, so a message
    sent twice is safe."""
    settings = stack.settings()
    runs = queues()[0]

    def send(body: str | bytes, outcome: list[BaseException | None]) -> None:
        try:
            with (
                Connection(
                    settings.broker_url, transport_options=transport_options(settings)
                ) as conn,
                conn.Producer() as producer,
            ):
                producer.publish(
                    body,
                    exchange=runs.exchange,
                    routing_key=RUNS_QUEUE,
                    declare=[runs],
                    content_type="application/json",
                    content_encoding="utf-8" if isinstance(body, str) else "binary",
                    retry=True,
                    timeout=CONFIRM_TIMEOUT,
                    confirm_timeout=CONFIRM_TIMEOUT,
                )
            outcome.append(None)
        except BaseException as exc:  # reported by the caller
            outcome.append(exc)

    for body in bodies:
        problem: BaseException | None = None
        for _attempt in range(PUBLISH_ATTEMPTS):
            outcome: list[BaseException | None] = []
            # a daemon thread: one left waiting on a dead socket does not hold the test up
            sender = threading.Thread(target=send, args=(body, outcome), daemon=True)
            sender.start()
            sender.join(CONFIRM_TIMEOUT + 10)
            if outcome == [None]:
                break
            problem = outcome[0] if outcome else TimeoutError("no answer from the broker")
        else:
            raise AssertionError(f"the broker did not take the trigger: {problem}")


def request(key: str, **fields: Any) -> str:
    """A well-formed trigger body for the example plan."""
    body = {
        "plan": "three-tier",
        "type": "test",
        "requested_by": "reliability",
        "idempotency_key": key,
        **fields,
    }
    return json.dumps(body)


def queue_length(stack: Stack, queue: str) -> int:
    """Messages waiting in a queue (kombu's Redis transport keeps one list per queue)."""
    return int(cast(int, stack.redis.client(0).llen(queue)))  # a sync client's reply


def unacked(stack: Stack) -> int:
    """Messages delivered to a consumer and not acknowledged yet."""
    return int(cast(int, stack.redis.client(0).hlen("unacked")))  # a sync client's reply


def dead_letters(stack: Stack) -> list[dict[str, Any]]:
    """The dead-letter queue's messages: ``reason``, the original ``body`` and the header."""
    letters = []
    # redis-py types a reply as sync-or-async
    for raw in cast(list[bytes], stack.redis.client(0).lrange(DEAD_QUEUE, 0, -1)):
        envelope = json.loads(raw)
        body = envelope["body"]
        if envelope["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body).decode("utf-8")
        letter = json.loads(body)
        letter["header"] = envelope["headers"].get("x-ferryman-reason", "")
        letters.append(letter)
    return letters


def run_count(runtime: Runtime, key: str | None = None) -> int:
    """Runs in the store (with that idempotency key, if given)."""
    query = select(func.count()).select_from(Run)
    if key is not None:
        query = query.where(Run.idempotency_key == key)
    with runtime.db.session() as session:
        return int(session.exec(query).one())


HOSTILE_CHARACTERS = "'\";$()`\n\t\\{}[]<>|&ÅäöЖ中😀\x00 "


def malformed(rng: random.Random, index: int) -> str | bytes:
    """One seeded malformed trigger message; every kind of mistake a client can make."""
    key = f"fuzz-{index}"
    weird = "".join(
        rng.choice("'\";$()`\n\t\\{}[]<>|&ÅäöЖ中😀\x00 ") for _ in range(rng.randint(1, 40))
    )
    kind = index % 12
    if kind == 0:  # not JSON at all
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200)))
    if kind == 1:  # JSON, but not an object
        return json.dumps(rng.choice([[1, 2], 42, "three-tier", None, True, 1.5]))
    if kind == 2:  # a required field missing
        body = json.loads(request(key))
        del body[rng.choice(["plan", "type", "requested_by", "idempotency_key"])]
        return json.dumps(body)
    if kind == 3:  # a field of the wrong type
        field, value = rng.choice(
            [("plan", 7), ("type", ["test"]), ("options", [1]), ("requested_by", None)]
        )
        return request(key, **{field: value})
    if kind == 4:  # an unknown field
        return request(key, **{weird or "x": 1})
    if kind == 5:  # a plan that does not exist, with a hostile name
        return request(key, plan=f"no-such-plan {weird}")
    if kind == 6:  # empty strings
        return request(key, plan="", requested_by="")
    if kind == 7:  # an idempotency key too long to store
        return request("k" * rng.randint(201, 5000))
    if kind == 8:  # an unknown failover type or direction
        return request(key, **rng.choice([{"type": "drill"}, {"direction": "sideways"}]))
    if kind == 9:  # truncated JSON
        text = request(key)
        return text[: rng.randint(1, len(text) - 1)]
    if kind == 10:  # invalid UTF-8 inside an otherwise JSON-looking body
        return b'{"plan": "three-tier\xff\xfe", "type": "test"}'
    # deeply nested JSON
    depth = rng.randint(500, 5000)
    return "[" * depth + "]" * depth
