"""A run's report: what ran (snapshot hash, stages), what happened (steps, gates, timeline).

:func:`build` reads the store into plain JSON; :func:`render` turns it into Rich renderables
for ``ferryman runs report`` and the end of ``ferryman demo``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.console import Group as RichGroup
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text
from sqlmodel import Session

from workflows.compiler import CompiledRun
from workflows.events import RECOVERIES
from workflows.store import repository


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def build(session: Session, run_id: str) -> dict[str, Any]:
    """The whole story of a run as JSON."""
    run = repository.get_run(session, run_id=run_id)
    compiled = CompiledRun.from_json(run.compiled)
    steps = repository.steps_of(session, run_id=run.id)
    return {
        "run": {
            "id": run.id,
            "plan": run.plan,
            "operation": run.operation,
            "direction": run.direction,
            "status": run.status,
            "parent": run.parent_id,
            "requested_by": run.requested_by,
            "content_hash": run.content_hash,
            "created_at": _iso(run.created_at),
            "started_at": _iso(run.started_at),
            "finished_at": _iso(run.finished_at),
            "duration": _seconds(run.started_at, run.finished_at),
            "current_stage": run.current_stage,
            "notes": run.notes,
            "error": run.error,
        },
        "stages": [
            {"index": s.index, "name": s.name, "kind": s.kind.value, "units": len(s.units)}
            for s in compiled.stages
        ],
        "steps": [
            {
                "key": step.key,
                "stage": step.stage,
                "vm": step.vm,
                "host": step.host,
                "kind": step.kind,
                "status": step.status,
                "attempts": step.attempts,
                "changed": step.changed,
                "duration": _seconds(step.started_at, step.finished_at),
                "result": step.result,
                "error": step.error,
                "undoable": step.undo is not None,
            }
            for step in steps
        ],
        "approvals": [
            {
                "stage": a.stage,
                "name": a.name,
                "status": a.status,
                "decided_by": a.decided_by,
                "decided_at": _iso(a.decided_at),
                "comment": a.comment,
            }
            for a in repository.approvals_of(session, run_id=run.id)
        ],
        "events": [
            {"at": _iso(e.at), "event": e.event, "actor": e.actor, "message": e.message}
            for e in repository.events_of(session, run_id=run.id)
        ],
        "follow_ups": [
            {"id": c.id, "operation": c.operation, "status": c.status}
            for c in repository.children_of(session, run_id=run.id)
        ],
    }


def addresses(report: dict[str, Any]) -> dict[str, list[str]]:
    """The addresses WAIT_IP found, per VM."""
    found: dict[str, list[str]] = {}
    for step in report["steps"]:
        if step["kind"] == "wait_ip" and step["status"] == "succeeded" and step["result"]:
            found[step["vm"]] = list(step["result"].get("addresses", []))
    return found


def render(report: dict[str, Any]) -> RenderableType:
    """The report for a terminal."""
    run = report["run"]
    head = Text.assemble(
        (f"run {run['id']}", "bold"),
        f"  {run['operation']} of {run['plan']} ({run['direction']})  ",
        (run["status"], "green" if run["status"] == "succeeded" else "red"),
        f"  {run['duration'] or '-'} s  snapshot {run['content_hash'][:12]}",
    )
    steps = Table("step", "status", "tries", "s", "detail", title="steps", expand=False)
    for step in report["steps"]:
        detail = step["error"] or ""
        if not detail and step["kind"] == "wait_ip" and step["result"]:
            detail = ", ".join(step["result"].get("addresses", []))
        steps.add_row(
            step["key"],
            step["status"],
            str(step["attempts"]),
            "" if step["duration"] is None else f"{step['duration']:.2f}",
            detail[:120],
        )
    parts: list[RenderableType] = [head, steps]
    if report["approvals"]:
        gates = Table("gate", "status", "by", "when", "comment", title="gates")
        for a in report["approvals"]:
            gates.add_row(
                a["name"], a["status"], a["decided_by"], a["decided_at"] or "", a["comment"]
            )
        parts.append(gates)
    recovered = [e for e in report["events"] if e["event"] in RECOVERIES]
    if recovered:
        table = Table("when", "event", "what", title="recovered after a crash")
        for e in recovered:
            table.add_row(e["at"] or "", e["event"], e["message"])
        parts.append(table)
    if run["error"]:
        parts.append(Text(run["error"], style="red"))
    return RichGroup(*parts)
