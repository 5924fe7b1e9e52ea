"""The run commands through click: dry-run output, listing, showing and reporting runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from plans import Bundle
from tests.workflows.conftest import EXAMPLE
from tests.workflows.fakes import Recording, on_other_vms
from workflows.cli import main
from workflows.engine import Engine
from workflows.settings import Settings
from workflows.store import Database


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


# -- names print as written (issue 14.4)

HOSTILE_NAMES = ["x[/bold]", "[/]", ":smile:", "[bold red]loud", "[link=http://x]y"]


def hostile_plan(directory: Path, vm: str) -> Path:
    """The example plan with VM web-01 renamed ``vm`` (fabric and plan)."""
    source = EXAMPLE.parent
    fabric = (source / "fabric.yaml").read_text(encoding="utf-8")
    plan = EXAMPLE.read_text(encoding="utf-8")
    quoted = json.dumps(vm)
    (directory / "fabric.yaml").write_text(fabric.replace("web-01:", f"{quoted}:", 1))
    path = directory / EXAMPLE.name
    path.write_text(plan.replace("- name: web-01", f"- name: {quoted}", 1))
    return path


@pytest.mark.parametrize("vm", HOSTILE_NAMES)
def test_dry_run_prints_names_as_written(tmp_path: Path, vm: str) -> None:
    plan = hostile_plan(tmp_path, vm)
    result = CliRunner().invoke(
        main, ["run", str(plan), "--plan", "three-tier", "--type", "test", "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    assert f"{vm} engine" in result.output or f"{vm} ferryman" in result.output, result.output


def test_run_errors_print_as_written(database_url: str, bundle: Bundle) -> None:
    engine = Engine(Database(database_url), Recording(), Settings(database_url=database_url))
    run = engine.start(bundle, "three-tier", "test", requested_by="ops")
    engine.cancel(run.id, by="ops", reason="[/] x[/bold] :smile: [red]raw")
    shown = CliRunner().invoke(main, ["runs", "show", run.id])
    assert shown.exit_code == 0, shown.output
    assert "[/] x[/bold] :smile: [red]raw" in shown.output
    report = CliRunner().invoke(main, ["runs", "report", run.id])
    assert report.exit_code == 0, report.output


def test_run_ids_are_never_cut(
    database_url: str, bundle: Bundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workflows.cli import output

    engine = Engine(Database(database_url), Recording(), Settings(database_url=database_url))
    ids = [  # each on VMs of its own: a VM is held by one run at a time
        engine.start(on_other_vms(bundle, str(i)), "three-tier", "test", requested_by="ops").id
        for i in range(3)
    ]
    monkeypatch.setattr(output.console, "width", 40)
    listed = CliRunner().invoke(main, ["runs", "list"])
    assert listed.exit_code == 0, listed.output
    for run_id in ids:
        assert run_id in listed.output, listed.output


# -- one line per error, a traceback only when asked (issues 13.2, 13.3, 18.7)


def one_line_error(result: Any) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert len(lines) <= 2, result.output  # the error, wrapped at most once by the terminal
    return " ".join(lines)


def test_a_bad_setting_is_one_line(monkeypatch: pytest.MonkeyPatch, database_url: str) -> None:
    monkeypatch.setenv("FERRYMAN_STEP_LEASE", "abc")
    line = one_line_error(CliRunner().invoke(main, ["runs", "list"]))
    assert line.startswith("error: FERRYMAN_STEP_LEASE='abc'")
    monkeypatch.setenv("FERRYMAN_STEP_LEASE", "120")
    monkeypatch.setenv("FERRYMAN_BROKER_URL", "notaurl")
    assert "FERRYMAN_BROKER_URL" in one_line_error(CliRunner().invoke(main, ["runs", "list"]))


def test_the_store_needs_its_url() -> None:
    line = one_line_error(CliRunner().invoke(main, ["runs", "list"]))
    assert "FERRYMAN_DATABASE_URL is not set" in line


def test_debug_shows_the_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRYMAN_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    result = CliRunner().invoke(main, ["--debug", "runs", "list"])
    assert result.exit_code == 1 and "Traceback" in result.output
    monkeypatch.setenv("FERRYMAN_DEBUG", "1")
    result = CliRunner().invoke(main, ["runs", "list"])
    assert result.exit_code == 1 and "Traceback" in result.output


def test_database_down_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.servers import free_port

    monkeypatch.setenv("FERRYMAN_DATABASE_URL", f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    line = one_line_error(CliRunner().invoke(main, ["runs", "list"]))
    assert "the database (FERRYMAN_DATABASE_URL) cannot be used" in line


def test_a_missing_role_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    # the machine's PostgreSQL (trust authentication) knows no such role
    monkeypatch.setenv(
        "FERRYMAN_DATABASE_URL", "postgresql://no_such_ferryman_role@127.0.0.1:5432/postgres"
    )
    line = one_line_error(CliRunner().invoke(main, ["runs", "list"]))
    assert 'role "no_such_ferryman_role" does not exist' in line


def test_a_missing_driver_is_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    # psycopg made unimportable, as on a machine without the postgres extra
    code = "import sys; sys.modules['psycopg'] = None; from workflows.cli import main; main()"
    env = {
        "PATH": "/usr/bin:/bin",
        "FERRYMAN_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/postgres",
    }
    done = subprocess.run(
        [sys.executable, "-c", code, "runs", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "the PostgreSQL driver is not installed" in done.stderr


def test_a_subcommand_that_cannot_import_is_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    from workflows import cli

    monkeypatch.setitem(cli.SUBCOMMANDS, "broken", "tests.workflows.no_such_module:command")
    result = CliRunner().invoke(main, ["broken"])
    line = one_line_error(result)
    assert "No module named 'tests.workflows.no_such_module'" in line
    assert "unavailable" not in line
    listed = CliRunner().invoke(main, ["--help"])
    assert "cannot load: ModuleNotFoundError" in listed.output
    debug = CliRunner().invoke(main, ["--debug", "broken"])
    assert "Traceback" in debug.output


# -- Flower binds loopback unless told otherwise (issue 14.7)


def test_flower_arguments_keep_loopback() -> None:
    from plans.errors import ConfigurationError
    from workflows.cli.services import flower_arguments

    assert flower_arguments(["--port=5601"], authenticated=False) == [
        "--address=127.0.0.1",
        "--port=5601",
    ]
    assert "--address=127.0.0.1" in flower_arguments(
        ["--purge_offline_workers=60"], authenticated=False
    )
    given = flower_arguments(["--address", "::1"], authenticated=False)
    assert given[-2:] == ["--address", "::1"] and "--address=127.0.0.1" not in given
    for beyond in (["--address=0.0.0.0"], ["--address", ""], ["--address=192.0.2.7"]):
        with pytest.raises(ConfigurationError, match="without authentication"):
            flower_arguments(beyond, authenticated=False)
        assert flower_arguments(beyond, authenticated=True)
    assert flower_arguments(["--address=0.0.0.0", "--auth=.*@example.com"], authenticated=False)
    with pytest.raises(ConfigurationError, match="not on the command line"):
        flower_arguments(["--basic-auth=ops:secret"], authenticated=False)


def _listeners(port: int) -> set[str]:
    """Local addresses listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table, encoding="ascii") as handle:
            for line in handle.readlines()[1:]:
                fields = line.split()
                address, hex_port = fields[1].rsplit(":", 1)
                if int(hex_port, 16) == port and fields[3] == "0A":  # LISTEN
                    found.add(address)
    return found


def test_flower_with_a_port_listens_on_loopback_only(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.support.servers import free_port, wait_for

    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    log = tmp_path / "flower.log"
    with open(log, "wb") as out:
        flower = subprocess.Popen(
            [sys.executable, "-m", "workflows.cli", "flower", f"--port={port}"],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: bool(_listeners(port)), timeout=60, what=f"Flower on {port} ({log})")
        assert _listeners(port) == {"0100007F"}  # 127.0.0.1 only: not 0.0.0.0, not ::
    finally:
        flower.terminate()
        flower.wait(timeout=20)


def test_flower_beyond_loopback_needs_authentication() -> None:
    result = CliRunner().invoke(main, ["flower", "--address=0.0.0.0", "--port=5601"])
    assert "without authentication" in one_line_error(result)


def test_a_malformed_database_url_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRYMAN_DATABASE_URL", "postgresql://postgres@[::1/ferryman")
    line = one_line_error(CliRunner().invoke(main, ["runs", "list"]))
    assert "FERRYMAN_DATABASE_URL" in line


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("FERRYMAN_PSRP_SESSIONS_PER_HOST", "abc", "FERRYMAN_PSRP_SESSIONS_PER_HOST='abc'"),
        ("FERRYMAN_BROKER_URL", "notaurl", "FERRYMAN_BROKER_URL: unknown broker URL"),
        ("FERRYMAN_DATABASE_URL", "", "FERRYMAN_DATABASE_URL"),
    ],
)
def test_a_worker_refuses_to_start_on_a_bad_setting(
    monkeypatch: pytest.MonkeyPatch, database_url: str, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv("FERRYMAN_BROKER_URL", "redis://127.0.0.1:6379/15")
    monkeypatch.setenv(name, value)
    result = CliRunner().invoke(main, ["worker", "--site", "stockholm"])
    assert expected in one_line_error(result)


def test_a_worker_with_its_database_down_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.servers import free_port

    monkeypatch.setenv("FERRYMAN_BROKER_URL", "redis://127.0.0.1:6379/15")
    monkeypatch.setenv("FERRYMAN_DATABASE_URL", f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    result = CliRunner().invoke(main, ["worker", "--site", "stockholm"])
    assert "the database (FERRYMAN_DATABASE_URL) cannot be used" in one_line_error(result)
