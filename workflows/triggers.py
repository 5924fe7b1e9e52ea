"""Queue triggers: start runs from plain JSON messages on ``ferryman.runs``.

A message body is ``{"plan": "three-tier", "type": "test", "requested_by": "...",
"idempotency_key": "...", "direction": "failover", "options": {...}}`` (content type
``application/json``). The plan is looked up in the configured plan files
(``FERRYMAN_PLAN_PATHS``: files or folders; a folder contributes its plan and fabric files and
skips, with a warning, other YAML such as a lab topology), read again for every message so
edits apply without a restart. Delivery is at least once, so the idempotency key decides: a key
already used returns the existing run and starts nothing.

A message that cannot start a run (not JSON, wrong fields, unknown plan, a plan that does not
compile) goes to ``ferryman.runs.dead`` with the reason and the original body; the consumer
acknowledges it and keeps running. Both queues sit on direct exchanges of the same name.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from kombu import Connection, Exchange, Message, Queue
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from plans.errors import FerrymanError
from workflows.engine import BundleLike, Engine
from workflows.steps import RUNS_QUEUE
from workflows.store import Run

log = logging.getLogger(__name__)

DEAD_QUEUE = f"{RUNS_QUEUE}.dead"


class TriggerRequest(BaseModel):
    """The body of a trigger message."""

    model_config = ConfigDict(extra="forbid")

    plan: str = Field(min_length=1)
    type: Literal["test", "planned", "unplanned"]
    direction: Literal["failover", "failback"] = "failover"
    requested_by: str = Field(min_length=1)
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


def queues() -> tuple[Queue, Queue]:
    """The trigger queue and its dead-letter queue."""
    return (
        Queue(RUNS_QUEUE, Exchange(RUNS_QUEUE, "direct"), routing_key=RUNS_QUEUE),
        Queue(DEAD_QUEUE, Exchange(DEAD_QUEUE, "direct"), routing_key=DEAD_QUEUE),
    )


class TriggerConsumer:
    """Consumes ``ferryman.runs`` until stopped; one message at a time."""

    def __init__(
        self, engine: Engine, connection: Connection, load: Callable[[], BundleLike]
    ) -> None:
        self.engine = engine
        self.connection = connection
        self.load = load
        self.stopping = threading.Event()

    def handle(self, body: bytes | str) -> Run:
        """Start (or find) the run a message asks for; raises FerrymanError with the reason."""
        try:
            data = json.loads(body)
        except (TypeError, ValueError) as exc:
            raise FerrymanError(f"the message is not JSON ({exc})") from None
        except RecursionError:
            # json.loads recurses once per nesting level; a hostile body exhausts the stack
            raise FerrymanError(
                "the message is not JSON Ferryman reads: it is nested too deeply; send a flat "
                "object with plan, type, requested_by and idempotency_key"
            ) from None
        try:
            request = TriggerRequest.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
            )
            raise FerrymanError(f"the message is not a run request: {problems}") from None
        bundle = self.load()
        return self.engine.start(
            bundle,
            request.plan,
            request.type,
            request.direction,
            options=request.options,
            requested_by=request.requested_by,
            idempotency_key=request.idempotency_key,
        )

    def _on_message(self, message: Message) -> None:
        try:
            run = self.handle(message.body)
            log.info("trigger %s -> run %s", message.delivery_tag, run.id)
        except Exception as exc:  # anything: the consumer must keep running
            reason = str(exc) if isinstance(exc, FerrymanError) else f"{type(exc).__name__}: {exc}"
            log.warning("trigger refused, sent to %s: %s", DEAD_QUEUE, reason)
            self._dead_letter(message, reason)
        message.ack()

    def _dead_letter(self, message: Message, reason: str) -> None:
        body = (
            message.body.decode("utf-8", "replace")
            if isinstance(message.body, bytes)
            else (str(message.body))
        )
        dead = queues()[1]
        with self.connection.Producer() as producer:
            producer.publish(
                {"reason": reason, "body": body},
                exchange=dead.exchange,
                routing_key=DEAD_QUEUE,
                declare=[dead],
                serializer="json",
                headers={"x-ferryman-reason": reason[:500]},
            )

    def run(self, *, poll: float = 0.5) -> None:
        """Consume until :meth:`stop` is called."""
        runs, dead = queues()
        with self.connection.Consumer(
            [runs], callbacks=[], on_message=self._on_message, accept=None, prefetch_count=1
        ) as consumer:
            dead.bind(self.connection.default_channel).declare()
            del consumer  # consumption happens through drain_events below
            while not self.stopping.is_set():
                try:
                    self.connection.drain_events(timeout=poll)
                except TimeoutError:
                    continue

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current message."""
        self.stopping.set()
