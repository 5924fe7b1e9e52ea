"""The run commands through click: dry-run output, listing, showing and reporting runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from plans import Bundle
from tests.workflows.conftest import EXAMPLE
from workflows.cli import main
from workflows.engine import Engine
from workflows.settings import Settings
from workflows.store import Database


class Recording:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def dispatch(self, run_id: str, stage: Any) -> None:
        self.sent.append((run_id, stage))


@pytest.fixture
def database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path}/cli.db"
    monkeypatch.setenv("FERRYMAN_DATABASE_URL", url)
    return url


def test_dry_run_prints_the_compiled_stages_as_json() -> None:
    result = CliRunner().invoke(
        main,
        [
            "run",
            str(EXAMPLE),
            "--plan",
            "three-tier",
            "--type",
            "unplanned",
            "--option",
            "try_shutdown=false",
            "--dry-run",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["operation"] == "unplanned"
    first = data["stages"][0]["units"][0]["steps"]
    assert [s["kind"] for s in first][:2] == ["failover", "connect_network"]


def test_dry_run_tree_shows_the_gate() -> None:
    result = CliRunner().invoke(
        main, ["run", str(EXAMPLE), "--plan", "three-tier", "--type", "test", "--dry-run"]
    )
    assert result.exit_code == 0
    assert "gate confirm-databases" in result.output


def test_unknown_plan_is_a_clear_error() -> None:
    result = CliRunner().invoke(
        main, ["run", str(EXAMPLE), "--plan", "nope", "--type", "test", "--dry-run"]
    )
    assert result.exit_code == 1
    assert "known plans: three-tier" in result.output


def test_list_show_and_report(database_url: str, bundle: Bundle) -> None:
    settings = Settings(database_url=database_url)
    engine = Engine(Database(database_url), Recording(), settings)
    run = engine.start(bundle, "three-tier", "test", requested_by="ops")
    runner = CliRunner()
    listed = runner.invoke(main, ["runs", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [r["id"] for r in json.loads(listed.output)] == [run.id]
    shown = runner.invoke(main, ["runs", "show", run.id[:6]])
    assert shown.exit_code == 0 and "sql-01" in shown.output
    report = runner.invoke(main, ["runs", "report", run.id, "--json"])
    data = json.loads(report.output)
    assert data["run"]["content_hash"] == bundle.content_hash
    assert data["run"]["requested_by"] == "ops"
    assert len(data["steps"]) == 7 * 5 + 3  # five steps per VM, three health checks
    missing = runner.invoke(main, ["runs", "show", "zzzzzzzz"])
    assert missing.exit_code == 1 and "runs list" in missing.output
