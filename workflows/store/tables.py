"""The SQL tables: runs, their steps, manual-gate approvals and the audit trail.

JSON columns hold plain data only (the bundle snapshot, the compiled stages, step results and
undo records), never a secret: those exist in Ferryman only as references. Times are UTC with
their time zone; :func:`utcnow` is the one clock.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    """Now, in UTC (what every table stores)."""
    return datetime.now(UTC)


class Run(SQLModel, table=True):
    """One execution of a plan (or a follow-up such as cleanup) with its frozen inputs."""

    __tablename__ = "run"

    id: str = Field(primary_key=True, max_length=32)
    plan: str = Field(index=True, max_length=128)
    operation: str = Field(max_length=32)  # RunOperation value
    direction: str = Field(max_length=16)
    status: str = Field(index=True, max_length=16)
    parent_id: str | None = Field(default=None, index=True, max_length=32)
    requested_by: str = Field(default="", max_length=128)
    idempotency_key: str | None = Field(default=None, unique=True, max_length=200)
    content_hash: str = Field(default="", max_length=80)
    snapshot: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    compiled: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    options: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    current_stage: int = 0
    # the stage whose chord was last sent (None: the current stage is not sent yet); a run
    # whose process died between committing a stage and sending it is found by this
    dispatched_stage: int | None = None
    stage_entered_at: datetime | None = None  # when current_stage was last entered
    notes: str = Field(default="", sa_column=Column(Text))
    error: str = Field(default="", sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None


class Step(SQLModel, table=True):
    """One recorded step of a run: its status, attempts, result and how to undo it."""

    __tablename__ = "step"
    __table_args__ = (
        UniqueConstraint("run_id", "key"),
        # a worker reads a VM's steps, the engine a stage's: without these, each read scans
        # every step of the run, and a 5,000-VM run's cost grows with its square
        Index("ix_step_run_id_vm", "run_id", "vm"),
        Index("ix_step_run_id_stage", "run_id", "stage"),
    )

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(index=True, foreign_key="run.id", max_length=32)
    key: str = Field(max_length=300)
    seq: int = 0  # position in the compiled run, for ordering
    stage: int
    unit: str = Field(max_length=300)
    group: str | None = Field(default=None, max_length=128)
    vm: str | None = Field(default=None, max_length=128)
    host: str | None = Field(default=None, max_length=128)
    kind: str = Field(max_length=40)
    on_error: str = Field(default="stop", max_length=16)
    status: str = Field(max_length=16)
    attempts: int = 0
    # Celery id of the delivery that set the step running: the same id again is a redelivery
    # (its worker died); another id is a duplicate dispatch of the stage, which leaves it alone
    task_id: str | None = Field(default=None, max_length=64)
    changed: bool | None = None
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    undo: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    error: str = Field(default="", sa_column=Column(Text))
    started_at: datetime | None = None
    # refreshed by the worker running the step; a running step whose heartbeat is older than
    # the lease lost its worker and is taken over (``workflows.recovery``)
    heartbeat_at: datetime | None = None
    finished_at: datetime | None = None


class Approval(SQLModel, table=True):
    """A manual gate: who approved or rejected it, when and why."""

    __tablename__ = "approval"
    __table_args__ = (UniqueConstraint("run_id", "stage"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(index=True, foreign_key="run.id", max_length=32)
    stage: int
    name: str = Field(max_length=128)
    instructions: str = Field(default="", sa_column=Column(Text))
    status: str = Field(max_length=16)
    on_timeout: str = Field(default="fail", max_length=16)
    requested_at: datetime = Field(default_factory=utcnow)
    deadline: datetime | None = None
    decided_at: datetime | None = None
    decided_by: str = Field(default="", max_length=128)
    comment: str = Field(default="", sa_column=Column(Text))


class AuditEvent(SQLModel, table=True):
    """Something that happened to a run, for its timeline and report."""

    __tablename__ = "audit_event"

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(index=True, max_length=32)
    at: datetime = Field(default_factory=utcnow)
    event: str = Field(max_length=40)
    actor: str = Field(default="", max_length=128)
    message: str = Field(default="", sa_column=Column(Text))
    data: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))


class ApiToken(SQLModel, table=True):
    """A bearer token of the HTTP API: its principal's name and role, never the token itself.

    Only a SHA-256 digest of the token is kept (tokens are 256 random bits, so a slow hash
    adds nothing); ``prefix`` is the token's first characters, enough to tell tokens apart.
    """

    __tablename__ = "api_token"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, max_length=64)
    role: str = Field(max_length=16)  # Role value
    digest: str = Field(unique=True, max_length=64)
    prefix: str = Field(max_length=16)
    created_at: datetime = Field(default_factory=utcnow)
    created_by: str = Field(default="", max_length=128)
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class Webhook(SQLModel, table=True):
    """Where to send notifications: a URL, the reference of its signing key, which events,
    and for which plan (None: every plan). Deleting one only disables it: its deliveries stay."""

    __tablename__ = "webhook"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, max_length=64)
    url: str = Field(sa_column=Column(Text, nullable=False))
    secret_ref: str = Field(max_length=300)  # env:NAME or file:PATH, never the key
    events: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    plan: str | None = Field(default=None, max_length=128)
    enabled: bool = True
    # audit events up to this id were looked at for this webhook (it starts at its creation)
    since_event_id: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    created_by: str = Field(default="", max_length=128)


class WebhookDelivery(SQLModel, table=True):
    """One notification to one webhook: what was sent, each attempt's outcome, when next."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        UniqueConstraint("webhook_id", "subject"),
        Index("ix_webhook_delivery_status_next", "status", "next_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    webhook_id: int = Field(foreign_key="webhook.id", index=True)
    event: str = Field(max_length=32)
    subject: str = Field(max_length=200)  # what it is about, once per webhook (audit:ID, rpo:...)
    run_id: str | None = Field(default=None, max_length=32)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    status: str = Field(default="pending", max_length=16)  # pending, delivered, failed
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow)
    last_status: int | None = None
    last_error: str = Field(default="", sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow)
    delivered_at: datetime | None = None


class VmLock(SQLModel, table=True):
    """A VM held by a run and its follow-ups: the key is the VM, so it has one holder at most.

    The row is written in the transaction that creates the run, so of two runs started at
    once on one VM the database lets exactly one commit; it is deleted when the run and the
    follow-ups it awaits are over (see ``repository.release_vms``).
    """

    __tablename__ = "vm_lock"

    # "<site>/<cloud>/<VM>" of the VM's primary cloud in its pairing: a cloud belongs to at
    # most one pairing, and a failover does not change the name, so one VM has one key
    vm: str = Field(primary_key=True, max_length=300)
    # the first run of the line of runs holding it (a follow-up holds through its origin)
    run_id: str = Field(index=True, foreign_key="run.id", max_length=32)
    acquired_at: datetime = Field(default_factory=utcnow)


class CommandReceipt(SQLModel, table=True):
    """An operator command taken from the queue, by its idempotency key: a redelivered or
    repeated message finds its receipt and does nothing again."""

    __tablename__ = "command_receipt"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True, max_length=200)
    command: str = Field(max_length=32)
    run_id: str = Field(max_length=32)
    actor: str = Field(default="", max_length=128)
    outcome: str = Field(default="", sa_column=Column(Text))
    at: datetime = Field(default_factory=utcnow)


class NotificationOutbox(SQLModel, table=True):
    """Something webhooks are to be told about, written in the transaction that records it
    (an audit event of a gate opening or a run ending, a drill's outcome). The notifier fans
    each row out to one delivery per matching webhook and deletes it: nothing is read by a
    cursor, so an event committed after a later one is not passed over."""

    __tablename__ = "notification_outbox"

    id: int | None = Field(default=None, primary_key=True)
    event: str = Field(max_length=32)  # NotificationEvent value
    subject: str = Field(max_length=200)  # unique per webhook once delivered (audit:ID, ...)
    plan: str | None = Field(default=None, max_length=128)
    run_id: str | None = Field(default=None, max_length=32)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)


class DrillSchedule(SQLModel, table=True):
    """When a plan is drilled: a five-field cron expression in a time zone (UTC by default).

    Slots before ``since`` (when the schedule was last set) are neither started nor missed."""

    __tablename__ = "drill_schedule"

    id: int | None = Field(default=None, primary_key=True)
    plan: str = Field(unique=True, max_length=128)
    cron: str = Field(max_length=200)
    timezone: str = Field(default="UTC", max_length=64)
    enabled: bool = True
    since: datetime = Field(default_factory=utcnow)
    created_at: datetime = Field(default_factory=utcnow)
    created_by: str = Field(default="", max_length=128)
    updated_at: datetime = Field(default_factory=utcnow)
    updated_by: str = Field(default="", max_length=128)


class Drill(SQLModel, table=True):
    """One slot of a plan's drill schedule: started once (the unique plan and slot), then a
    test failover, its cleanup and the outcome, or missed with the reason."""

    __tablename__ = "drill"
    __table_args__ = (UniqueConstraint("plan", "slot"),)

    id: int | None = Field(default=None, primary_key=True)
    plan: str = Field(index=True, max_length=128)
    slot: datetime
    # starting, testing, cleaning, succeeded, failed, missed
    status: str = Field(default="starting", index=True, max_length=16)
    run_id: str | None = Field(default=None, max_length=32)
    cleanup_run_id: str | None = Field(default=None, max_length=32)
    error: str = Field(default="", sa_column=Column(Text))
    report: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
