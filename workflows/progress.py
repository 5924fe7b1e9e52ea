"""Watching a run: a Rich live view of its VMs and steps, and waiting for a status.

The store is the only source (the view polls it), so the same view works for an embedded
worker, remote workers on Redis, or a run started by someone else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from rich.console import Console, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from plans.errors import FerrymanError
from workflows.compiler import CompiledRun, StageKind
from workflows.statuses import RunStatus
from workflows.store import Database, Run, repository
from workflows.waiting import wait_until

STYLE = {
    "pending": "dim",
    "running": "yellow",
    "succeeded": "green",
    "failed": "red",
    "skipped": "cyan",
    "cancelled": "magenta",
}
MARK = {
    "pending": "·",
    "running": "…",
    "succeeded": "✔",
    "failed": "✘",
    "skipped": "-",
    "cancelled": "⊘",
}


class WaitTimeout(FerrymanError):
    """The run did not reach the awaited status in time; it goes on: watch it or cancel it."""


def snapshot(db: Database, run_id: str) -> RenderableType:
    """A table of the run now: one row per VM (or script), one column per step kind."""
    with db.session() as session:
        run = repository.get_run(session, run_id=run_id)
        steps = repository.steps_of(session, run_id=run_id)
        approvals = repository.approvals_of(session, run_id=run_id)
    compiled = CompiledRun.from_json(run.compiled)
    kinds: dict[str, None] = {}
    rows: dict[str, dict[str, str]] = {}
    for step in steps:
        kinds.setdefault(step.kind, None)
        owner = step.vm or step.key.rsplit("/", 1)[0]
        rows.setdefault(owner, {})[step.kind] = step.status
    total = len(compiled.stages)
    # a finished run points one past its last stage (the engine moved on, found nothing left)
    position = min(run.current_stage, total - 1)
    stage = compiled.stages[position]
    title = Text.assemble(
        (f"run {run.id} ", "bold"),
        f"{run.operation} of {run.plan}  ",
        (run.status, STYLE.get(run.status, "bold")),
        f"  {stage_position(run.current_stage, total)}: {stage.name}",
    )
    table = Table(title=title, title_justify="left")
    table.add_column("VM / action")
    for kind in kinds:
        table.add_column(kind.replace("_", " "), justify="center")
    for owner, statuses in rows.items():
        cells = [
            Text(MARK.get(statuses[k], "?"), style=STYLE.get(statuses[k], ""))
            if k in statuses
            else Text("")
            for k in kinds
        ]
        table.add_row(Text(owner), *cells)  # a name prints as written, never as markup
    if stage.kind is StageKind.GATE and run.status == RunStatus.WAITING:
        gate = next((a for a in approvals if a.stage == stage.index), None)
        if gate is not None:
            table.caption = Text(f"waiting at gate '{gate.name}': {gate.instructions}")
    return table


def stage_position(current_stage: int, total: int) -> str:
    """``stage N/M`` with N never past M: a finished run's index points past its last stage."""
    return f"stage {min(current_stage, total - 1) + 1}/{total}"


def wait_for(
    db: Database,
    run_id: str,
    statuses: Iterable[RunStatus],
    *,
    timeout: float,
    interval: float = 0.1,
    on_tick: Callable[[], None] | None = None,
) -> Run:
    """Poll the store until the run is in one of ``statuses``; raise WaitTimeout otherwise."""
    wanted = {RunStatus(s) for s in statuses}
    latest: list[Run] = []

    def reached() -> Run | None:
        with db.session() as session:
            latest[:] = [repository.get_run(session, run_id=run_id)]
        if on_tick is not None:
            on_tick()
        return latest[0] if RunStatus(latest[0].status) in wanted else None

    run = wait_until(reached, timeout=timeout, interval=interval)
    if run is None:
        raise WaitTimeout(
            f"run {run_id} is still {latest[0].status} after {timeout:.0f} s; "
            f"'ferryman runs show {run_id}' follows it"
        )
    return run


def watch(
    db: Database,
    run_id: str,
    statuses: Iterable[RunStatus],
    *,
    timeout: float,
    console: Console | None = None,
    live: bool = True,
) -> Run:
    """Wait like :func:`wait_for` while showing the live table (plain final table if not live)."""
    console = console or Console()
    if not live or not console.is_terminal:
        run = wait_for(db, run_id, statuses, timeout=timeout)
        console.print(snapshot(db, run_id))
        return run
    with Live(snapshot(db, run_id), console=console, refresh_per_second=8) as view:
        return wait_for(
            db,
            run_id,
            statuses,
            timeout=timeout,
            on_tick=lambda: view.update(snapshot(db, run_id)),
        )
