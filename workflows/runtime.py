"""The composition root: one place that builds the store, the Celery app, the executors and
the adapters from one :class:`~workflows.settings.Settings`.

Every entry point (``ferryman worker``, ``ferryman triggers``, the run commands, the HTTP API,
the demo, the benchmarks) gets its parts here, so the commands and the engine never import an
adapter's internals. This module is the only one in ``workflows`` that knows ``workers``: it
imports it inside functions, so reading plans or settings never loads Celery or pypsrp.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from plans.errors import FerrymanError, TransientError
from workflows.compiler import Stage
from workflows.dispatch import CeleryDispatcher
from workflows.engine import Engine
from workflows.settings import Settings
from workflows.store.database import Database, pool_size_for

if TYPE_CHECKING:
    from celery import Celery

    from workers.tasks import Executor

log = logging.getLogger(__name__)


class BrokerUnavailable(TransientError):
    """The broker could not be reached to send a stage that is already committed.

    The run (or the decision) is recorded; the workers' watch sends the stage once the broker
    is back (after ``FERRYMAN_DISPATCH_GRACE``). ``run_id`` names the run.
    """

    def __init__(self, run_id: str, reason: str) -> None:
        super().__init__(
            f"run {run_id} is recorded but the broker cannot be reached ({reason}); the "
            "workers send it when the broker is back"
        )
        self.run_id = run_id
        self.reason = reason


class BoundedDispatcher(CeleryDispatcher):
    """A dispatcher whose broker errors become :class:`BrokerUnavailable`.

    The stage stays committed and unsent, which is exactly what the workers' sweep resends;
    a command says so in one line instead of a kombu traceback.
    """

    def __init__(self, app: Celery) -> None:
        super().__init__(app)
        # told a run's id once it is committed, before its first stage is sent (a command
        # prints the id at once, whatever the broker does next)
        self.on_recorded: Callable[[str], None] | None = None

    def dispatch(self, run_id: str, stage: Stage) -> None:
        """Send ``stage``; raise BrokerUnavailable when the broker cannot be reached."""
        from kombu.exceptions import OperationalError as KombuOperationalError

        if self.on_recorded is not None:
            self.on_recorded(run_id)
        try:
            super().dispatch(run_id, stage)
        except (KombuOperationalError, ConnectionError, OSError, TimeoutError) as exc:
            raise BrokerUnavailable(run_id, root_reason(exc)) from exc
        except Exception as exc:
            if not broker_failure(exc):
                raise
            raise BrokerUnavailable(run_id, root_reason(exc)) from exc


def broker_failure(error: BaseException) -> bool:
    """Whether ``error`` says the broker or the result backend could not be reached."""
    if type(error).__module__.split(".")[0] in ("redis", "kombu", "amqp"):
        return True  # redis-py's errors do not derive from OSError
    # Celery's Redis result backend gives up reconnecting with a bare RuntimeError
    return isinstance(error, RuntimeError) and "reconnect" in str(error)


def root_reason(error: BaseException) -> str:
    """The first line of the error that started ``error`` (Celery's "retry limit exceeded"
    says less than the "connection refused" under it)."""
    seen: set[int] = set()
    current: BaseException | None = error
    deepest = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__module__.split(".")[0] in ("redis", "kombu", "amqp"):
            deepest = current
        current = current.__cause__ or current.__context__
    return first_line(deepest)


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type when the message is empty)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@dataclass
class Runtime:
    """A wired engine: the Celery app, the engine, its database and the settings."""

    app: Celery
    engine: Engine
    db: Database
    settings: Settings


def open_store(settings: Settings, *, pool_size: int | None = None) -> Database:
    """The run store of ``settings``: embedded, tables are created when missing; otherwise
    the schema must be the migrations' newest (``ferryman db upgrade``), or SchemaMismatch
    says what to run."""
    if settings.embedded:
        return Database(settings.database_url, pool_size=pool_size)
    from workflows.migrations import require_current

    return require_current(Database(settings.database_url, create=False, pool_size=pool_size))


def create_app(settings: Settings, *, client: bool = False) -> Celery:
    """The Celery app; ``client``: a command that only sends, so broker waits are bounded."""
    from workers.app import create_app as build_app
    from workers.app import never_join_results

    app = build_app(settings)
    if client and not settings.embedded:
        # a command reads the store, never task results: subscribing to them would leave
        # subscriptions that reconnect to a gone Redis when collected at exit
        never_join_results()
        timeout = settings.broker_connect_timeout
        # one quick retry, then give up: the run is committed and the sweep sends it later;
        # Celery's defaults wait ~21 s (Redis backend) and kombu's up to 100 retries
        policy = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
        app.conf.update(
            broker_connection_timeout=timeout,
            broker_connection_retry=False,
            broker_connection_max_retries=1,
            task_publish_retry_policy=policy,
            redis_socket_connect_timeout=timeout,
            redis_socket_timeout=max(timeout, 5.0),
            result_backend_transport_options={
                **(app.conf.result_backend_transport_options or {}),
                "retry_policy": policy,
            },
        )
    return app


def executor_for(settings: Settings, **context_options: Any) -> Executor:
    """The real executors (Hyper-V over pypsrp, DNS), sized by ``settings``."""
    from workers.hyperv.psrp import configure_sessions_per_host
    from workers.tasks import default_executor

    configure_sessions_per_host(settings.psrp_sessions_per_host)
    return default_executor(**context_options)


def transport_options(settings: Settings) -> dict[str, Any]:
    """The broker's transport options as the workers use them (for consumers of other queues)."""
    from workers.app import transport_options as options

    return options(settings)


def protection_reader(context: Any) -> Any:
    """What reads a host's replication settings and state for ``protect status``."""
    from workers.executors.protection import HostProtectionReader

    return HostProtectionReader(context)


def host_clock(hv: Any) -> datetime | None:
    """A Hyper-V host's own clock now (``Get-Date -Format o``), to measure a replication's
    age on; None when the host does not answer it (the caller's clock is all there is)."""
    from workers.errors import CmdletFailed
    from workers.hyperv.protection import ProtectionHost

    try:
        return ProtectionHost(hv).clock()
    except CmdletFailed:
        return None


def leftover_test_vm_lookup() -> tuple[
    Callable[[str], str], Callable[[Any, str], Any], Callable[[str, str], str]
]:
    """The test-VM name, the VM lookup and the cleanup advice the test failover step uses, so
    ``plan check`` looks for a leftover test VM exactly as the step will."""
    from workers.executors.base import leftover_cleanup
    from workers.executors.lookup import find_vm
    from workers.hyperv.hyperv import name_of_test_vm

    return name_of_test_vm, find_vm, leftover_cleanup


def build_runtime(
    settings: Settings,
    executor: Executor | None = None,
    *,
    concurrency: int | None = None,
    client: bool = False,
) -> Runtime:
    """Wire app, tasks, store and engine (no worker started).

    ``concurrency``: the threads of the worker that will run in this process, which sizes the
    store's connection pool; ``client``: a command that sends work but runs none (bounded
    broker waits, broker errors as :class:`BrokerUnavailable`).
    """
    from workers.tasks import register

    app = create_app(settings, client=client)
    pool_size = None if concurrency is None else pool_size_for(concurrency)
    db = open_store(settings, pool_size=pool_size)
    engine = Engine(db, BoundedDispatcher(app), settings)
    if not client:  # a client only sends, by task name; it runs no task
        register(app, engine, executor or executor_for(settings))
    return Runtime(app, engine, db, settings)


@contextmanager
def for_command(settings: Settings, sites: Iterable[str]) -> Iterator[Runtime]:
    """A runtime for a command that acts on runs.

    With the in-memory broker no other process can run the work, so a worker thread runs here
    (for ``sites``) while the command lasts; with a shared broker the command only sends.
    """
    if settings.embedded:
        runtime = build_runtime(settings, executor_for(settings))
        try:
            with in_process_worker(runtime, sites):
                yield runtime
        finally:
            runtime.db.dispose()
        return
    runtime = build_runtime(settings, client=True)
    try:
        yield runtime
    finally:
        runtime.db.dispose()


@contextmanager
def embedded(
    settings: Settings,
    sites: Iterable[str],
    *,
    concurrency: int = 8,
    executor: Executor | None = None,
    **context_options: Any,
) -> Iterator[Runtime]:
    """The engine with a worker thread in this process (the demo, tests, small plans);
    ``context_options`` go to the real executors when no ``executor`` is given."""
    from workers.embedded import embedded as in_process

    chosen = executor or executor_for(settings, **context_options)
    with in_process(settings, sites, executor=chosen, concurrency=concurrency) as runtime:
        yield runtime


@contextmanager
def in_process_worker(runtime: Runtime, sites: Iterable[str]) -> Iterator[Runtime]:
    """A worker thread (and the workers' watch) for ``sites`` around an existing runtime:
    the in-memory broker's only worker."""
    from workers.embedded import worker

    with worker(runtime, sites):
        yield runtime


def close_sessions() -> None:
    """Close this process's PowerShell sessions (a lab that goes away takes them along)."""
    from workers.hyperv.psrp import shared_cache

    shared_cache().close()


def serve_worker(
    settings: Settings,
    sites: Iterable[str],
    *,
    concurrency: int | None = None,
    engine_queue: bool = True,
    loglevel: str = "INFO",
) -> None:
    """Run a Celery worker (threads pool) for ``sites`` plus the gate watch, until stopped."""
    from celery.signals import worker_ready

    from workers.app import never_join_results, queues_for
    from workflows.memory import keep_large_blocks_apart
    from workflows.recovery import Watch

    if settings.embedded:
        raise FerrymanError(
            "the in-memory broker cannot reach a separate worker; set FERRYMAN_BROKER_URL "
            "(e.g. redis://127.0.0.1:6379/0)"
        )
    for notice in settings.notices:
        log.warning("%s", notice)
    names = list(sites)
    threads = concurrency or settings.worker_concurrency
    keep_large_blocks_apart()  # before the pool's threads exist: a long-lived process's heaps
    runtime = build_runtime(settings, concurrency=threads)
    worker_ready.connect(lambda **_: never_join_results(), weak=False)
    watch = Watch(runtime.engine).start()
    try:
        runtime.app.Worker(
            queues=queues_for(names, engine=engine_queue),
            pool="threads",
            concurrency=threads,
            loglevel=loglevel,
            hostname=f"ferryman-{'-'.join(names)}@{socket.gethostname()}",
        ).start()
    finally:
        watch.stop()
        runtime.db.dispose()


def serve_triggers(
    settings: Settings, *, poll: float, announce: Callable[[str], None] = print
) -> None:
    """Consume ``ferryman.runs`` and start the runs it asks for, until interrupted."""
    from workflows.steps import RUNS_QUEUE
    from workflows.triggers import TriggerConsumer, bundle_loader

    if settings.embedded:
        raise FerrymanError("triggers need a shared broker; set FERRYMAN_BROKER_URL")
    loader = bundle_loader(settings.plan_paths)
    _consume(
        settings,
        lambda engine, conn: TriggerConsumer(engine, conn, loader),
        RUNS_QUEUE,
        poll=poll,
        announce=announce,
    )


def serve_commands(
    settings: Settings, key: bytes, *, poll: float, announce: Callable[[str], None] = print
) -> None:
    """Carry out the signed operator commands of ``ferryman.commands`` until interrupted."""
    from workflows.commands import COMMANDS_QUEUE, CommandConsumer

    if settings.embedded:
        raise FerrymanError("commands need a shared broker; set FERRYMAN_BROKER_URL")
    _consume(
        settings,
        lambda engine, conn: CommandConsumer(engine, conn, key),
        COMMANDS_QUEUE,
        poll=poll,
        announce=announce,
    )


def _consume(
    settings: Settings,
    consumer_for: Callable[[Engine, Any], Any],
    queue: str,
    *,
    poll: float,
    announce: Callable[[str], None],
) -> None:
    """Run the consumer of ``queue`` on the configured broker and store until interrupted."""
    from kombu import Connection

    from workers.app import transport_options

    for notice in settings.notices:
        log.warning("%s", notice)
    runtime = build_runtime(settings, client=True)
    try:
        with Connection(settings.broker_url, transport_options=transport_options(settings)) as conn:
            consumer = consumer_for(runtime.engine, conn)
            uri = conn.as_uri()
            # said once the queues are declared: a queue the broker refuses is one error line
            consumer.on_ready = lambda: announce(f"consuming {queue} on {uri}; Ctrl-C stops")
            try:
                consumer.run(poll=poll)
            except KeyboardInterrupt:
                consumer.stop()
    finally:
        runtime.db.dispose()


def start_flower(settings: Settings, argv: list[str], environ: dict[str, str]) -> None:
    """Run Flower on the configured broker with ``argv`` (its options) until stopped.

    ``environ`` receives ``FLOWER_BASIC_AUTH`` when the settings hold credentials, so they
    never appear in the process list.
    """
    from workers.app import create_app as build_app

    if settings.flower_basic_auth is not None:
        environ["FLOWER_BASIC_AUTH"] = settings.flower_basic_auth.get_secret_value()
    build_app(settings).start(["flower", *argv])
