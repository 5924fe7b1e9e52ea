"""``ferryman tokens``: a token is shown once, stored as a digest, listed without it, revoked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlmodel import select

from workflows.api.app import create_app
from workflows.api.services import Services
from workflows.cli import main
from workflows.dispatch import CeleryDispatcher
from workflows.engine import Engine
from workflows.settings import Settings
from workflows.store import Database
from workflows.store.tables import ApiToken
from workflows.tokens import Role, authenticate, digest, local_administrator


@pytest.fixture
def database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path}/ferryman.db"
    monkeypatch.setenv("FERRYMAN_DATABASE_URL", url)
    return url


def _client(url: str) -> TestClient:
    from workers.app import create_app as celery_app

    settings = Settings(database_url=url)
    engine = Engine(Database(url), CeleryDispatcher(celery_app(settings)), settings)
    return TestClient(create_app(Services(engine, settings)))


def test_a_token_is_printed_once_kept_as_a_digest_and_revoked(database_url: str) -> None:
    runner = CliRunner()
    made = runner.invoke(main, ["tokens", "create", "--name", "alice", "--role", "approver"])
    assert made.exit_code == 0, made.output
    token = made.stdout.strip()
    assert token.startswith("fm_") and len(token) > 40
    assert "shown only now" in made.stderr

    db = Database(database_url)
    with db.session() as session:
        (row,) = session.exec(select(ApiToken)).all()
        assert row.digest == digest(token) and token not in (row.digest, row.prefix)
        assert row.created_by == local_administrator().actor
        assert "(administrator via local CLI)" in row.created_by
        principal = authenticate(session, token)
    assert principal is not None and principal.role is Role.APPROVER

    listed = runner.invoke(main, ["tokens", "list", "--json"])
    assert listed.exit_code == 0
    assert token not in listed.output
    assert [(t["name"], t["role"], t["revoked_at"]) for t in json.loads(listed.output)] == [
        ("alice", "approver", None)
    ]

    client = _client(database_url)
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/runs", headers=headers).status_code == 200

    revoked = runner.invoke(main, ["tokens", "revoke", "alice"])
    assert revoked.exit_code == 0, revoked.output
    refused = client.get("/api/v1/runs", headers=headers)
    assert refused.status_code == 401
    assert refused.json() == {"detail": "unknown or revoked token"}
    db.dispose()


def test_bad_token_commands_say_what_to_fix(database_url: str) -> None:
    runner = CliRunner()
    bad_role = runner.invoke(main, ["tokens", "create", "--name", "bob", "--role", "root"])
    assert bad_role.exit_code == 2 and "root" in bad_role.output
    bad_name = runner.invoke(main, ["tokens", "create", "--name", "bob smith", "--role", "viewer"])
    assert bad_name.exit_code == 1
    assert "token name 'bob smith'" in bad_name.output and "Traceback" not in bad_name.output
    first = runner.invoke(main, ["tokens", "create", "--name", "bob", "--role", "viewer"])
    assert first.exit_code == 0
    twice = runner.invoke(main, ["tokens", "create", "--name", "bob", "--role", "viewer"])
    assert twice.exit_code == 1 and "exists" in twice.output
    unknown = runner.invoke(main, ["tokens", "revoke", "carol"])
    assert unknown.exit_code == 1 and "no token named 'carol'" in unknown.output
