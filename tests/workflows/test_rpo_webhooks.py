"""``rpo_at_risk`` webhooks follow protection's own judgement (lag past two copy intervals on the
primary's clock, or Critical health), not the health column alone: a VM whose copy is late
while Hyper-V still says Normal is notified, a Warning within its RPO is not; once an hour."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from workflows.notifications import collect, create_webhook
from workflows.store import Database
from workflows.store.tables import WebhookDelivery


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'store.db'}")
    with database.session() as session:
        create_webhook(
            session,
            name="oncall",
            url="http://127.0.0.1:9/hook",
            secret="env:RPO_TEST_KEY",
            events=["rpo_at_risk"],
            plan=None,
            created_by="tests",
        )
    yield database
    database.dispose()


def reading(vm: str, health: str, at_risk: bool) -> dict[str, Any]:
    return {
        "vm": vm,
        "plan": "three-tier",
        "host": "hv-got-1",
        "state": "Replicating",
        "health": health,
        "lag": 900.0 if at_risk else 30.0,
        "rpo_at_risk": at_risk,
        "error": "",
    }


def test_the_protection_flag_decides_and_each_vm_is_notified_once_an_hour(db: Database) -> None:
    readings = [
        reading("sql-01", "Normal", True),  # late, though Hyper-V has not said so yet
        reading("web-01", "Warning", False),  # a warning within its RPO
        reading("web-02", "Normal", False),
    ]
    with db.session() as session:
        assert collect(session, lambda: readings) == 1
    with db.session() as session:
        assert collect(session, lambda: readings) == 0  # the same hour: not again
        sent = session.exec(select(WebhookDelivery)).all()
    assert [d.payload["replication"]["vm"] for d in sent] == ["sql-01"]
    assert sent[0].event == "rpo_at_risk"
