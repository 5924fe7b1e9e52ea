"""``ferryman drills``: plans' drill schedules (list, set, remove) and a tick by hand
(``run-due``, what Celery beat asks a worker to do every minute).

Schedules live in the store; the commands act on it directly as the local administrator and
the audit trail says so.
"""

from __future__ import annotations

import json
from datetime import datetime

import click
from rich.table import Column, Table

from plans.errors import FerrymanError
from workflows import drills
from workflows.cli.output import Exit, console, error_line, say, stop
from workflows.runtime import build_runtime, open_store
from workflows.settings import Settings
from workflows.tokens import local_administrator


def _settings() -> Settings:
    return Settings.from_env(require_database=True)


@click.group("drills")
def drills_group() -> None:
    """Scheduled drills: a test failover of a plan at cron times, cleaned up, report kept."""


@drills_group.command("list")
@click.option("--limit", default=10, show_default=True, help="Latest drills shown.")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of tables.")
def list_cmd(limit: int, as_json: bool) -> None:
    """Every plan's drill schedule with its next slot, and the latest drills."""
    db = open_store(_settings())
    try:
        with db.session() as session:
            schedules = [drills.schedule_json(s) for s in drills.list_schedules(session)]
            recent = [drills.drill_json(d) for d in drills.drills_of(session, None, limit)]
    finally:
        db.dispose()
    if as_json:
        click.echo(json.dumps({"schedules": schedules, "drills": recent}, indent=2))
        return
    table = Table(
        Column("plan", overflow="fold"),
        Column("cron", overflow="fold"),
        Column("time zone", overflow="fold"),
        Column("next (UTC)", overflow="fold"),
        Column("set by", overflow="fold"),
    )
    for s in schedules:
        table.add_row(s["plan"], s["cron"], s["timezone"], s["next"] or "never", s["updated_by"])
    console.print(table)
    if recent:
        done = Table(
            Column("drill"),
            Column("plan", overflow="fold"),
            Column("slot (UTC)", overflow="fold"),
            Column("status"),
            Column("run", overflow="fold", min_width=12),
            Column("error", overflow="fold"),
        )
        for d in recent:
            done.add_row(
                str(d["id"]), d["plan"], d["slot"], d["status"], d["run"] or "", d["error"]
            )
        console.print(done)


@drills_group.command("set")
@click.argument("plan")
@click.option(
    "--cron",
    required=True,
    help="Five fields: minute hour day-of-month month day-of-week, e.g. '0 3 * * sun'.",
)
@click.option("--timezone", default="UTC", show_default=True, help="IANA time zone of --cron.")
def set_cmd(plan: str, cron: str, timezone: str) -> None:
    """Drill PLAN at the slots of --cron (replacing its schedule)."""
    loaded = _settings()
    try:
        if loaded.plan_paths:
            drills.plans_loader(loaded)().plan(plan)  # refuses a plan the files lack
        db = open_store(loaded)
        try:
            with db.session() as session:
                row = drills.set_schedule(
                    session,
                    plan=plan,
                    cron=cron,
                    timezone=timezone,
                    by=local_administrator().actor,
                )
                shown = drills.schedule_json(row)
        finally:
            db.dispose()
    except FerrymanError as exc:
        error_line(str(exc))
        stop(Exit.FAILED)
        return
    say(f"plan {plan}: drilled at '{shown['cron']}' ({shown['timezone']}), next {shown['next']}")


@drills_group.command("remove")
@click.argument("plan")
def remove_cmd(plan: str) -> None:
    """Stop drilling PLAN (its drills stay on record)."""
    db = open_store(_settings())
    try:
        with db.session() as session:
            drills.remove_schedule(session, plan=plan, by=local_administrator().actor)
    except FerrymanError as exc:
        error_line(str(exc))
        stop(Exit.FAILED)
        return
    finally:
        db.dispose()
    say(f"plan {plan}: no more drills")


@drills_group.command("run-due")
@click.option("--now", default=None, help="ISO time to act as of (default: now).")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a line.")
def run_due(now: str | None, as_json: bool) -> None:
    """Start the drills that are due, record missed ones, move started ones on (what the beat
    asks a worker to do every minute; safe to run at the same time as it)."""
    loaded = _settings()
    try:
        if loaded.embedded:
            raise FerrymanError(
                "drills need a shared broker (set FERRYMAN_BROKER_URL): with the in-memory "
                "one no worker outlives this command to run the drill"
            )
        moment = datetime.fromisoformat(now) if now else None
    except ValueError:
        error_line(f"--now {now!r}: give an ISO time such as 2026-12-06T03:00:00+00:00")
        stop(Exit.FAILED)
        return
    except FerrymanError as exc:
        error_line(str(exc))
        stop(Exit.FAILED)
        return
    runtime = build_runtime(loaded, client=True)
    try:
        result = drills.Drills(runtime.engine, drills.plans_loader(loaded)).tick(moment)
    finally:
        runtime.db.dispose()
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        say(
            f"drills started {result.started or 'none'}, missed {result.missed or 'none'}, "
            f"finished {result.finished or 'none'}"
        )
        for line in result.errors:
            error_line(line)
    if result.errors:
        stop(Exit.FAILED)


@drills_group.command("beat")
@click.option(
    "--schedule-file",
    default=None,
    help="Where Celery beat keeps when it last sent the tick (default: a new temporary file).",
)
def beat_cmd(schedule_file: str | None) -> None:
    """Run Celery beat: every minute it asks a worker to start the drills that are due. Run
    one per deployment (a second one starts nothing twice, it only ticks twice)."""
    import tempfile
    from pathlib import Path

    from workflows.runtime import create_app

    loaded = _settings()
    if loaded.embedded:
        error_line("the beat needs a shared broker: set FERRYMAN_BROKER_URL")
        stop(Exit.FAILED)
        return
    path = schedule_file or str(Path(tempfile.mkdtemp(prefix="ferryman-beat-")) / "schedule")
    app = create_app(loaded)
    app.Beat(schedule=path, loglevel="INFO", quiet=True).run()
