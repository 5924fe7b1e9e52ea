"""``ferryman db``: the store's schema, migrated by Alembic (``upgrade``, ``current``)."""

from __future__ import annotations

import click

from workflows.cli.output import Exit, say, stop
from workflows.cli.runs import settings
from workflows.migrations import SchemaState, current, problem, upgrade


@click.group("db")
def db() -> None:
    """The run store's schema: migrate it (`upgrade`) and say where it stands (`current`).

    Services (worker, triggers, API) refuse to start on a schema that is missing, older or
    newer than theirs; `ferryman db upgrade` is what brings it up to date, once per release,
    safely from several processes at once.
    """


def _describe(found: SchemaState) -> str:
    return problem(found) or f"the database schema is at revision {found.head}, the newest"


@db.command("upgrade")
def upgrade_cmd() -> None:
    """Migrate FERRYMAN_DATABASE_URL to the newest schema (under a database lock)."""
    url = settings().database_url
    before, after = upgrade(url)
    if before == after:
        say(f"the database schema is already at revision {after}, the newest")
    else:
        say(f"the database schema is now at revision {after} (was {before or 'empty'})")


@db.command("current")
def current_cmd() -> None:
    """Say the schema revision of FERRYMAN_DATABASE_URL; exit 1 unless it is the newest."""
    found = current(settings().database_url)
    say(_describe(found))
    if not found.up_to_date:
        stop(Exit.FAILED)
