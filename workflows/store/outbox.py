"""The notification outbox: webhooks' events written in the transaction that records them.

An audit event of a gate opening or a run ending gets its outbox row in the same flush (a
session listener), so the row commits exactly when the event does. The notifier takes rows
whatever their order and deletes each once fanned out; reading audit events by a growing id
instead could pass over one that a slower transaction committed after a later id.

Rows are written only while an enabled webhook exists (nobody would read them otherwise).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, insert, select
from sqlalchemy.orm import Session
from sqlmodel import col

from workflows.events import EventKind
from workflows.store.tables import AuditEvent, NotificationOutbox, Run, Webhook, utcnow

GATE_WAITING = "gate_waiting"
RUN_FAILED = "run_failed"
RUN_SUCCEEDED = "run_succeeded"


def classify(row: AuditEvent) -> str | None:
    """The notification an audit event calls for, if any."""
    if row.event == EventKind.GATE_OPENED.value:
        return GATE_WAITING
    if row.event == EventKind.FINISHED.value:
        return RUN_SUCCEEDED if row.message == "succeeded" else RUN_FAILED
    return None


def _after_flush(session: Session, _context: Any) -> None:
    events = [
        obj for obj in session.new if isinstance(obj, AuditEvent) and classify(obj) is not None
    ]
    if not events:
        return
    connection = session.connection()
    hooks = select(col(Webhook.id)).where(col(Webhook.enabled).is_(True)).limit(1)
    if connection.execute(hooks).first() is None:
        return
    rows: list[dict[str, Any]] = []
    for row in events:
        plan = connection.execute(
            select(col(Run.plan)).where(col(Run.id) == row.run_id)
        ).scalar()
        payload: dict[str, Any] = {"at": row.at.isoformat(), "message": row.message}
        kind = classify(row)
        if kind == GATE_WAITING:
            payload["gate"] = dict(row.data or {})
        rows.append(
            {
                "event": kind,
                "subject": f"audit:{row.id}",
                "plan": plan,
                "run_id": row.run_id,
                "payload": payload,
                "created_at": utcnow(),
            }
        )
    connection.execute(insert(NotificationOutbox).values(rows))


def install() -> None:
    """Write outbox rows with the audit events of every session of this process (once)."""
    if not event.contains(Session, "after_flush", _after_flush):
        event.listen(Session, "after_flush", _after_flush)


install()
