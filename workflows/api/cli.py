"""``ferryman serve`` (the API, console and metrics) and ``ferryman tokens`` (who may use them).

``serve`` wires the store and broker of ``FERRYMAN_*``; with the in-memory broker it also runs a
worker in the process for the sites of the configured plans (nothing else could run the runs
it starts), with Redis or RabbitMQ the site workers do. ``tokens`` acts on the store directly,
as the local administrator, and says so in what it records.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

import click
from rich.console import Console
from rich.table import Table

from plans.errors import FerrymanError
from workflows.runtime import open_store
from workflows.settings import Settings
from workflows.steps import DRILL_TICK
from workflows.tokens import Role, create_token, list_tokens, local_administrator, revoke_token

if TYPE_CHECKING:
    from workflows.store import Database

console = Console()


def _fail(message: str) -> NoReturn:
    console.print(f"[red]error:[/] {message}", soft_wrap=True)
    sys.exit(1)


@contextmanager
def _store() -> Iterator[Database]:
    """The configured store, opened as every command opens it (a shared database must be
    migrated first); a FerrymanError opening or using it ends the command with one line."""
    try:
        db = open_store(Settings.from_env())
    except FerrymanError as exc:
        _fail(str(exc))
    try:
        yield db
    except FerrymanError as exc:
        _fail(str(exc))
    finally:
        db.dispose()


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--log-level", default="warning", show_default=True)
def serve(host: str, port: int, log_level: str) -> None:
    """The HTTP API (/api/v1, /openapi.json, /metrics, /healthz, /readyz) and the web console."""
    import uvicorn

    from workflows.api.app import create_app
    from workflows.api.services import Services
    from workflows.runtime import build_runtime, executor_for
    from workflows.runtime import in_process_worker as worker

    try:
        settings = Settings.from_env()
        if settings.embedded:
            runtime = build_runtime(settings, executor_for(settings))
        else:
            runtime = build_runtime(settings, client=True)
    except FerrymanError as exc:
        _fail(str(exc))
        return
    services = Services(
        runtime.engine,
        settings,
        app=runtime.app,
        notify_interval=2.0,
        drill_interval=DRILL_TICK if settings.embedded else None,
    )
    with ExitStack() as stack:
        stack.callback(runtime.db.dispose)
        if settings.embedded:
            try:
                sites = sorted(services.bundle().fabric.sites)
            except FerrymanError as exc:
                _fail(f"{exc} (with the in-memory broker, serve runs the sites' worker itself)")
                return
            stack.enter_context(worker(runtime, sites))
        console.print(f"ferryman serve: http://{host}:{port}/ (API under /api/v1)")
        uvicorn.run(create_app(services), host=host, port=port, log_level=log_level)


@click.command("commands")
@click.option(
    "--key",
    "key_ref",
    required=True,
    help="Reference to the shared signing key: env:NAME or file:PATH (never the key).",
)
@click.option("--poll", default=1.0, help="Seconds between checks for a stop request.")
def commands(key_ref: str, poll: float) -> None:
    """Carry out signed operator commands (approve, reject, cleanup, commit, cancel) from the
    ferryman.commands queue until interrupted; refused ones go to ferryman.commands.dead."""
    from plans.credentials import SecretRef
    from workflows.runtime import serve_commands

    try:
        key = SecretRef.parse(key_ref).resolve().encode("utf-8")
        serve_commands(Settings.from_env(), key, poll=poll, announce=console.print)
    except FerrymanError as exc:
        _fail(str(exc))


@click.group("tokens")
def tokens() -> None:
    """Bearer tokens of the HTTP API: create (shown once), list, revoke."""


@tokens.command("create")
@click.option("--name", required=True, help="Who holds the token (recorded with what it does).")
@click.option("--role", required=True, type=click.Choice([r.value for r in Role]))
def create(name: str, role: str) -> None:
    """Make a token and print it: this is the only time it is shown."""
    with _store() as db, db.session() as session:
        row, token = create_token(
            session, name=name, role=role, created_by=local_administrator().actor
        )
    click.echo(token)
    click.echo(
        f"token {row.name!r} ({row.role}) created; it is shown only now: keep it in a secret store",
        err=True,
    )


@tokens.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_command(as_json: bool) -> None:
    """Every token: name, role, when made and last used, whether revoked (never the token)."""
    import json

    with _store() as db, db.session() as session:
        rows = list_tokens(session)
    data: list[dict[str, Any]] = [
        {
            "name": r.name,
            "role": r.role,
            "prefix": r.prefix,
            "created_at": r.created_at.isoformat(),
            "created_by": r.created_by,
            "last_used_at": r.last_used_at.isoformat() if r.last_used_at else None,
            "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None,
        }
        for r in rows
    ]
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    table = Table("name", "role", "prefix", "created", "by", "last used", "revoked")
    for column in table.columns:
        column.overflow = "fold"
    for d in data:
        table.add_row(
            d["name"],
            d["role"],
            d["prefix"] + "...",
            d["created_at"][:19],
            d["created_by"],
            (d["last_used_at"] or "")[:19],
            (d["revoked_at"] or "")[:19],
        )
    console.print(table)


@tokens.command("revoke")
@click.argument("name")
def revoke(name: str) -> None:
    """Revoke the token called NAME: it authenticates nobody from now on."""
    with _store() as db, db.session() as session:
        row = revoke_token(session, name=name)
    click.echo(f"token {row.name!r} revoked")
