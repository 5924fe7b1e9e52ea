"""Alembic migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect
from sqlmodel import SQLModel

from workflows.migrations import upgrade
from workflows.store.database import driver_url


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_upgrade_matches_the_models(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path}/migrated.db"
    else:
        url = request.getfixturevalue("postgres_url")
        engine = create_engine(driver_url(url))
        SQLModel.metadata.drop_all(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
        engine.dispose()
    upgrade(url)
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
