"""Alembic migrations of the store: the schema's only authority outside the demo and tests.

:func:`upgrade` brings a database to the latest revision under the database's schema lock, so
several processes starting at once are safe; :func:`current` says where a database stands;
:func:`require_current` is what services call at start, refusing a schema that is missing,
older or newer with one line naming what to run.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect
from sqlmodel import SQLModel

from plans.errors import ConfigurationError
from workflows.store.database import Database, schema_lock

HERE = Path(__file__).resolve().parent
UPGRADE_COMMAND = "ferryman db upgrade"


class SchemaMismatch(ConfigurationError):
    """The database's schema is not the one this Ferryman was built for."""


@dataclass(frozen=True)
class SchemaState:
    """Where a database stands against this Ferryman's migrations."""

    current: str | None  # the revision recorded in the database (None: none recorded)
    head: str  # the newest revision this Ferryman knows
    known: bool  # whether ``current`` is one of this Ferryman's revisions
    has_tables: bool  # whether any of the store's tables exist

    @property
    def up_to_date(self) -> bool:
        """The database is at this Ferryman's newest revision."""
        return self.current == self.head


def config(url: str, connection: Connection | None = None) -> Config:
    """An Alembic configuration for the database at ``url`` (no alembic.ini needed);
    ``connection``: run on it (it holds the schema lock) instead of opening one."""
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@cache
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(config("sqlite://"))


def head() -> str:
    """The newest revision; there is exactly one (the chain is linear)."""
    heads = _script().get_heads()
    if len(heads) != 1:
        raise SchemaMismatch(f"the migrations have {len(heads)} heads ({', '.join(heads)})")
    return heads[0]


def _known_revision(script: ScriptDirectory, revision: str) -> bool:
    try:
        return script.get_revision(revision) is not None
    except Exception:  # alembic raises its own error for an id it does not know
        return False


def state_of(connection: Connection) -> SchemaState:
    """Where the database behind ``connection`` stands (read-only)."""
    script = _script()
    recorded = MigrationContext.configure(connection).get_current_heads()
    tables = set(inspect(connection).get_table_names())
    current = recorded[0] if recorded else None
    return SchemaState(
        current=current,
        head=head(),
        known=current is not None and _known_revision(script, current),
        has_tables=bool(tables & set(SQLModel.metadata.tables)),
    )


def state(engine: Engine) -> SchemaState:
    """Where the database of ``engine`` stands (read-only)."""
    with engine.connect() as connection:
        return state_of(connection)


def problem(found: SchemaState) -> str | None:
    """The one line a service says about ``found``, or None when it may start."""
    if found.up_to_date:
        return None
    if found.current is None:
        if found.has_tables:
            return (
                "the database has Ferryman's tables but no migration record: run "
                f"`{UPGRADE_COMMAND}`"
            )
        return f"the database has no Ferryman schema yet: run `{UPGRADE_COMMAND}`"
    if found.known:
        return (
            f"the database schema is at revision {found.current}, this Ferryman needs "
            f"{found.head}: run `{UPGRADE_COMMAND}`"
        )
    return (
        f"the database schema (revision {found.current}) is newer than this Ferryman "
        f"(revision {found.head}): run the Ferryman version that migrated it"
    )


def require_current(db: Database) -> Database:
    """``db`` when its schema is this Ferryman's newest; SchemaMismatch otherwise."""
    try:
        message = problem(state(db.engine))
    except BaseException:
        db.dispose()
        raise
    if message is not None:
        db.dispose()
        raise SchemaMismatch(message)
    return db


def upgrade(url: str, revision: str = "head") -> tuple[str | None, str | None]:
    """Migrate the database at ``url`` to ``revision`` (default: the latest) under the schema
    lock; returns the revisions before and after.

    A database whose tables an earlier Ferryman created without a migration record is
    recorded at the head when its tables match this version's exactly, and refused otherwise.
    """
    db = Database(url, create=False, pool_size=1)
    try:
        with schema_lock(db.engine) as connection:
            before = state_of(connection)
            if before.current is None and before.has_tables:
                _adopt(connection, url)
            elif before.current is not None and not before.known:
                raise SchemaMismatch(problem(before) or "unknown revision")
            else:
                command.upgrade(config(url, connection), revision)
            connection.commit()
            after = state_of(connection)
        return before.current, after.current
    finally:
        db.dispose()


def _adopt(connection: Connection, url: str) -> None:
    """Record the head on a database made by ``create_all`` whose tables match the models."""
    differences = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    if differences:
        raise SchemaMismatch(
            "the database has Ferryman's tables but no migration record, and they differ from "
            f"this version's schema ({len(differences)} differences, first: {differences[0]}): "
            "restore it from a backup made by the version that created it"
        )
    stamp_head(connection, url)


def stamp_head(connection: Connection, url: str) -> None:
    """Record the newest revision on ``connection`` (its tables were made from the models)."""
    command.stamp(config(url, connection), "head")


def current(url: str) -> SchemaState:
    """Where the database at ``url`` stands."""
    db = Database(url, create=False, pool_size=1)
    try:
        return state(db.engine)
    finally:
        db.dispose()
