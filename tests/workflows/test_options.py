"""Run options: a typed schema per failover type; typos and wrong types are refused by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from plans import load_bundle
from tests.workflows.conftest import EXAMPLE
from workflows.cli import main
from workflows.engine import Engine
from workflows.operations import Operations
from workflows.options import OptionsInvalid, validate_options
from workflows.settings import Settings
from workflows.store import Database, repository


@pytest.mark.parametrize(
    ("failover_type", "options", "expected"),
    [
        ("test", {}, {}),
        ("test", None, {}),
        ("planned", {"wait_ip_timeout": 30}, {"wait_ip_timeout": 30.0}),
        (
            "unplanned",
            {"try_shutdown": False, "recovery_point": {"sql-01": "rp-1"}},
            {"try_shutdown": False, "recovery_point": {"sql-01": "rp-1"}},
        ),
    ],
)
def test_valid_options_are_kept_as_given(
    failover_type: str, options: Any, expected: dict[str, Any]
) -> None:
    assert validate_options(failover_type, options) == expected


@pytest.mark.parametrize(
    ("failover_type", "options", "named"),
    [
        ("unplanned", {"try_shutdwn": False}, "unknown option 'try_shutdwn'"),
        ("test", {"wait_ip_timeout": "soon"}, "option 'wait_ip_timeout'"),
        ("test", {"wait_ip_timeout": True}, "option 'wait_ip_timeout'"),
        ("test", {"wait_ip_timeout": 1e20}, "at most 86400"),
        ("unplanned", {"try_shutdown": "false"}, "option 'try_shutdown': expected true or false"),
        ("test", {"try_shutdown": False}, "(only for unplanned)"),
        ("unplanned", {"recovery_point": 5}, "option 'recovery_point'"),
        ("planned", [1], "options must be a mapping"),
    ],
)
def test_unknown_and_wrongly_typed_options_are_named(
    failover_type: str, options: Any, named: str
) -> None:
    with pytest.raises(OptionsInvalid) as caught:
        validate_options(failover_type, options)
    assert named in str(caught.value)


@pytest.mark.parametrize(
    ("option", "named"),
    [("try_shutdwn=false", "try_shutdwn"), ("wait_ip_timeout=soon", "wait_ip_timeout")],
)
def test_the_cli_option_exits_1_naming_the_option(option: str, named: str) -> None:
    result = CliRunner().invoke(
        main,
        [
            "run", str(EXAMPLE), "--plan", "three-tier", "--type", "unplanned",
            "--option", option, "--dry-run",
        ],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert named in result.output
    assert "Traceback" not in result.output


def test_the_cli_option_reaches_the_compiled_run() -> None:
    result = CliRunner().invoke(
        main,
        [
            "run", str(EXAMPLE), "--plan", "three-tier", "--type", "unplanned",
            "--option", "try_shutdown=false", "--dry-run", "--json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert '"shutdown_primary"' not in result.output
    assert '"try_shutdown": false' in result.output


class _Recording:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def dispatch(self, run_id: str, stage: Any) -> None:
        self.sent.append((run_id, stage))


def test_operations_refuse_bad_options_before_creating_anything(tmp_path: Path) -> None:
    """The one start used by the CLI and the API checks the schema too."""
    settings = Settings(database_url=f"sqlite:///{tmp_path}/t.db")
    db = Database(settings.database_url)
    dispatcher = _Recording()
    operations = Operations(Engine(db, dispatcher, settings))
    bundle = load_bundle([EXAMPLE])
    try:
        with pytest.raises(OptionsInvalid, match="try_shutdwn"):
            operations.start(
                bundle, "three-tier", "unplanned", options={"try_shutdwn": False}, by="api"
            )
        with db.session() as session:
            assert repository.list_runs(session=session) == []
        assert dispatcher.sent == []
        outcome = operations.start(
            bundle, "three-tier", "unplanned", options={"try_shutdown": False}, by="api"
        )
        assert outcome.run.options == {"try_shutdown": False}
    finally:
        db.dispose()
