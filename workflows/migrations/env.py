"""Alembic environment: the store's tables, migrated on the URL the caller configured."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection
from sqlmodel import SQLModel

from workflows.store import tables  # noqa: F401  (registers the tables)
from workflows.store.database import Database

config = context.config
target_metadata = SQLModel.metadata


def run_migrations_offline() -> None:
    """Emit SQL without a connection (``alembic upgrade --sql``)."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _migrate(connection: Connection) -> None:
    # batch mode: SQLite alters tables by copying them
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate on the caller's connection (it holds the schema lock: ``workflows.migrations``),
    or through the same engine settings the store uses (WAL, busy timeout)."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    database = Database(str(config.get_main_option("sqlalchemy.url")), create=False)
    try:
        with database.engine.connect() as connection:
            _migrate(connection)
            connection.commit()
    finally:
        database.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
