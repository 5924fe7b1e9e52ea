"""The notification outbox on PostgreSQL: an audit event committed after a later one (ids are
taken at insert, transactions commit in any order) is still notified; an event commits with its
outbox row or not at all; nothing is queued while no webhook is enabled."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlmodel import Session, col, select

from workflows.events import EventKind
from workflows.notifications import collect, create_webhook, disable_webhook
from workflows.store import Database, repository
from workflows.store.tables import NotificationOutbox, WebhookDelivery

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def db() -> Iterator[Database]:
    """A fresh PostgreSQL database with the schema and one enabled webhook."""
    name = f"ferryman_outbox_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    database = Database(f"postgresql://postgres@127.0.0.1:5432/{name}")
    try:
        with database.session() as session:
            create_webhook(
                session,
                name="ops",
                url="http://127.0.0.1:9/hook",
                secret="env:OUTBOX_TEST_KEY",
                events=["run_failed", "run_succeeded", "gate_waiting"],
                plan=None,
                created_by="tests",
            )
        yield database
    finally:
        database.dispose()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _deliveries(db: Database) -> dict[str, str]:
    with db.session() as session:
        rows = session.exec(select(WebhookDelivery).order_by(col(WebhookDelivery.id))).all()
        return {row.subject: row.event for row in rows}


def test_an_event_committed_after_a_later_one_is_notified(db: Database) -> None:
    slow = Session(db.engine)
    try:
        early = repository.add_event(
            slow, run_id="run-slow", event=EventKind.FINISHED, message="succeeded"
        ).id
        with db.session() as fast:
            late = repository.add_event(
                fast, run_id="run-fast", event=EventKind.FINISHED, message="step failed"
            ).id
        assert (early or 0) < (late or 0)  # the later id commits first
        with db.session() as session:
            assert collect(session) == 1
        assert _deliveries(db) == {f"audit:{late}": "run_failed"}
        slow.commit()
    finally:
        slow.close()
    with db.session() as session:
        assert collect(session) == 1
    assert _deliveries(db) == {
        f"audit:{late}": "run_failed",
        f"audit:{early}": "run_succeeded",
    }
    with db.session() as session:  # each outbox row is fanned out once, then gone
        assert session.exec(select(NotificationOutbox)).all() == []
        assert collect(session) == 0


def test_a_rolled_back_event_notifies_nobody(db: Database) -> None:
    with pytest.raises(RuntimeError), db.session() as session:
        repository.add_event(session, run_id="run-x", event=EventKind.GATE_OPENED, message="g")
        raise RuntimeError("the transaction fails after the event")
    with db.session() as session:
        assert session.exec(select(NotificationOutbox)).all() == []


def test_nothing_is_queued_without_an_enabled_webhook(db: Database) -> None:
    with db.session() as session:
        disable_webhook(session, name="ops")
    with db.session() as session:
        repository.add_event(session, run_id="run-y", event=EventKind.FINISHED, message="succeeded")
        repository.add_event(session, run_id="run-y", event=EventKind.STAGE_STARTED, message="s")
    with db.session() as session:
        assert session.exec(select(NotificationOutbox)).all() == []
