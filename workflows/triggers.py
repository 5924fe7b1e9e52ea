"""Queue triggers: start runs from plain JSON messages on ``ferryman.runs``.

A message body is ``{"plan": "three-tier", "type": "test", "requested_by": "...",
"idempotency_key": "...", "direction": "failover", "options": {...}}`` (content type
``application/json``). The plan is looked up in the configured plan files
(``FERRYMAN_PLAN_PATHS``: files or folders; a folder contributes its plan and fabric files and
skips, with a warning, other YAML such as a lab topology), read again for every message so
edits apply without a restart. Delivery is at least once, so the idempotency key decides: a key
already used returns the existing run and starts nothing.

A message that can never start a run goes to ``ferryman.runs.dead`` with the reason and the
original body; the consumer acknowledges it and keeps running. That is: an envelope kombu
cannot decode (not JSON, no ``properties``, a body that is not base64, as a shell producer may
LPUSH onto Redis), a content type other than ``application/json``, a body that is not a run
request, options that do not fit the failover type's schema (:mod:`workflows.options`), an
idempotency key already used for another request (the reason names both), an unknown plan or
one that does not compile. A store or broker failure is not the message's fault: the message
is requeued after a pause and tried again, so a PostgreSQL or Redis restart loses nothing, and
kombu's ConsumerMixin reconnects to the broker. Both queues sit on direct exchanges of the same
name, and are declared as quorum queues (``x-queue-type: quorum``: replicated, durable, for
RabbitMQ; Redis ignores the argument). A queue of the same name already on RabbitMQ with
other settings (a classic queue made before) stops the consumer with one line saying what
to do (:class:`QueueMismatch`).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from queue import Empty
from typing import Annotated, Any, Literal

import sqlalchemy.exc
from kombu import Connection, Exchange, Message, Producer, Queue
from kombu.exceptions import OperationalError as KombuOperationalError
from kombu.mixins import ConsumerMixin
from kombu.transport import redis as redis_transport
from kombu.utils.encoding import bytes_to_str
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from plans.errors import FerrymanError, TransientError
from plans.names import check_line
from workflows.engine import BundleLike, Engine
from workflows.options import OptionsInvalid, validate_options
from workflows.steps import RUNS_QUEUE
from workflows.store import Run, repository

log = logging.getLogger(__name__)

DEAD_QUEUE = f"{RUNS_QUEUE}.dead"
JSON = "application/json"
MIN_BACKOFF = 0.5  # seconds before a requeued trigger comes back, doubling up to MAX_BACKOFF
MAX_BACKOFF = 10.0


class TriggerRequest(BaseModel):
    """The body of a trigger message."""

    model_config = ConfigDict(extra="forbid")

    plan: str = Field(min_length=1)
    type: Literal["test", "planned", "unplanned"]
    direction: Literal["failover", "failback"] = "failover"
    requested_by: Annotated[str, Field(min_length=1), AfterValidator(check_line)]
    idempotency_key: str = Field(min_length=1, max_length=200)
    options: dict[str, Any] = Field(default_factory=dict)


PLAN_KEYS = frozenset({"version", "include", "fabric", "plans"})
_WARNED: set[Path] = set()


def is_plan_file(path: Path) -> bool:
    """Whether ``path`` holds a plan or fabric file: a mapping of the format's keys only,
    with a ``fabric`` or ``plans`` section (a lab topology or a compose file is not)."""
    from plans.loader import load_file

    loaded = load_file(path)
    if not hasattr(loaded, "data"):
        return False
    data = loaded.data
    return set(data) <= PLAN_KEYS and bool({"fabric", "plans"} & set(data))


def plan_files(paths: Sequence[str], *, skipped: list[Path] | None = None) -> list[Path]:
    """The plan and fabric files named by ``paths``.

    A folder expands to its ``*.yaml``/``*.yml`` files that are plan or fabric files; the
    others (a lab topology, a compose file) are skipped, logged and listed in ``skipped``.
    A file named directly is always loaded, so its problems are reported.
    """
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for candidate in sorted([*path.glob("*.yaml"), *path.glob("*.yml")]):
                if is_plan_file(candidate):
                    files.append(candidate)
                elif candidate not in _WARNED:
                    _WARNED.add(candidate)  # once per file: the files are read per message
                    log.warning(
                        "FERRYMAN_PLAN_PATHS: skipped %s: not a plan or fabric file "
                        "(its top level is not version/include/fabric/plans)",
                        candidate,
                    )
                if skipped is not None and candidate not in files:
                    skipped.append(candidate)
        else:
            files.append(path)
    return files


def bundle_loader(paths: Sequence[str]) -> Callable[[], BundleLike]:
    """Load the configured plan files afresh on each call."""

    def load() -> BundleLike:
        from plans import load_bundle

        files = plan_files(paths)
        if not files:
            raise FerrymanError("no plan files configured: set FERRYMAN_PLAN_PATHS")
        return load_bundle(files)

    return load


# A quorum queue drops a message returned more often than its delivery limit (20 by default
# from RabbitMQ 4.0); a trigger requeued while the store is down must outlast a long outage.
QUORUM = {"x-queue-type": "quorum", "x-delivery-limit": 1_000_000}


def durable_queue(name: str) -> Queue:
    """``name`` on a direct exchange of the same name, as a quorum queue on RabbitMQ (other
    transports ignore the queue type): what every producer and consumer declares."""
    return Queue(name, Exchange(name, "direct"), routing_key=name, queue_arguments=dict(QUORUM))


def queues() -> tuple[Queue, Queue]:
    """The trigger queue and its dead-letter queue."""
    return durable_queue(RUNS_QUEUE), durable_queue(DEAD_QUEUE)


class QueueMismatch(FerrymanError):
    """A queue exists on the broker with settings other than Ferryman declares."""


def queue_mismatch(exc: BaseException) -> QueueMismatch | None:
    """The one-line error for RabbitMQ's PRECONDITION_FAILED on declaring a queue that exists
    with other arguments (a classic queue where a quorum queue is declared); else None."""
    text = str(getattr(exc, "reply_text", "") or exc)
    if getattr(exc, "reply_code", getattr(exc, "code", None)) != 406 or "inequivalent" not in text:
        return None
    found = re.search(r"for queue '([^']*)' in vhost '([^']*)'", text)
    queue, vhost = found.groups() if found else ("the queue", "/")
    return QueueMismatch(
        f"queue {queue!r} already exists on the broker with other settings ({text.strip()}); "
        f"Ferryman declares it as a quorum queue: move its messages elsewhere, delete it "
        f"(rabbitmqctl delete_queue -p {vhost} {queue}) and start again"
    )


@contextmanager
def declaring() -> Iterator[None]:
    """Declare queues: a queue that exists with other settings is :class:`QueueMismatch`.

    kombu's ConsumerMixin would take RabbitMQ's refusal, a channel error, for a lost
    connection and retry it every second forever.
    """
    try:
        yield
    except Exception as exc:
        mismatch = queue_mismatch(exc)
        if mismatch is None:
            raise
        raise mismatch from None


class Refused(FerrymanError):
    """A trigger that can never start a run as sent: it is dead-lettered with this reason."""


def _reason(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, FerrymanError) else f"{type(exc).__name__}: {exc}"


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` may go away on its own (the store or the broker is restarting).

    Such a trigger is requeued, never dead-lettered: the request is valid, the moment is not.
    """
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(
        exc,
        sqlalchemy.exc.OperationalError
        | sqlalchemy.exc.InterfaceError
        | sqlalchemy.exc.TimeoutError
        | sqlalchemy.exc.DisconnectionError,
    ):
        return True
    return isinstance(exc, KombuOperationalError | ConnectionError | TimeoutError)


def envelope_problem(payload: Any) -> str | None:
    """Why a raw kombu envelope (as a non-Python producer writes it) cannot be delivered.

    kombu's Redis transport would raise on each of these (KeyError, binascii.Error) and lose
    the message, which it has already taken off the list.
    """
    if not isinstance(payload, dict):
        return "the envelope is not a JSON object; see the README for kombu's envelope"
    properties = payload.get("properties")
    if not isinstance(properties, dict):
        return "the envelope has no 'properties' object; see the README for kombu's envelope"
    info = properties.get("delivery_info")
    if not isinstance(info, dict) or not {"exchange", "routing_key"} <= set(info):
        return "the envelope's properties have no delivery_info with exchange and routing_key"
    if not isinstance(properties.get("delivery_tag"), str) or not properties["delivery_tag"]:
        return "the envelope's properties have no delivery_tag (a unique text)"
    headers = payload.get("headers")
    if headers is not None and not isinstance(headers, dict):
        return "the envelope's headers are not an object"
    body = payload.get("body")
    if body is not None and not isinstance(body, str):
        return "the envelope's body is not text"
    encoding = properties.get("body_encoding")
    if encoding not in (None, "utf-8", "base64"):
        return f"the envelope's body_encoding {str(encoding)[:40]!r} is not base64 or utf-8"
    if encoding == "base64" and body:
        try:
            base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return "the envelope's body is not valid base64"
    return None


class _GuardedRedisChannel(redis_transport.Channel):
    """kombu's Redis channel, dead-lettering envelopes it cannot decode instead of raising.

    The list item is already popped when kombu decodes it, so a decode error there loses the
    message and stops the consumer. Here the raw item is checked first and, when it is not a
    usable envelope, written to the dead-letter queue with the reason.
    """

    def _brpop_read(self, **options: Any) -> bool:
        try:
            try:
                dest__item = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                # as kombu does: drop the connection so the next iteration reconnects
                self.client.connection.disconnect()
                raise
            if not dest__item:
                raise Empty()
            dest, item = dest__item
            dest = bytes_to_str(dest).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            payload = self._checked(item)
            if payload is not None:
                self.connection._deliver(payload, dest)
            return True
        finally:
            self._in_poll = None  # type: ignore[assignment]  # kombu's own reset
            flush = getattr(self, "_flush_brpop_reauth", None)
            if flush is not None:
                flush()

    def _get(self, queue: str, timeout: Any = None) -> Any:
        with self.conn_or_acquire() as client:
            for pri in self.priority_steps:
                item = client.rpop(self._q_for_pri(queue, pri))
                if item:
                    payload = self._checked(item)
                    if payload is not None:
                        return payload
        raise Empty()

    def _checked(self, item: bytes | str) -> dict[str, Any] | None:
        """The decoded envelope, or None after dead-lettering it with the reason."""
        text = bytes_to_str(item)
        try:
            payload = json.loads(text)
        except (ValueError, RecursionError):
            problem: str | None = "the envelope is not JSON; see the README for kombu's envelope"
        else:
            problem = envelope_problem(payload)
        if problem is None:
            return dict(payload)
        log.warning("trigger envelope refused, sent to %s: %s", DEAD_QUEUE, problem)
        letter = self.prepare_message(
            json.dumps({"reason": problem, "body": text}),
            content_type="application/json",
            content_encoding="utf-8",
            headers={"x-ferryman-reason": problem[:500]},
        )
        # straight onto the dead-letter list: no exchange lookup that could fail here
        self.basic_publish(letter, exchange="", routing_key=DEAD_QUEUE)
        return None


class _GuardedRedisTransport(redis_transport.Transport):
    """kombu's Redis transport with :class:`_GuardedRedisChannel`."""

    Channel = _GuardedRedisChannel


class TriggerConsumer(ConsumerMixin):
    """Consumes ``ferryman.runs`` until stopped; one message at a time.

    kombu's ConsumerMixin reconnects when the broker goes away. Each message ends one of
    three ways: a run is started (or found, for a used idempotency key) and the message is
    acknowledged; the message can never start a run and is dead-lettered with the reason,
    then acknowledged; or the store or the broker failed for the moment and the message is
    requeued after a pause, never lost.
    """

    def __init__(
        self, engine: Engine, connection: Connection, load: Callable[[], BundleLike]
    ) -> None:
        self.engine = engine
        self.connection = connection
        self.load = load
        self.stopping = threading.Event()
        self.backoff = 0.0
        # called once, when the queues are declared and consuming has begun
        self.on_ready: Callable[[], None] | None = None

    # -- consuming

    def create_connection(self) -> Connection:
        """A connection of our own; on Redis, one that dead-letters broken envelopes."""
        if getattr(self.connection, "transport_cls", None) in ("redis", "rediss"):
            return self.connection.clone(transport=_GuardedRedisTransport)
        return self.connection.clone()

    def get_consumers(self, consumer: Any, channel: Any) -> list[Any]:
        """One consumer of ``ferryman.runs``; the dead-letter queue is declared beside it."""
        runs, dead = queues()
        with declaring():
            dead.bind(channel).declare()
            # on_message: the raw message, undecoded: decoding is ours, so a bad body is a reason
            return [consumer([runs], on_message=self._on_message, accept=None, prefetch_count=1)]

    def on_consume_ready(
        self, connection: Any, channel: Any, consumers: Any, **kwargs: Any
    ) -> None:
        """The queues are declared and consumed: say so once (not again on a reconnection)."""
        ready, self.on_ready = self.on_ready, None
        if ready is not None:
            ready()

    def on_connection_error(self, exc: BaseException, interval: float) -> None:
        """Log, then kombu retries the connection after ``interval`` seconds."""
        log.warning("broker unreachable (%s); retrying in %.1f s", exc, interval)

    def run(self, *, poll: float = 0.5) -> None:  # type: ignore[override]
        """Consume until :meth:`stop` is called, reconnecting when the broker goes away."""
        self.should_stop = False
        super().run(safety_interval=poll)

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current message."""
        self.should_stop = True
        self.stopping.set()

    # -- one message

    def handle(self, body: bytes | str, content_type: str | None = "application/json") -> Run:
        """Start (or find) the run a message asks for.

        Raises :class:`Refused` (or another FerrymanError) with the reason when the message
        can never start a run, and the store's or broker's own error when it failed for now.
        """
        if content_type is not None and content_type.split(";")[0].strip() != JSON:
            raise Refused(
                f"the message's content type is {content_type[:60]!r}; only {JSON} is accepted"
            )
        if content_type is None:
            raise Refused(f"the message has no content type; only {JSON} is accepted")
        try:
            data = json.loads(body)
        except (TypeError, ValueError) as exc:
            raise Refused(f"the message is not JSON ({exc})") from None
        except RecursionError:
            # json.loads recurses once per nesting level; a hostile body exhausts the stack
            raise Refused(
                "the message is not JSON Ferryman reads: it is nested too deeply; send a flat "
                "object with plan, type, requested_by and idempotency_key"
            ) from None
        try:
            request = TriggerRequest.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
            )
            raise Refused(f"the message is not a run request: {problems}") from None
        try:
            options = validate_options(request.type, request.options)
        except OptionsInvalid as exc:
            raise Refused(f"the message is not a run request: {exc}") from None
        self._same_request(request, options)
        bundle = self.load()
        run = self.engine.start(
            bundle,
            request.plan,
            request.type,
            request.direction,
            options=options,
            requested_by=request.requested_by,
            idempotency_key=request.idempotency_key,
        )
        # a concurrent trigger with the same key may have won the race with another request
        self._check_same(run, request, options)
        return run

    def _same_request(self, request: TriggerRequest, options: dict[str, Any]) -> None:
        with self.engine.db.session() as session:
            existing = repository.find_run_by_key(session, idempotency_key=request.idempotency_key)
        if existing is not None:
            self._check_same(existing, request, options)

    @staticmethod
    def _check_same(run: Run, request: TriggerRequest, options: dict[str, Any]) -> None:
        used = (run.plan, run.operation, run.direction, dict(run.options or {}))
        asked = (request.plan, request.type, request.direction, options)
        if used != asked:
            raise Refused(
                f"idempotency key {request.idempotency_key!r} is already used by run {run.id} "
                f"({_describe(*used)}); this message asks for {_describe(*asked)}: "
                "use a new key for a new request"
            )

    def _on_message(self, message: Message) -> None:
        try:
            run = self.handle(message.body, message.content_type)
        except Exception as exc:  # anything: the consumer must keep running
            if is_transient(exc):
                recorded = getattr(exc, "run_id", None)
                if recorded:
                    # the run is committed; the workers' watch sends it when the broker is back
                    log.warning("trigger -> run %s, recorded, not yet sent: %s", recorded, exc)
                    self.backoff = 0.0
                    message.ack()
                    return
                self._requeue(message, exc)
                return
            reason = _reason(exc)
            log.warning("trigger refused, sent to %s: %s", DEAD_QUEUE, reason)
            self._dead_letter(message, reason)
        else:
            log.info("trigger %s -> run %s", message.delivery_tag, run.id)
        self.backoff = 0.0
        message.ack()

    def _requeue(self, message: Message, exc: BaseException) -> None:
        """Put the message back after a pause that grows while the failure lasts."""
        self.backoff = min(MAX_BACKOFF, max(MIN_BACKOFF, self.backoff * 2))
        log.warning(
            "trigger requeued, retrying in %.1f s: %s is unavailable for now (%s)",
            self.backoff,
            "the store" if isinstance(exc, sqlalchemy.exc.SQLAlchemyError) else "a service",
            _reason(exc).splitlines()[0][:300],
        )
        self.stopping.wait(self.backoff)
        message.requeue()

    def dead_letter_queue(self) -> Queue:
        """Where a message this consumer refuses goes, with the reason."""
        return queues()[1]

    def _dead_letter(self, message: Message, reason: str) -> None:
        body = (
            message.body.decode("utf-8", "replace")
            if isinstance(message.body, bytes)
            else (str(message.body))
        )
        dead = self.dead_letter_queue()
        with Producer(message.channel) as producer:
            producer.publish(
                {"reason": reason, "body": body},
                exchange=dead.exchange,
                routing_key=dead.routing_key,
                declare=[dead],
                serializer="json",
                headers={"x-ferryman-reason": reason[:500]},
            )


def _describe(plan: str, kind: str, direction: str, options: dict[str, Any]) -> str:
    shown = json.dumps(options, sort_keys=True) if options else "no options"
    return f"plan {plan!r}, {kind}, {direction}, {shown}"
