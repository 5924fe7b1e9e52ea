"""Watching a run: a Rich live view of its VMs and steps, and waiting for a status.

The store is the only source (the view polls it), so the same view works for an embedded
worker, remote workers on Redis, or a run started by someone else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text
from sqlmodel import Session, select

from plans.errors import FerrymanError
from workflows.compiler import CompiledRun, StageKind
from workflows.statuses import RunStatus
from workflows.store import Database, Run, Step, repository
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


def step_progress(step: Step) -> dict[str, Any] | None:
    """The progress a long step reported (``result["progress"]``: percent, bytes), if any."""
    found = (step.result or {}).get("progress")
    return found if isinstance(found, dict) else None


def describe_progress(figures: dict[str, Any]) -> str:
    """``42.0% (25.2 GB of 60.0 GB sent, InitialReplicationInProgress)``."""
    percent = float(figures.get("percent") or 0.0)
    total = int(figures.get("bytes_total") or 0)
    sent = int(figures.get("bytes_transferred") or 0)
    detail = [f"{_size(sent)} of {_size(total)} sent"] if total else []
    if figures.get("state"):
        detail.append(str(figures["state"]))
    return f"{percent:.1f}%" + (f" ({', '.join(detail)})" if detail else "")


def running_progress(session: Session, run: Run) -> dict[str, dict[str, Any]]:
    """The progress of the run's steps running in its current stage, by step key (one narrow
    query on the stage's index, cheap enough to poll)."""
    rows = session.exec(
        select(Step.key, Step.result).where(
            Step.run_id == run.id,
            Step.stage == run.current_stage,
            Step.status == "running",
        )
    ).all()
    found = {}
    for key, result in rows:
        figures = (result or {}).get("progress") if isinstance(result, dict) else None
        if isinstance(figures, dict):
            found[key] = figures
    return found


class ProgressLines:
    """What changed in the running steps' progress since the last look (``runs follow``)."""

    def __init__(self) -> None:
        self.shown: dict[str, Any] = {}

    def changed(self, found: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
        """The (step key, figures) whose percent moved since they were last returned."""
        out = []
        for key, figures in sorted(found.items()):
            if self.shown.get(key) != figures.get("percent"):
                self.shown[key] = figures.get("percent")
                out.append((key, figures))
        return out


def _size(count: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


class WaitTimeout(FerrymanError):
    """The run did not reach the awaited status in time; it goes on: watch it or cancel it."""


def snapshot(db: Database, run_id: str) -> RenderableType:
    """A table of the run now: one row per VM (or script), one column per step kind; a long
    step's progress (an initial replication's percent and bytes) in its cell and a line below."""
    with db.session() as session:
        run = repository.get_run(session, run_id=run_id)
        steps = repository.steps_of(session, run_id=run_id)
        approvals = repository.approvals_of(session, run_id=run_id)
    compiled = CompiledRun.from_json(run.compiled)
    kinds: dict[str, None] = {}
    rows: dict[str, dict[str, str]] = {}
    percents: dict[tuple[str, str], float] = {}
    notes: list[str] = []
    for step in steps:
        kinds.setdefault(step.kind, None)
        owner = step.vm or step.key.rsplit("/", 1)[0]
        rows.setdefault(owner, {})[step.kind] = step.status
        figures = step_progress(step)
        if figures is not None and step.status in ("running", "failed"):
            percents[owner, step.kind] = float(figures.get("percent") or 0.0)
            what = step.kind.replace("_", " ")
            notes.append(f"{owner} {what}: {describe_progress(figures)}")
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
            Text(_mark(statuses[k], percents.get((owner, k))), style=STYLE.get(statuses[k], ""))
            if k in statuses
            else Text("")
            for k in kinds
        ]
        table.add_row(Text(owner), *cells)  # a name prints as written, never as markup
    if stage.kind is StageKind.GATE and run.status == RunStatus.WAITING:
        gate = next((a for a in approvals if a.stage == stage.index), None)
        if gate is not None:
            table.caption = Text(f"waiting at gate '{gate.name}': {gate.instructions}")
    if notes:  # below the table, a line each, as wide as the console
        return Group(table, *(Text(note, style="yellow") for note in notes))
    return table


def _mark(status: str, percent: float | None) -> str:
    mark = MARK.get(status, "?")
    return mark if percent is None else f"{mark} {percent:.0f}%"


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
