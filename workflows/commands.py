"""Operator commands from the ``ferryman.commands`` queue: approve, reject, cleanup, commit,
cancel.

A message body is JSON (content type ``application/json``)::

    {"command": "approve", "run": "RUN", "gate": "confirm-databases", "comment": "...",
     "principal": "alice", "role": "approver", "idempotency_key": "change-4711-approve"}

(``notes`` for cleanup and commit, ``reason`` for cancel). Its header ``x-ferryman-signature``
is ``sha256=`` and the HMAC-SHA256 of the body's bytes under the shared key, which names the
principal and vouches for its role; the role is then checked like a token's
(:mod:`workflows.api.actions`). A message with the idempotency key of one already taken does
nothing again. A message that is not signed, not valid, not allowed for its role, or does not
fit the run goes to ``ferryman.commands.dead`` with the reason; one that failed only because
the store or broker is away for the moment is requeued (as the run triggers are). Both queues
are quorum queues on RabbitMQ, declared as the trigger queues are.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any, Literal

from kombu import Connection, Message, Queue
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from plans.errors import FerrymanError
from workflows.api.actions import Actions, Forbidden
from workflows.compiler import RunOperation
from workflows.engine import Engine, RunStateError
from workflows.operations import Operations
from workflows.statuses import RunStatus
from workflows.store import Run, repository
from workflows.store.tables import CommandReceipt
from workflows.tokens import Principal, Role
from workflows.triggers import JSON, Refused, TriggerConsumer, declaring, durable_queue

log = logging.getLogger(__name__)

COMMANDS_QUEUE = "ferryman.commands"
DEAD_QUEUE = f"{COMMANDS_QUEUE}.dead"
SIGNATURE_HEADER = "x-ferryman-signature"


class Command(BaseModel):
    """The body of a command message."""

    model_config = ConfigDict(extra="forbid")

    command: Literal["approve", "reject", "cleanup", "commit", "cancel"]
    run: str = Field(min_length=4, max_length=32)
    principal: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
    role: Role
    idempotency_key: str = Field(min_length=1, max_length=200)
    gate: str | None = Field(default=None, max_length=128)
    comment: str = Field(default="", max_length=4000)
    notes: str = Field(default="", max_length=4000)
    reason: str = Field(default="", max_length=4000)


def sign(key: bytes, body: bytes) -> str:
    """The signature header's value for ``body``."""
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def queues() -> tuple[Queue, Queue]:
    """The command queue and its dead-letter queue (quorum queues on RabbitMQ)."""
    return durable_queue(COMMANDS_QUEUE), durable_queue(DEAD_QUEUE)


class CommandConsumer(TriggerConsumer):
    """Consumes ``ferryman.commands`` until stopped, one message at a time."""

    def __init__(self, engine: Engine, connection: Connection, key: bytes) -> None:
        super().__init__(engine, connection, load=_no_plans)
        if not key:
            raise FerrymanError("the commands' signing key is empty: give one of 32 bytes or more")
        self.key = key
        self.actions = Actions(Operations(engine))
        self._headers: dict[str, Any] = {}

    def get_consumers(self, consumer: Any, channel: Any) -> list[Any]:
        """One consumer of ``ferryman.commands``; the dead-letter queue is declared beside it."""
        commands, dead = queues()
        with declaring():
            dead.bind(channel).declare()
            return [
                consumer([commands], on_message=self._on_message, accept=None, prefetch_count=1)
            ]

    def _on_message(self, message: Message) -> None:
        self._headers = dict(message.headers or {})
        try:
            run = self.handle(message.body, message.content_type)
        except Exception as exc:  # anything: the consumer must keep running
            if _transient(exc):
                self._requeue(message, exc)
                return
            reason = str(exc) if isinstance(exc, FerrymanError) else f"{type(exc).__name__}: {exc}"
            log.warning("command refused, sent to %s: %s", DEAD_QUEUE, reason)
            self._dead_letter(message, reason)
        else:
            log.info("command %s -> run %s", message.delivery_tag, run.id)
        self.backoff = 0.0
        message.ack()

    def handle(self, body: bytes | str, content_type: str | None = JSON) -> Run:
        """Verify, authorise and carry out one command; :class:`Refused` says why not."""
        raw = body.encode("utf-8") if isinstance(body, str) else body
        presented = str(self._headers.get(SIGNATURE_HEADER, ""))
        if not presented:
            raise Refused(f"unsigned: the message has no {SIGNATURE_HEADER} header")
        if not hmac.compare_digest(presented, sign(self.key, raw)):
            raise Refused("bad signature: the body was not signed with the shared key")
        if (content_type or "").split(";")[0].strip() != JSON:
            raise Refused(f"the message's content type is not {JSON}")
        try:
            command = Command.model_validate(json.loads(raw))
        except (ValueError, RecursionError) as exc:
            detail = (
                "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                    for e in exc.errors()
                )
                if isinstance(exc, ValidationError)
                else "not JSON"
            )
            raise Refused(f"the message is not a command: {detail}") from None
        return self._carry_out(command)

    def _carry_out(self, command: Command) -> Run:
        who = Principal(command.principal, command.role, "signed command")
        with self.engine.db.session() as session:
            done = session.exec(
                select(CommandReceipt).where(CommandReceipt.key == command.idempotency_key)
            ).first()
        if done is not None:
            if (done.command, done.run_id) != (command.command, command.run):
                raise Refused(
                    f"idempotency key {command.idempotency_key!r} was used for {done.command} "
                    f"of run {done.run_id}: use a new key for a new command"
                )
            log.info("command %s already taken: %s", command.idempotency_key, done.outcome)
            with self.engine.db.session() as session:
                return repository.get_run(session, run_id=done.run_id, with_inputs=False)
        run = self._act(command, who)
        try:
            with self.engine.db.session() as session:
                session.add(
                    CommandReceipt(
                        key=command.idempotency_key,
                        command=command.command,
                        run_id=command.run,
                        actor=who.actor,
                        outcome=f"{run.id} {run.status}",
                    )
                )
        except IntegrityError:  # the same command raced in from another consumer
            log.info("command %s taken twice at once", command.idempotency_key)
        return run

    def _act(self, command: Command, who: Principal) -> Run:
        try:
            if command.command in ("approve", "reject"):
                self._check_gate(command)
                return self.actions.decide(
                    who,
                    command.run,
                    approved=command.command == "approve",
                    comment=command.comment,
                    idempotency_key=command.idempotency_key,
                ).run
            if command.command == "cancel":
                return self.actions.cancel(who, command.run, reason=command.reason).run
            operation = RunOperation(command.command)
            if self._already(command.run, operation):
                raise Refused(f"run {command.run} already has a {operation.value} run")
            return self.actions.follow_up(who, command.run, operation, notes=command.notes).run
        except FerrymanError as exc:
            if isinstance(exc, Refused):
                raise
            if isinstance(exc, Forbidden):
                raise Refused(f"unauthorised: {exc}") from None
            if isinstance(exc, RunStateError) or not _transient(exc):
                raise Refused(str(exc)) from None
            raise

    def _check_gate(self, command: Command) -> None:
        if command.gate is None:
            return
        with self.engine.db.session() as session:
            run = repository.get_run(session, run_id=command.run, with_inputs=False)
            gate = repository.approval_for(session, run_id=run.id, stage=run.current_stage)
        if run.status == RunStatus.WAITING and gate is not None and gate.name != command.gate:
            raise Refused(f"run {run.id} waits at gate {gate.name!r}, not {command.gate!r}")

    def _already(self, run_id: str, operation: RunOperation) -> bool:
        """A follow-up of that kind is under way or done (a second one is never wanted)."""
        with self.engine.db.session() as session:
            run = repository.get_run(session, run_id=run_id, with_inputs=False)
            children = repository.children_of(session, run_id=run.id)
        return any(
            c.operation == operation.value and c.status not in ("failed", "cancelled")
            for c in children
        )

    def dead_letter_queue(self) -> Queue:
        """Refused commands go to ``ferryman.commands.dead``, not the triggers' dead letters."""
        return queues()[1]


def _transient(exc: BaseException) -> bool:
    from workflows.triggers import is_transient

    return is_transient(exc)


def _no_plans() -> Any:
    raise FerrymanError("operator commands act on existing runs; they load no plans")
