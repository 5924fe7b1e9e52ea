"""Fixtures for engine tests: the example bundle, databases (SQLite, PostgreSQL), runtimes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from plans import Bundle, load_bundle
from tests.workflows.fakes import FakeExecutor
from workers.embedded import Runtime, embedded
from workflows.settings import RetryPolicy, Settings
from workflows.store import Database

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "plans" / "examples" / "three-tier.yaml"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def bundle() -> Bundle:
    return load_bundle([EXAMPLE])


def _postgres_database() -> Iterator[str]:
    import psycopg

    name = f"ferryman_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(
        PG_ADMIN.replace("postgresql://", "postgresql://", 1), autocommit=True
    ) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL database for the whole session."""
    yield from _postgres_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """The same store on SQLite and on PostgreSQL (fresh tables per test)."""
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path}/store.db")
    else:
        from sqlmodel import SQLModel

        database = Database(request.getfixturevalue("postgres_url"))
        SQLModel.metadata.drop_all(database.engine)
        database.create_all()
    yield database
    database.dispose()


def fast_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": f"sqlite:///{tmp_path}/ferryman.db",
        "retry": RetryPolicy(max_retries=3, base_delay=0.01, max_delay=0.05),
        "advance_poll": 0.05,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def shared_executor() -> FakeExecutor:
    return FakeExecutor()


@pytest.fixture
def executor(shared_executor: FakeExecutor) -> FakeExecutor:
    """The fake executor, reset for each test (the runtime is shared by a module)."""
    shared_executor.reset()
    return shared_executor


@pytest.fixture(scope="module")
def runtime(
    tmp_path_factory: pytest.TempPathFactory, shared_executor: FakeExecutor
) -> Iterator[Runtime]:
    """The engine with an in-process worker (four threads) and the fake executor.

    Started once per module: a worker takes seconds to stop, and runs never share state
    beyond the database, which tests query by run id.
    """
    settings = fast_settings(tmp_path_factory.mktemp("engine"))
    with embedded(
        settings, ["stockholm", "gothenburg"], executor=shared_executor, concurrency=4
    ) as rt:
        yield rt


@pytest.fixture(autouse=True)
def _vms_free(request: pytest.FixtureRequest) -> None:
    """Each test starts with no VM held: the module's runtime is shared, and a test's runs
    (a test failover awaiting cleanup, say) would otherwise hold the next test's VMs."""
    shared = [name for name in ("runtime", "environment") if name in request.fixturenames]
    if not shared:
        return
    from sqlmodel import delete

    from workflows.store.tables import VmLock

    runtime: Runtime = request.getfixturevalue(shared[0])
    with runtime.db.session() as session:
        session.exec(delete(VmLock))
