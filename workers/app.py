"""The Celery app factory: Ferryman's conventions in one place.

See workflows/ARCHITECTURE.md, "Celery conventions".

JSON only; ``acks_late`` with ``task_reject_on_worker_lost`` so a task whose worker dies runs
again (every step is idempotent); prefetch 1 so a long step never holds others hostage; task
events on for Flower; on Redis a visibility timeout longer than the longest task and a faster
look for unacknowledged messages (kombu's default looks about every 100 s).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from celery import Celery
from celery.backends.redis import RedisBackend
from kombu.transport import memory
from kombu.transport import redis as redis_transport

from workers.compat import serialise_ast_parse
from workflows.settings import Settings
from workflows.steps import DRILL_TICK, ENGINE_QUEUE, TASK_DRILLS, site_queue

MEMORY_POLLING_INTERVAL = 0.005  # the memory transport otherwise polls once a second
DRAIN_SLICE = 0.1  # how long an in-memory worker may take to notice it must stop
AMQP_SCHEMES = ("amqp://", "amqps://", "pyamqp://")


def is_rabbitmq(url: str) -> bool:
    """Whether ``url`` names an AMQP broker (RabbitMQ)."""
    return url.startswith(AMQP_SCHEMES)


class MemoryTransport(memory.Transport):
    """kombu's in-memory transport, for a worker that stops within a tenth of a second.

    Celery's loop for a threads-pool worker drains the broker for 2 s at a time and looks at
    its stop flag only in between, so stopping an in-process worker (``ferryman demo``, every
    command on the in-memory broker) took 2 s of waiting on an empty queue. Here a drain waits
    in slices of ``DRAIN_SLICE`` and gives up early once the worker is told to stop; otherwise
    it waits as long as it was asked to. The queues are the memory transport's own (shared
    by every connection of the process). A ``memory://`` URL names no host and needs none:
    there is no default host to fall back to (kombu warned that it used "localhost").
    """

    @property
    def default_connection_params(self) -> dict[str, Any]:
        return {"port": self.default_port}

    def drain_events(self, connection: Any, timeout: Any = None, **kwargs: Any) -> Any:
        if timeout is None or timeout <= DRAIN_SLICE:
            return super().drain_events(connection, timeout=timeout)
        deadline = time.monotonic() + timeout
        while True:
            remaining = max(0.001, deadline - time.monotonic())
            try:
                return super().drain_events(connection, timeout=min(DRAIN_SLICE, remaining))
            except TimeoutError:
                if _stopping() or time.monotonic() >= deadline:
                    raise


class RedisChannel(redis_transport.Channel):
    """kombu's Redis channel, sending through one Redis client instead of a new one a message.

    kombu builds a ``redis.Redis`` client (its response callbacks, its options) for every
    message it sends outside a pipeline: each task sent and each Celery event a worker
    publishes for Flower, several per task. The client is only a front for the channel's
    connection pool, which hands out a connection per command and is safe to share between
    threads, so this channel keeps one and builds a new one only when the pool was replaced
    (after a connection error).
    """

    _sender: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        sender = self._sender
        if sender is None or sender.connection_pool is not self.pool:
            sender = self._sender = self._create_client()
        yield sender


class RedisTransport(redis_transport.Transport):
    """kombu's Redis transport with :class:`RedisChannel`."""

    Channel = RedisChannel


def _stopping() -> bool:
    """Whether this process's Celery worker has been told to stop or terminate."""
    from celery.worker import state

    flags = (state.should_stop, state.should_terminate)
    return any(flag is not None and flag is not False for flag in flags)  # 0 means stop


def broker_transport(url: str) -> type[Any] | None:
    """Ferryman's transport class for the broker ``url``, None for kombu's own: the memory
    transport that stops promptly, and the Redis one that reuses its sending client
    (``redis://`` only: ``rediss://`` keeps kombu's, whose scheme turns TLS on)."""
    if url.startswith("memory://"):
        return MemoryTransport
    if url.startswith("redis://"):
        return RedisTransport
    return None


def transport_options(settings: Settings) -> dict[str, Any]:
    """Broker transport options for the configured broker."""
    url = settings.broker_url
    if url.startswith("memory://"):
        return {"polling_interval": MEMORY_POLLING_INTERVAL}
    if url.startswith(("redis://", "rediss://")):
        return {
            "visibility_timeout": settings.visibility_timeout,
            # restore a dead worker's unacknowledged tasks within ~10 s instead of ~100 s
            "unacked_restore_interval": 2,
            "unacked_restore_throttle": 5,
        }
    if is_rabbitmq(url):
        # publisher confirms: a send returns once RabbitMQ has the message, so a stage
        # committed and sent is never lost to a broker that died in between
        return {"confirm_publish": True}
    return {}


class UnawaitedRedisBackend(RedisBackend):
    """Redis results that nobody in Ferryman waits on: chords count their parts here, but a
    run's state is read from the store, never from a task's result.

    Celery's Redis backend subscribes to a result's channel whenever a result might be
    waited on: every task sent outside a worker, and every part of a chord's header (the
    group result's barrier), in workers too. The subscriptions are dropped only when the
    result objects are garbage collected, by a Redis call each, which may come after Redis has
    gone (then it retries the connection at exit). Here nothing subscribes, and waiting on a
    result is refused with what to do instead.
    """

    def on_task_call(self, producer: Any, task_id: str) -> None:
        """Sending a task subscribes to nothing."""

    def add_pending_result(
        self, result: Any, weak: bool = False, start_drainer: bool = True
    ) -> Any:
        """A result is never waited on here: nothing to subscribe to."""
        return result

    def add_pending_results(self, results: Any, weak: bool = False) -> Any:
        """As :meth:`add_pending_result`, for a group's results."""
        return results

    def wait_for_pending(self, result: Any, *args: Any, **kwargs: Any) -> Any:
        """Refused: a run's progress is in the store (``ferryman runs show``), not in a
        Celery result."""
        raise RuntimeError(
            f"task {result.id}: Ferryman does not wait on Celery results; read the run's "
            "state from the store (ferryman runs show RUN)"
        )


def result_backend_url(url: str | None) -> str | None:
    """The result backend for Celery: Redis through :class:`UnawaitedRedisBackend`."""
    if url is not None and url.startswith(("redis://", "rediss://")):
        return f"{UnawaitedRedisBackend.__module__}:{UnawaitedRedisBackend.__name__}+{url}"
    return url


def create_app(settings: Settings, *, name: str = "ferryman") -> Celery:
    """A configured Celery app; tasks are registered by :func:`workers.tasks.register`."""
    serialise_ast_parse()  # threads-pool workers format tracebacks concurrently
    app = Celery(
        name,
        broker=settings.broker_url,
        backend=result_backend_url(settings.result_backend),
        set_as_current=False,
    )
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_send_task_events=True,
        task_send_sent_event=True,
        # No STARTED result per task: nothing reads it (Flower follows the task-started event,
        # the run's truth is the store), and it cost a result-backend write per task.
        task_track_started=False,
        task_default_queue=ENGINE_QUEUE,
        task_create_missing_queues=True,
        broker_transport_options=transport_options(settings),
        broker_transport=broker_transport(settings.broker_url),
        broker_connection_retry_on_startup=True,
        result_expires=7 * 24 * 3600,
        worker_pool="threads",
        worker_concurrency=settings.worker_concurrency,
        worker_hijack_root_logger=False,
        # ``celery -A workers.app beat`` (one per deployment) asks a worker every minute to
        # start the scheduled drills that are due (the schedules are in the store)
        beat_schedule={
            "ferryman-drills": {
                "task": TASK_DRILLS,
                "schedule": DRILL_TICK,
                "options": {"queue": ENGINE_QUEUE, "expires": DRILL_TICK},
            }
        },
    )
    if is_rabbitmq(settings.broker_url):
        # quorum queues (replicated, durable, poison messages counted) for the engine's and
        # every site's queue, created as the workers name them; Celery turns global QoS off
        # for them and delays retries with RabbitMQ's native delayed delivery, which wants
        # topic exchanges
        app.conf.update(
            task_default_queue_type="quorum",
            task_create_missing_queue_type="quorum",
            task_default_exchange_type="topic",
            task_create_missing_queue_exchange_type="topic",
            worker_detect_quorum_queues=True,
        )
    if settings.broker_url.startswith(("redis://", "rediss://")):
        app.conf.result_backend_transport_options = {
            "visibility_timeout": settings.visibility_timeout
        }
    return app


def never_join_results() -> None:
    """Tell Celery this process never waits on task results (the store is the truth).

    Outside prefork children Celery assumes a caller may ``.get()`` a result and subscribes to
    every task it sends (a retry, a chord callback); those subscriptions pile up in a
    long-running worker and are dropped only by garbage collection, which may come after the
    broker is gone and then retries the connection for minutes. Celery's own prefork pool
    sets the same process-wide flag; there is no public setter for it.
    """
    from celery._state import _set_task_join_will_block

    _set_task_join_will_block(True)


def queues_for(sites: Iterable[str], *, engine: bool = True) -> list[str]:
    """The queues a worker for ``sites`` consumes (plus the engine's, by default)."""
    queues = [site_queue(site) for site in sites]
    return [*queues, ENGINE_QUEUE] if engine else queues


_tools_app: Celery | None = None


def tools_app() -> Celery:
    """The app Celery's own command-line tools load (``celery -A workers inspect ping``,
    ``celery -A workers events``): configured from the ``FERRYMAN_*`` environment, with no
    tasks registered; it inspects and monitors workers, it runs none."""
    global _tools_app
    if _tools_app is None:
        _tools_app = create_app(Settings.from_env())
    return _tools_app


def __getattr__(name: str) -> Any:
    # ``celery -A workers.app`` looks for an attribute named ``celery`` (or ``app``) here
    if name == "celery":
        return tools_app()
    raise AttributeError(f"module 'workers.app' has no attribute {name!r}")
