"""Alembic migrations: the schema the models describe, from an empty database and from every
earlier revision, on SQLite and PostgreSQL; one head; concurrent upgrades; services that refuse
a schema that is missing, older or newer."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text
from sqlmodel import SQLModel

from workflows.migrations import (
    SchemaMismatch,
    config,
    current,
    head,
    require_current,
    upgrade,
)
from workflows.store.database import Database, driver_url

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REVISIONS = [
    script.revision
    for script in reversed(list(ScriptDirectory.from_config(config("sqlite://")).walk_revisions()))
]


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of its own on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/migrated.db"
        return
    name = f"ferryman_migrate_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def assert_matches_the_models(url: str) -> None:
    engine = create_engine(driver_url(url))
    try:
        assert {"run", "step", "approval", "audit_event", "alembic_version"} <= set(
            inspect(engine).get_table_names()
        )
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
        assert diff == []
    finally:
        engine.dispose()


def cli(*args: str, url: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``ferryman ARGS`` in a child process with FERRYMAN_DATABASE_URL=url."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FERRYMAN_")}
    environ.update(FERRYMAN_DATABASE_URL=url, PYTHONPATH=str(ROOT), **env)
    return subprocess.run(
        [sys.executable, "-m", "workflows.cli", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_there_is_one_head() -> None:
    heads = ScriptDirectory.from_config(config("sqlite://")).get_heads()
    assert heads == [head()]
    assert REVISIONS[-1] == head()
    # a single linear chain: every revision but the first follows exactly the one before it
    script = ScriptDirectory.from_config(config("sqlite://"))
    for before, after in pairwise(REVISIONS):
        assert script.get_revision(after).down_revision == before


def test_upgrade_from_empty_matches_the_models(empty_url: str) -> None:
    assert upgrade(empty_url) == (None, head())
    assert_matches_the_models(empty_url)
    assert current(empty_url).up_to_date


@pytest.mark.parametrize("start", REVISIONS[:-1])
def test_upgrade_from_every_earlier_revision(empty_url: str, start: str) -> None:
    assert upgrade(empty_url, start) == (None, start)
    state = current(empty_url)
    assert state.current == start and state.known and not state.up_to_date
    assert upgrade(empty_url) == (start, head())
    assert_matches_the_models(empty_url)


def test_tables_made_by_create_all_are_recorded_at_the_head(empty_url: str) -> None:
    Database(empty_url).dispose()  # the embedded demo's and the tests' way
    assert current(empty_url).current == head()
    assert upgrade(empty_url) == (head(), head())


def test_unrecorded_tables_matching_the_models_are_adopted(empty_url: str) -> None:
    # a database an earlier Ferryman made with create_all, before migrations were run
    engine = create_engine(driver_url(empty_url))
    SQLModel.metadata.create_all(engine)
    engine.dispose()
    assert current(empty_url).current is None
    assert upgrade(empty_url) == (None, head())
    assert_matches_the_models(empty_url)


def set_revision(url: str, revision: str) -> None:
    engine = create_engine(driver_url(url))
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    engine.dispose()


@pytest.mark.parametrize(
    ("prepare", "expected"),
    [
        ("nothing", "the database has no Ferryman schema yet: run `ferryman db upgrade`"),
        ("older", f"this Ferryman needs {REVISIONS[-1]}: run `ferryman db upgrade`"),
        ("newer", "(revision 9999) is newer than this Ferryman"),
    ],
)
def test_services_refuse_a_schema_that_is_not_theirs(
    empty_url: str, prepare: str, expected: str
) -> None:
    if prepare == "older":
        upgrade(empty_url, REVISIONS[0])
    elif prepare == "newer":
        upgrade(empty_url)
        set_revision(empty_url, "9999")
    # the broker is never reached: the schema is checked first
    broker = {
        "FERRYMAN_BROKER_URL": "redis://127.0.0.1:1/0",
        "FERRYMAN_RESULT_BACKEND": "redis://127.0.0.1:1/1",
    }
    for command in (["worker", "--site", "gothenburg"], ["triggers"]):
        done = cli(*command, url=empty_url, **broker)
        assert done.returncode == 1, done
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], done.stderr
    with pytest.raises(SchemaMismatch, match=r"ferryman db upgrade|newer"):
        require_current(Database(empty_url, create=False))


def test_db_current_and_upgrade_commands(empty_url: str) -> None:
    before = cli("db", "current", url=empty_url)
    assert before.returncode == 1
    assert "no Ferryman schema yet: run `ferryman db upgrade`" in before.stdout
    done = cli("db", "upgrade", url=empty_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"the database schema is now at revision {head()} (was empty)"
    after = cli("db", "current", url=empty_url)
    assert after.returncode == 0
    assert after.stdout.strip() == f"the database schema is at revision {head()}, the newest"


def test_db_upgrade_refuses_a_newer_schema(empty_url: str) -> None:
    upgrade(empty_url)
    set_revision(empty_url, "9999")
    done = cli("db", "upgrade", url=empty_url)
    assert done.returncode == 1
    assert "newer than this Ferryman" in done.stderr
    assert "Traceback" not in done.stderr


def start_all(commands: list[list[str]], url: str) -> list[subprocess.CompletedProcess[str]]:
    """Start every command at once (child processes), then wait for all of them."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FERRYMAN_")}
    environ.update(FERRYMAN_DATABASE_URL=url, PYTHONPATH=str(ROOT))
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "workflows.cli", *command],
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in commands
    ]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=180)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return results


def test_concurrent_upgrades_migrate_once(empty_url: str) -> None:
    results = start_all([["db", "upgrade"]] * 4, empty_url)
    assert [r.returncode for r in results] == [0] * 4, [r.stderr for r in results]
    migrated = [r for r in results if "(was empty)" in r.stdout]
    assert len(migrated) == 1, [r.stdout for r in results]
    assert_matches_the_models(empty_url)


def test_concurrent_embedded_starts_on_a_fresh_database(empty_url: str) -> None:
    # the embedded mode creates the tables itself: processes starting at once take turns
    results = start_all([["runs", "list", "--json"]] * 4, empty_url)
    assert [r.returncode for r in results] == [0] * 4, [r.stderr for r in results]
    assert current(empty_url).up_to_date
