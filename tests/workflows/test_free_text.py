"""What operators add to a run (a comment, notes, a reason, who acted) is free text: control
characters but line breaks and tabs, and bidirectional overrides, are refused by the one
implementation the CLI, the HTTP API and the command queue share, before anything is recorded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from plans import Bundle
from plans.errors import ConfigurationError
from tests.workflows.conftest import EXAMPLE
from tests.workflows.fakes import Recording
from workflows.cli import main
from workflows.engine import Engine
from workflows.operations import Operations
from workflows.settings import Settings
from workflows.statuses import RunStatus
from workflows.store import Database, Run, repository


@pytest.fixture
def database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path}/text.db"
    monkeypatch.setenv("FERRYMAN_DATABASE_URL", url)
    return url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = Engine(Database(database_url), Recording(), Settings(database_url=database_url))
    yield engine
    engine.db.dispose()


def fresh(engine: Engine, run_id: str) -> tuple[Run, int]:
    """The run and how many events it has."""
    with engine.db.session() as session:
        run = repository.get_run(session, run_id=run_id)
        return run, len(repository.events_of(session, run_id=run_id))


HOSTILE = [
    ("x\x1b[2J\x1b[31mAPPROVED", "U+001B"),
    ("ok\rnot ok", "U+000D"),
    ("csi\x9b", "U+009B"),
    ("\u202eevorppa", "U+202E"),
]


@pytest.mark.parametrize(("text", "code"), HOSTILE)
def test_operations_refuse_hostile_free_text_and_record_nothing(
    engine: Engine, bundle: Bundle, text: str, code: str
) -> None:
    operations = Operations(engine)
    run = engine.start(bundle, "three-tier", "test", requested_by="ops")
    _, events = fresh(engine, run.id)
    calls = {
        "comment": lambda: operations.approve(run.id, by="ops", comment=text),
        "reject comment": lambda: operations.reject(run.id, by="ops", comment=text),
        "notes": lambda: operations.cleanup(run.id, by="ops", notes=text),
        "reason": lambda: operations.cancel(run.id, by="ops", reason=text),
        "by": lambda: operations.cancel(run.id, by=text),
    }
    for what, call in calls.items():
        with pytest.raises(ConfigurationError) as caught:
            call()
        message = str(caught.value)
        assert message.startswith(what.split()[-1] + " contains"), message
        assert code in message and "\n" not in message
    after, now = fresh(engine, run.id)
    assert after.status != RunStatus.CANCELLED and now == events
    with pytest.raises(ConfigurationError, match="by contains the control character U\\+000A"):
        operations.resume(run.id, by="alice\nbob")
    with pytest.raises(ConfigurationError, match="by contains"):
        operations.start(bundle, "three-tier", "test", by="ops\x00")


def test_a_crlf_reason_is_kept_as_lf(engine: Engine, bundle: Bundle) -> None:
    run = engine.start(bundle, "three-tier", "test", requested_by="ops")
    Operations(engine).cancel(run.id, by="ops", reason="first line\r\nsecond\tline")
    after, _ = fresh(engine, run.id)
    assert after.status == RunStatus.CANCELLED
    assert after.error == "first line\nsecond\tline"


def test_the_cli_refuses_in_one_line_with_exit_1(engine: Engine, bundle: Bundle) -> None:
    run = engine.start(bundle, "three-tier", "test", requested_by="ops")
    runner = CliRunner()
    cases = [
        ["runs", "cancel", run.id, "--reason", "stop\x1b[2J"],
        ["runs", "approve", run.id, "--comment", "fine\x07"],
        ["runs", "cleanup", run.id, "--notes", "\u2066hidden\u2069"],
    ]
    for args in cases:
        result = runner.invoke(main, args)
        assert result.exit_code == 1, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and "contains the" in lines[0], result.output
        assert "Traceback" not in result.output
    after, _ = fresh(engine, run.id)
    assert after.status != RunStatus.CANCELLED


def test_the_api_answers_422_and_keeps_the_run(
    engine: Engine, bundle: Bundle, database_url: str
) -> None:
    from workers.app import create_app as celery_app
    from workflows.api.app import create_app
    from workflows.api.services import Services
    from workflows.dispatch import CeleryDispatcher
    from workflows.tokens import create_token

    settings = Settings(database_url=database_url)
    api_engine = Engine(engine.db, CeleryDispatcher(celery_app(settings)), settings)
    client = TestClient(create_app(Services(api_engine, settings)))
    with engine.db.session() as session:
        _, token = create_token(session, name="ops", role="operator", created_by="test")
        session.commit()
    headers = {"Authorization": f"Bearer {token}"}
    run = engine.start(bundle, "three-tier", "test", requested_by="ops")
    refused = client.post(
        f"/api/v1/runs/{run.id}/cancel", json={"reason": "gone\x1b[8m"}, headers=headers
    )
    assert refused.status_code == 422, refused.text
    assert "U+001B" in refused.json()["detail"]
    followed = client.post(
        f"/api/v1/runs/{run.id}/cleanup", json={"notes": "\u202edone"}, headers=headers
    )
    assert followed.status_code == 422, followed.text
    assert "U+202E" in followed.json()["detail"]
    after, _ = fresh(engine, run.id)
    assert after.status != RunStatus.CANCELLED


def test_a_trigger_whose_requester_holds_control_characters_is_refused(engine: Engine) -> None:
    import json

    from kombu import Connection

    from plans.errors import FerrymanError
    from workflows.triggers import TriggerConsumer, bundle_loader

    consumer = TriggerConsumer(engine, Connection("memory://"), bundle_loader([str(EXAMPLE)]))
    body = {"plan": "three-tier", "type": "test", "idempotency_key": "incident-9"}
    with pytest.raises(FerrymanError) as caught:
        consumer.handle(json.dumps({**body, "requested_by": "monitoring\x1b[2J"}))
    assert "requested_by: Value error, text contains the control character U+001B" in str(
        caught.value
    )
    assert engine.dispatcher.sent == []  # type: ignore[attr-defined]
    run = consumer.handle(json.dumps({**body, "requested_by": "monitoring\tsystem"}))
    assert run.requested_by == "monitoring\tsystem"
