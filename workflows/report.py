"""A run's report: what ran (snapshot hash, stages), what happened (steps, gates, timeline).

:func:`build` reads the store into plain JSON (the report's JSON twin); :func:`render` turns it
into Rich renderables for ``ferryman runs report`` and the end of ``ferryman demo``, and
:func:`html_document` into a self-contained HTML page for auditors (printable to PDF), whose
timeline (:func:`gantt_html`) the web console shows too.

RTO achieved is measured from the run's start to the last VM up (the last ``start_vm`` or
``wait_ip`` step to succeed), and given with and without the time spent waiting at gates, next
to the plan's ``rto`` target.
"""

from __future__ import annotations

import html
from datetime import datetime
from importlib import resources
from typing import Any

from rich.console import Group as RichGroup
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text
from sqlmodel import Session

from workflows.compiler import CompiledRun
from workflows.events import RECOVERIES
from workflows.store import repository
from workflows.store.views import run_summary

VM_UP = ("start_vm", "wait_ip")  # the steps after which a VM counts as up
DNS_KINDS = ("update_dns", "restore_dns")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def build(session: Session, run_id: str) -> dict[str, Any]:
    """The whole story of a run as JSON."""
    run = repository.get_run(session, run_id=run_id)
    compiled = CompiledRun.from_json(run.compiled)
    steps = repository.steps_of(session, run_id=run.id)
    approvals = repository.approvals_of(session, run_id=run.id)
    plan = (run.snapshot.get("plans") or {}).get(run.plan) or {}
    report: dict[str, Any] = {
        "run": {
            **run_summary(run),
            "idempotency_key": run.idempotency_key,
            "content_hash": run.content_hash,
            "options": run.options,
            "duration": _seconds(run.started_at, run.finished_at),
            "notes": run.notes,
        },
        "stages": [
            {
                "index": s.index,
                "name": s.name,
                "kind": s.kind.value,
                "group": s.group,
                "units": len(s.units),
                "vms": sorted({u.vm for u in s.units if u.vm}),
            }
            for s in compiled.stages
        ],
        "steps": [
            {
                "key": step.key,
                "stage": step.stage,
                "group": step.group,
                "vm": step.vm,
                "host": step.host,
                "kind": step.kind,
                "status": step.status,
                "attempts": step.attempts,
                "changed": step.changed,
                "started_at": _iso(step.started_at),
                "finished_at": _iso(step.finished_at),
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
                "instructions": a.instructions,
                "status": a.status,
                "requested_at": _iso(a.requested_at),
                "deadline": _iso(a.deadline),
                "decided_by": a.decided_by,
                "decided_at": _iso(a.decided_at),
                "waited": _seconds(a.requested_at, a.decided_at),
                "comment": a.comment,
            }
            for a in approvals
        ],
        "events": [
            {
                "at": _iso(e.at),
                "event": e.event,
                "actor": e.actor,
                "message": e.message,
                "data": e.data,
            }
            for e in repository.events_of(session, run_id=run.id)
        ],
        "follow_ups": [
            {
                "id": c.id,
                "operation": c.operation,
                "status": c.status,
                "requested_by": c.requested_by,
                "notes": c.notes,
                "created_at": _iso(c.created_at),
                "finished_at": _iso(c.finished_at),
            }
            for c in repository.children_of(session, run_id=run.id)
        ],
    }
    report["dns_changes"] = [
        {"vm": s["vm"], "kind": s["kind"], "status": s["status"], "result": s["result"]}
        for s in report["steps"]
        if s["kind"] in DNS_KINDS
    ]
    report["rto"] = rto(report, plan.get("rto"))
    report["timeline"] = timeline(report)
    return report


def rto(report: dict[str, Any], target: float | None) -> dict[str, Any]:
    """RTO achieved (start to the last VM up), with and without gate waits, against ``target``."""
    started = _parse(report["run"]["started_at"])
    ups = [
        _parse(s["finished_at"])
        for s in report["steps"]
        if s["kind"] in VM_UP and s["status"] == "succeeded" and s["finished_at"]
    ]
    last_up = max((u for u in ups if u is not None), default=None)
    achieved = _seconds(started, last_up)
    waited = 0.0
    if started is not None and last_up is not None:
        for gate in report["approvals"]:
            opened, closed = _parse(gate["requested_at"]), _parse(gate["decided_at"])
            if opened is None or closed is None:
                continue
            # only the part of the wait that falls between the start and the last VM up
            overlap = (min(closed, last_up) - max(opened, started)).total_seconds()
            waited += max(0.0, overlap)
    without = None if achieved is None else round(achieved - waited, 3)
    return {
        "target": target,
        "achieved": achieved,
        "gate_wait": round(waited, 3),
        "achieved_without_gates": without,
        "last_vm_up_at": _iso(last_up),
        "met": None if target is None or achieved is None else achieved <= target,
        "met_without_gates": None if target is None or without is None else without <= target,
    }


def timeline(report: dict[str, Any]) -> dict[str, Any]:
    """Bars for a Gantt: one per stage (from its first step or gate to its last), one per step.

    Offsets are seconds from the run's start; a bar still open ends at ``now`` of the report
    (its latest recorded moment), so a running run's bars grow as it moves.
    """
    moments = [
        _parse(v)
        for v in (
            [report["run"]["started_at"], report["run"]["finished_at"]]
            + [s["started_at"] for s in report["steps"]]
            + [s["finished_at"] for s in report["steps"]]
            + [a["requested_at"] for a in report["approvals"]]
            + [a["decided_at"] for a in report["approvals"]]
            + [e["at"] for e in report["events"]]
        )
    ]
    known = [m for m in moments if m is not None]
    origin = _parse(report["run"]["started_at"]) or (min(known) if known else None)
    if origin is None:
        return {"origin": None, "span": 0.0, "bars": []}
    # a finished run ends where it finished: later events (a follow-up asked for) are not its
    end = _parse(report["run"]["finished_at"]) or max(known)
    span = max((end - origin).total_seconds(), 0.001)

    def offset(moment: datetime | None) -> float | None:
        return None if moment is None else round((moment - origin).total_seconds(), 3)

    bars: list[dict[str, Any]] = []
    gates = {a["stage"]: a for a in report["approvals"]}
    for stage in report["stages"]:
        steps = [s for s in report["steps"] if s["stage"] == stage["index"]]
        if stage["kind"] == "gate" and stage["index"] in gates:
            gate = gates[stage["index"]]
            start, stop = _parse(gate["requested_at"]), _parse(gate["decided_at"])
            status = gate["status"]
        else:
            starts = [_parse(s["started_at"]) for s in steps if s["started_at"]]
            stops = [_parse(s["finished_at"]) for s in steps if s["finished_at"]]
            start = min((s for s in starts if s), default=None)
            done = steps and all(s["finished_at"] for s in steps)
            stop = max((s for s in stops if s), default=None) if done else None
            status = _stage_status([s["status"] for s in steps])
        bars.append(
            {
                "label": f"{stage['index']}. {stage['name']}",
                "level": "stage",
                "status": status,
                "start": offset(start),
                "end": offset(stop) if stop else (offset(end) if start else None),
            }
        )
        for step in steps:
            first = _parse(step["started_at"])
            last = _parse(step["finished_at"])
            bars.append(
                {
                    "label": step["key"],
                    "level": "step",
                    "status": step["status"],
                    "start": offset(first),
                    "end": offset(last) if last else (offset(end) if first else None),
                }
            )
    return {"origin": _iso(origin), "span": round(span, 3), "bars": bars}


def _stage_status(statuses: list[str]) -> str:
    for status in ("failed", "running", "pending", "cancelled"):
        if status in statuses:
            return status
    return "succeeded" if statuses else "pending"


def addresses(report: dict[str, Any]) -> dict[str, list[str]]:
    """The addresses WAIT_IP found, per VM."""
    found: dict[str, list[str]] = {}
    for step in report["steps"]:
        if step["kind"] == "wait_ip" and step["status"] == "succeeded" and step["result"]:
            found[step["vm"]] = list(step["result"].get("addresses", []))
    return found


def _duration(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def render(report: dict[str, Any]) -> RenderableType:
    """The report for a terminal: long ids and errors wrap, nothing is cut."""
    run = report["run"]
    head = Text.assemble(
        (f"run {run['id']}", "bold"),
        f"  {run['operation']} of {run['plan']} ({run['direction']})  ",
        (run["status"], "green" if run["status"] == "succeeded" else "red"),
        f"  {run['duration'] or '-'} s  snapshot {run['content_hash']}",
        f"\nrequested by {run['requested_by'] or '-'}",
    )
    parts: list[RenderableType] = [head]
    target = report["rto"]
    if target["achieved"] is not None or target["target"] is not None:
        verdict = {True: "met", False: "MISSED", None: "no target"}[target["met"]]
        parts.append(
            Text(
                f"RTO: {_duration(target['achieved'])} achieved "
                f"({_duration(target['achieved_without_gates'])} without "
                f"{_duration(target['gate_wait'])} at gates); target "
                f"{_duration(target['target'])}: {verdict}"
            )
        )
    steps = Table("step", "status", "tries", "s", "detail", title="steps", expand=False)
    for column in steps.columns:
        column.overflow = "fold"
    for step in report["steps"]:
        detail = step["error"] or ""
        if not detail and step["kind"] == "wait_ip" and step["result"]:
            detail = ", ".join(step["result"].get("addresses", []))
        steps.add_row(
            step["key"],
            step["status"],
            str(step["attempts"]),
            "" if step["duration"] is None else f"{step['duration']:.2f}",
            detail,
        )
    parts.append(steps)
    if report["approvals"]:
        gates = Table("gate", "status", "by", "when", "comment", title="gates")
        for column in gates.columns:
            column.overflow = "fold"
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
    if report["follow_ups"]:
        follow = Table("follow-up run", "operation", "status", "requested by", title="follow-ups")
        for column in follow.columns:
            column.overflow = "fold"
        for child in report["follow_ups"]:
            follow.add_row(child["id"], child["operation"], child["status"], child["requested_by"])
        parts.append(follow)
    if run["notes"]:
        parts.append(Text(f"notes: {run['notes']}"))
    if run["error"]:
        parts.append(Text(run["error"], style="red"))
    return RichGroup(*parts)


# -- HTML


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def gantt_html(report: dict[str, Any]) -> str:
    """The timeline as HTML bars (no script needed), each placed by percent of the run's span."""
    line = report["timeline"]
    span = line["span"] or 1.0
    rows = []
    for bar in line["bars"]:
        if bar["start"] is None:
            body = '<span class="bar-none">not started</span>'
        else:
            left = 100 * bar["start"] / span
            width = max(0.4, 100 * ((bar["end"] or bar["start"]) - bar["start"]) / span)
            width = min(width, 100 - left) if left < 100 else 0.4
            seconds = (bar["end"] or bar["start"]) - bar["start"]
            body = (
                f'<span class="bar {_e(bar["status"])}" style="left:{left:.2f}%;'
                f'width:{width:.2f}%" title="{_e(bar["label"])}: {seconds:.2f} s"></span>'
            )
        rows.append(
            f'<div class="gantt-row {_e(bar["level"])}" data-status="{_e(bar["status"])}">'
            f'<span class="gantt-label">{_e(bar["label"])}</span>'
            f'<span class="gantt-track">{body}</span>'
            f'<span class="gantt-status">{_e(bar["status"])}</span></div>'
        )
    return (
        f'<div class="gantt" data-span="{span}"><div class="gantt-head">0 s &rarr; '
        f"{span:.1f} s</div>{''.join(rows)}</div>"
    )


def stylesheet() -> str:
    """The console's stylesheet (also inlined into a report written to a file)."""
    return resources.files("workflows.api").joinpath("static/console.css").read_text("utf-8")


def _table(head: list[str], rows: list[list[Any]]) -> str:
    cells = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def html_body(report: dict[str, Any]) -> str:
    """The report's content as HTML (for the console's report page and the file)."""
    run, target = report["run"], report["rto"]
    verdict = {True: "met", False: "missed", None: "no target"}
    parts = [
        f"<h1>Run {_e(run['id'])}</h1>",
        _table(
            ["field", "value"],
            [
                ["plan", run["plan"]],
                ["operation", f"{run['operation']} ({run['direction']})"],
                ["status", run["status"]],
                ["requested by", run["requested_by"]],
                ["created", run["created_at"]],
                ["started", run["started_at"]],
                ["finished", run["finished_at"]],
                ["snapshot hash", run["content_hash"]],
                ["parent run", run["parent"] or ""],
                ["notes", run["notes"]],
                ["error", run["error"]],
            ],
        ),
        "<h2>Recovery time</h2>",
        _table(
            ["measure", "seconds", "against the plan's rto"],
            [
                ["target (plan rto)", target["target"], ""],
                ["achieved: start to last VM up", target["achieved"], verdict[target["met"]]],
                ["time waiting at gates", target["gate_wait"], ""],
                [
                    "achieved without gate waiting",
                    target["achieved_without_gates"],
                    verdict[target["met_without_gates"]],
                ],
            ],
        ),
        "<h2>Timeline</h2>",
        gantt_html(report),
        "<h2>Approvals</h2>",
        _table(
            ["gate", "status", "requested", "decided by", "decided", "waited (s)", "comment"],
            [
                [
                    a["name"],
                    a["status"],
                    a["requested_at"],
                    a["decided_by"],
                    a["decided_at"],
                    a["waited"],
                    a["comment"],
                ]
                for a in report["approvals"]
            ],
        ),
        "<h2>Steps</h2>",
        _table(
            ["step", "status", "attempts", "started", "finished", "seconds", "error"],
            [
                [
                    s["key"],
                    s["status"],
                    s["attempts"],
                    s["started_at"],
                    s["finished_at"],
                    s["duration"],
                    s["error"],
                ]
                for s in report["steps"]
            ],
        ),
        "<h2>DNS changes</h2>",
        _table(
            ["VM", "step", "status", "result"],
            [[d["vm"], d["kind"], d["status"], d["result"]] for d in report["dns_changes"]],
        ),
        "<h2>Follow-up runs</h2>",
        _table(
            ["run", "operation", "status", "requested by", "notes"],
            [
                [c["id"], c["operation"], c["status"], c["requested_by"], c["notes"]]
                for c in report["follow_ups"]
            ],
        ),
        "<h2>Audit trail</h2>",
        _table(
            ["at", "event", "actor", "message"],
            [[e["at"], e["event"], e["actor"], e["message"]] for e in report["events"]],
        ),
    ]
    return "\n".join(parts)


def html_document(report: dict[str, Any]) -> str:
    """A self-contained HTML page of the report (styles inlined; prints to PDF)."""
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Ferryman report: run {_e(report['run']['id'])}</title>"
        f'<style>{stylesheet()}</style></head><body class="report">'
        f"{html_body(report)}</body></html>\n"
    )


def write_html(report: dict[str, Any], path: str) -> None:
    """Write :func:`html_document` to ``path`` (a ConfigurationError says why it cannot)."""
    from pathlib import Path

    from plans.errors import ConfigurationError

    try:
        Path(path).write_text(html_document(report), encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(
            f"cannot write the report to {path}: {exc.strerror or exc}; choose a writable file"
        ) from None
