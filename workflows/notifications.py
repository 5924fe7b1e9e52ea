"""Webhook notifications: a run waits at a gate, fails or succeeds; a VM's RPO is at risk.

Webhooks live in the store (global, or for one plan). What they are told about is written to
the notification outbox in the transaction that records it (:mod:`workflows.store.outbox` for
gates and run ends, :func:`notify` for drills); :func:`collect` turns outbox rows (and
replication readings) into one :class:`~workflows.store.tables.WebhookDelivery` per webhook
and subject (a unique pair, so two processes never notify twice); :func:`deliver`
POSTs the due ones and records every attempt, retrying with exponential backoff until a 2xx
or ``max_attempts``. :class:`Notifier` does both in a thread of ``ferryman serve``.

Each request carries ``X-Ferryman-Event``, ``X-Ferryman-Delivery``, ``X-Ferryman-Timestamp``
and ``X-Ferryman-Signature: sha256=HEX``, the HMAC-SHA256 of ``TIMESTAMP.BODY`` under the key
the webhook's reference names (``env:NAME`` or ``file:PATH``; the key itself is never stored).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import logging
import random
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from plans.credentials import SecretRef
from plans.errors import ConfigurationError, FerrymanError
from plans.files import FileRefused, resolve_secret
from workflows.store import AuditEvent, Database, Run, utcnow
from workflows.store.tables import NotificationOutbox, Webhook, WebhookDelivery
from workflows.store.views import run_summary

log = logging.getLogger(__name__)

SCAN_LIMIT = 1000  # outbox rows taken per collection
LEASE = timedelta(seconds=60)  # a claimed delivery is not taken by another process meanwhile


class NotificationEvent(enum.StrEnum):
    """What a webhook can be told about."""

    GATE_WAITING = "gate_waiting"
    RUN_FAILED = "run_failed"
    RUN_SUCCEEDED = "run_succeeded"
    RPO_AT_RISK = "rpo_at_risk"
    DRILL_SUCCEEDED = "drill_succeeded"
    DRILL_FAILED = "drill_failed"
    DRILL_MISSED = "drill_missed"


class WebhookError(FerrymanError):
    """A webhook cannot be made as asked."""


class WebhookNotFound(WebhookError):
    """No webhook has that name."""


@dataclass(frozen=True)
class Backoff:
    """How deliveries are retried: ``base`` doubling up to ``ceiling``, ``max_attempts`` tries."""

    base: float = 2.0
    ceiling: float = 300.0
    max_attempts: int = 8

    def delay(self, attempts: int) -> timedelta:
        """The wait after the ``attempts``-th failed try (equal jitter)."""
        top = min(self.ceiling, self.base * 2 ** max(attempts - 1, 0))
        return timedelta(seconds=top / 2 + random.random() * top / 2)


def create_webhook(
    session: Session,
    *,
    name: str,
    url: str,
    secret: str,
    events: Iterable[str],
    plan: str | None,
    created_by: str,
) -> Webhook:
    """Register a webhook; it is told about what happens from now on."""
    if not url.startswith(("http://", "https://")):
        raise WebhookError(f"webhook url {url!r}: give an http:// or https:// URL")
    ref = SecretRef.parse(secret)  # refuses a literal key
    if ref.scheme == "file":  # outside the secret folders it could never be read: say so now
        try:
            resolve_secret(ref.target, what="webhook secret file")
        except FileRefused as exc:
            raise WebhookError(str(exc)) from None
    chosen = sorted(set(events))
    unknown = [e for e in chosen if e not in NotificationEvent.__members__.values()]
    if unknown or not chosen:
        raise WebhookError(
            f"webhook events {unknown or chosen}: choose from "
            + ", ".join(e.value for e in NotificationEvent)
        )
    if session.exec(select(Webhook).where(Webhook.name == name)).first() is not None:
        raise WebhookError(f"a webhook named {name!r} exists; delete it or choose another name")
    latest = session.exec(select(AuditEvent.id).order_by(col(AuditEvent.id).desc())).first()
    hook = Webhook(
        name=name,
        url=url,
        secret_ref=str(ref),
        events=chosen,
        plan=plan or None,
        since_event_id=latest or 0,
        created_by=created_by,
    )
    session.add(hook)
    session.flush()
    return hook


def disable_webhook(session: Session, *, name: str) -> Webhook:
    """Stop notifying ``name`` (its deliveries stay on record)."""
    hook = session.exec(select(Webhook).where(Webhook.name == name)).first()
    if hook is None:
        raise WebhookNotFound(f"no webhook named {name!r}")
    hook.enabled = False
    session.add(hook)
    return hook


def _add(session: Session, delivery: WebhookDelivery) -> bool:
    """Insert unless that webhook already has that subject (another process was first)."""
    try:
        with session.begin_nested():
            session.add(delivery)
        return True
    except IntegrityError:
        return False


def collect(session: Session, readings: Callable[[], list[dict[str, Any]]] | None = None) -> int:
    """Fan the outbox out into deliveries (and RPO readings into more); returns how many.

    Each outbox row (written with the event it is about, see :mod:`workflows.store.outbox`)
    becomes one delivery per enabled webhook that wants its event for its plan and existed
    when it was written, and is then deleted. Two processes collecting at once take different
    rows on PostgreSQL (``SKIP LOCKED``); on SQLite they take turns; a delivery's unique
    webhook and subject keeps a row that both saw from being sent twice.
    """
    hooks = list(session.exec(select(Webhook).where(Webhook.enabled == True)).all())  # noqa: E712
    query = select(NotificationOutbox).order_by(col(NotificationOutbox.id)).limit(SCAN_LIMIT)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = session.exec(query).all()
    added = 0
    runs: dict[str, Run | None] = {}
    for row in rows:
        run: Run | None = None
        if row.run_id:
            if row.run_id not in runs:
                runs[row.run_id] = session.get(Run, row.run_id)
            run = runs[row.run_id]
        payload: dict[str, Any] = {"event": row.event, **(row.payload or {})}
        if run is not None:
            payload["run"] = run_summary(run)
        for hook in hooks:
            if row.event not in hook.events or hook.plan not in (None, row.plan):
                continue
            if row.created_at < hook.created_at:  # written before the webhook was made
                continue
            added += _add(
                session,
                WebhookDelivery(
                    webhook_id=hook.id or 0,
                    event=row.event,
                    subject=row.subject,
                    run_id=row.run_id,
                    payload=payload,
                ),
            )
        session.delete(row)
    if readings is not None and any(NotificationEvent.RPO_AT_RISK in h.events for h in hooks):
        added += _collect_rpo(session, hooks, readings())
    return added


def notify(
    session: Session,
    event: NotificationEvent,
    *,
    subject: str,
    payload: dict[str, Any],
    plan: str | None = None,
    run_id: str | None = None,
) -> None:
    """Queue a notification in the caller's transaction (it is sent once that commits)."""
    session.add(
        NotificationOutbox(
            event=event.value,
            subject=subject[:200],
            plan=plan,
            run_id=run_id,
            payload={"at": utcnow().isoformat(), **payload},
        )
    )


def _collect_rpo(session: Session, hooks: list[Webhook], readings: list[dict[str, Any]]) -> int:
    added = 0
    hour = utcnow().strftime("%Y-%m-%dT%H")
    for reading in readings:
        if not reading.get("rpo_at_risk"):
            continue
        for hook in hooks:
            if NotificationEvent.RPO_AT_RISK not in hook.events:
                continue
            if hook.plan not in (None, reading["plan"]):
                continue
            # once an hour per VM and health while it lasts, not at every look
            subject = f"rpo:{reading['plan']}:{reading['vm']}:{reading['health']}:{hour}"
            added += _add(
                session,
                WebhookDelivery(
                    webhook_id=hook.id or 0,
                    event=NotificationEvent.RPO_AT_RISK.value,
                    subject=subject[:200],
                    payload={"event": NotificationEvent.RPO_AT_RISK.value, "replication": reading},
                ),
            )
    return added


def signature(key: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Ferryman-Signature`` value of a request."""
    digest = hmac.new(key, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def deliver(
    db: Database, *, backoff: Backoff | None = None, timeout: float = 10.0, batch: int = 20
) -> int:
    """Send the deliveries that are due; returns how many were attempted."""
    backoff = backoff or Backoff()
    now = utcnow()
    with db.session() as session:
        due = session.exec(
            select(WebhookDelivery)
            .where(
                WebhookDelivery.status == "pending",
                col(WebhookDelivery.next_attempt_at) <= now,
            )
            .order_by(col(WebhookDelivery.id))
            .limit(batch)
        ).all()
    attempted = 0
    for delivery in due:
        if not _claim(db, delivery, now):
            continue
        attempted += 1
        _attempt(db, delivery, backoff, timeout)
    return attempted


def _claim(db: Database, delivery: WebhookDelivery, now: datetime) -> bool:
    with db.session() as session:
        result = session.execute(
            update(WebhookDelivery)
            .where(
                col(WebhookDelivery.id) == delivery.id,
                col(WebhookDelivery.status) == "pending",
                col(WebhookDelivery.next_attempt_at) <= now,
            )
            .values(next_attempt_at=now + LEASE)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def _attempt(db: Database, delivery: WebhookDelivery, backoff: Backoff, timeout: float) -> None:
    with db.session() as session:
        hook = session.get(Webhook, delivery.webhook_id)
    status: int | None = None
    error = ""
    if hook is None or not hook.enabled:
        error = "webhook disabled"
    else:
        body = json.dumps(
            {**delivery.payload, "delivery": delivery.id}, sort_keys=True, separators=(",", ":")
        ).encode("utf-8")
        timestamp = str(int(utcnow().timestamp()))
        try:
            key = SecretRef.parse(hook.secret_ref).resolve().encode("utf-8")
            status = _post(
                hook.url,
                body,
                {
                    "Content-Type": "application/json",
                    "User-Agent": "ferryman-webhooks",
                    "X-Ferryman-Event": delivery.event,
                    "X-Ferryman-Delivery": str(delivery.id),
                    "X-Ferryman-Timestamp": timestamp,
                    "X-Ferryman-Signature": signature(key, timestamp, body),
                },
                timeout,
            )
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except ConfigurationError as exc:
            error = str(exc)
        except (OSError, ValueError) as exc:  # refused, reset, timed out, bad URL
            error = f"{type(exc).__name__}: {exc}"
    with db.session() as session:
        row = session.get(WebhookDelivery, delivery.id)
        if row is None:
            return
        row.attempts += 1
        row.last_status = status
        row.last_error = error
        if not error:
            row.status = "delivered"
            row.delivered_at = utcnow()
        elif error == "webhook disabled" or row.attempts >= backoff.max_attempts:
            row.status = "failed"
        else:
            row.next_attempt_at = utcnow() + backoff.delay(row.attempts)
        session.add(row)


class Notifier:
    """Collects and delivers notifications every ``interval`` seconds, in a daemon thread."""

    def __init__(
        self,
        db: Database,
        *,
        interval: float = 2.0,
        readings: Callable[[], list[dict[str, Any]]] | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.db = db
        self.interval = interval
        self.readings = readings
        self.backoff = backoff or Backoff()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ferryman-notifier", daemon=True)

    def start(self) -> Notifier:
        """Start the thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread (after its current round)."""
        self._stop.set()
        self._thread.join(timeout=30)

    def tick(self) -> None:
        """One round: collect, then deliver what is due."""
        with self.db.session() as session:
            collect(session, self.readings)
        deliver(self.db, backoff=self.backoff)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # a bad round must not end notifications; it is logged
                log.exception("notification round failed")
            self._stop.wait(self.interval)
