"""``ferryman run`` and ``ferryman runs ...``: start runs, act on them, list and follow them.

Configuration comes from ``FERRYMAN_*`` variables (:mod:`workflows.settings`). With the default
in-memory broker there is no separate worker, so a command that sends work runs a worker
inside itself and waits until the run settles (finished, or waiting at a gate); with Redis or
RabbitMQ it sends the work to the site workers (``ferryman worker --site NAME``) and returns at
once unless ``--wait`` is given. If the broker cannot be reached the change is still recorded:
the command says so and exits 3, and the workers send it when the broker is back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import click
from rich.table import Column, Table
from rich.text import Text
from rich.tree import Tree

from workflows.cli.output import Exit, console, notice, say, stop, styled
from workflows.compiler import CompiledRun, StageKind
from workflows.operations import FOLLOW_UP_COMMANDS, Operations, Outcome
from workflows.options import validate_options
from workflows.progress import ProgressLines, describe_progress, running_progress
from workflows.runtime import BrokerUnavailable, Runtime, build_runtime, for_command, open_store
from workflows.settings import Settings
from workflows.statuses import TERMINAL_RUN, RunStatus
from workflows.store import Run, repository
from workflows.store.views import run_summary
from workflows.tokens import local_actor
from workflows.waiting import poll

SETTLED = [*TERMINAL_RUN, RunStatus.WAITING, RunStatus.COMPENSATING]
UNSUCCESSFUL = {
    RunStatus.FAILED,
    RunStatus.COMPENSATING,
    RunStatus.COMPENSATED,
    RunStatus.CANCELLED,
}
STATUS_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
    "compensated": "magenta",
    "compensating": "magenta",
    "waiting": "yellow",
    "running": "yellow",
}


def settings(*, store: bool = True) -> Settings:
    """The validated settings; ``store``: the command needs FERRYMAN_DATABASE_URL."""
    loaded = Settings.from_env(require_database=store)
    for line in loaded.notices:
        notice(line)
    return loaded


def sites_of(run: Run) -> list[str]:
    """The sites whose queues a run's steps go to."""
    compiled = CompiledRun.from_json(run.compiled)
    return sorted({ref.site for ref in compiled.hosts.values()})


def _as_local(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str:
    # used locally, the CLI acts as the named local administrator; --by only says for whom
    return local_actor(value)


def _options(pairs: tuple[str, ...]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r}: write KEY=VALUE", param_hint="--option")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def render_stages(compiled: CompiledRun) -> Tree:
    """The compiled stages as a tree (``run --dry-run``); names print as written."""
    tree = Tree(Text(f"{compiled.operation.value} of {compiled.plan} ({compiled.direction.value})"))
    for stage in compiled.stages:
        if stage.kind is StageKind.GATE:
            assert stage.gate is not None
            tree.add(
                styled(
                    (f"{stage.index}. gate {stage.gate.name}", "yellow"),
                    ": ",
                    stage.gate.instructions,
                )
            )
            continue
        branch = tree.add(Text(f"{stage.index}. {stage.name} ({len(stage.units)} parallel)"))
        for unit in stage.units:
            steps = " -> ".join(f"{s.kind.value}@{s.host}" for s in unit.steps)
            branch.add(styled(unit.vm or unit.key, " ", (unit.queue, "dim"), f": {steps}"))
    return tree


def status_text(status: str) -> Text:
    """A run status, coloured."""
    return Text(str(status), style=STATUS_STYLE.get(str(status), "bold"))


# -- following a run


def _follow(runtime: Runtime, run_id: str, wait: bool, timeout: float) -> Run:
    from workflows.progress import watch

    if wait or runtime.settings.embedded:
        return watch(runtime.db, run_id, SETTLED, timeout=timeout, console=console)
    with runtime.db.session() as session:
        return repository.get_run(session, run_id=run_id)


def _finish(run: Run, asked: frozenset[RunStatus] = frozenset()) -> None:
    """Print where the run stands and leave with the status a script can read; ``asked``:
    statuses the operator's own command leads to (a cancel cancels), which are not failures."""
    say(f"run {run.id}: ", status_text(run.status))
    if run.status == RunStatus.WAITING:
        say(f"waiting at a gate: ferryman runs approve {run.id} --by NAME --comment WHY")
    if RunStatus(run.status) in UNSUCCESSFUL - asked:
        if run.error:
            say((run.error, "red"))
        stop(Exit.FAILED)


ASKED_FOR = {
    "cancel": frozenset({RunStatus.CANCELLED}),
    "reject": frozenset(UNSUCCESSFUL),
}


def _report(outcome: Outcome, runtime: Runtime, wait: bool, timeout: float) -> None:
    run = outcome.run
    if not outcome.dispatched:
        say(
            f"run {run.id} is recorded but the broker cannot be reached ({outcome.detail}); "
            "the workers send it when the broker is back (within FERRYMAN_DISPATCH_GRACE, "
            f"{runtime.settings.dispatch_grace:g} s)"
        )
        stop(Exit.NOT_DISPATCHED)
    _finish(_follow(runtime, run.id, wait, timeout), ASKED_FOR.get(outcome.action, frozenset()))


@click.command("run")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--plan", "plan_name", required=True, help="Recovery plan name.")
@click.option(
    "--type", "failover_type", required=True, type=click.Choice(["test", "planned", "unplanned"])
)
@click.option("--direction", default="failover", type=click.Choice(["failover", "failback"]))
@click.option(
    "--option",
    "option_pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="recovery_point=NAME, try_shutdown=false, wait_ip_timeout=300",
)
@click.option("--by", "requested_by", default=None, callback=_as_local, help="For whom (recorded).")
@click.option(
    "--idempotency-key",
    default=None,
    help="A retried command with the same key returns the same run instead of starting another.",
)
@click.option("--wait/--no-wait", default=False, help="Follow the run until it settles.")
@click.option("--dry-run", is_flag=True, help="Print the compiled stages and exit.")
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: JSON instead of a tree.")
@click.option("--timeout", default=3600.0, help="Seconds to follow the run.")
def run(
    files: tuple[str, ...],
    plan_name: str,
    failover_type: str,
    direction: str,
    option_pairs: tuple[str, ...],
    requested_by: str,
    idempotency_key: str | None,
    wait: bool,
    dry_run: bool,
    as_json: bool,
    timeout: float,
) -> None:
    """Run a recovery plan: test, planned or unplanned failover (or failback).

    Prints the run id as soon as the run is recorded. Exit status: 0 done (succeeded, or
    waiting at a gate, or sent to the workers); 1 refused or the run failed, was compensated
    or cancelled; 3 recorded but the broker was unreachable (the workers send it later).
    """
    from plans import load_bundle
    from workflows.compiler import compile_run

    bundle = load_bundle(list(files))
    options = validate_options(failover_type, _options(option_pairs))  # typos exit 1
    if dry_run:
        loaded = settings(store=False)
        compiled = compile_run(
            bundle.fabric,
            plan_name,
            bundle.plan(plan_name),
            failover_type,
            direction,
            options,
            gate_timeout=loaded.gate_timeout,
        )
        if as_json:
            click.echo(json.dumps(compiled.to_json(), indent=2))
        else:
            console.print(render_stages(compiled))
        return
    with for_command(settings(), list(bundle.fabric.sites)) as runtime:
        outcome = Operations(runtime.engine).start(
            bundle,
            plan_name,
            failover_type,
            direction,
            options=options,
            by=requested_by,
            idempotency_key=idempotency_key,
            on_recorded=lambda run_id: say(f"run {run_id} started ({failover_type}, {direction})"),
        )
        if outcome.replayed:
            say(
                f"run {outcome.run.id} was already started with this idempotency key "
                f"({outcome.run.status}); nothing new was started"
            )
        _report(outcome, runtime, wait, timeout)


@click.group("runs")
def runs() -> None:
    """Inspect runs and act on them (approve, resume, cleanup, commit, ...)."""


@runs.command("list")
@click.option(
    "--status", "statuses", multiple=True, type=click.Choice([s.value for s in RunStatus])
)
@click.option("--limit", default=30)
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
def list_runs(statuses: tuple[str, ...], limit: int, as_json: bool) -> None:
    """The most recent runs."""
    with _store() as (_loaded, db), db.session() as session:
        rows = repository.list_runs(session, status=[RunStatus(s) for s in statuses], limit=limit)
    if as_json:
        click.echo(json.dumps([run_summary(r) for r in rows], indent=2))
        return
    table = Table(
        # run ids wrap, never get cut: a script or an operator copies them whole
        Column("run", overflow="fold", min_width=12, no_wrap=False),
        Column("plan", overflow="fold"),
        Column("operation", overflow="fold"),
        Column("direction", overflow="fold"),
        Column("status", overflow="fold"),
        Column("parent", overflow="fold", min_width=12),
        Column("created (UTC)", overflow="fold"),
    )
    for r in rows:
        table.add_row(
            r.id,
            r.plan,
            r.operation,
            r.direction,
            status_text(r.status),
            r.parent_id or "",
            f"{r.created_at:%Y-%m-%d %H:%M:%S}",
        )
    console.print(table)


@contextmanager
def _store() -> Iterator[tuple[Settings, Any]]:
    """The store, after applying the policy of overdue gates (reading runs is one of the
    places a gate times out, so it does even where no worker runs)."""
    loaded = settings()
    runtime = build_runtime(loaded, client=True)
    try:
        # a timeout is recorded even if the broker is down: the workers send what follows it
        with suppress(BrokerUnavailable):
            runtime.engine.check_timeouts()
        yield loaded, runtime.db
    finally:
        runtime.db.dispose()


@runs.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
def show(run_id: str, as_json: bool) -> None:
    """A run's progress table and its open gate, if any."""
    from workflows.progress import snapshot, step_progress

    with _store() as (_loaded, db):
        with db.session() as session:
            found = repository.get_run(session, run_id=run_id)
            steps = repository.steps_of(session, run_id=found.id)
        if as_json:
            data = run_summary(found)
            data["steps"] = [
                {
                    "key": s.key,
                    "vm": s.vm,
                    "kind": s.kind,
                    "status": s.status,
                    "error": s.error,
                    "progress": step_progress(s),
                }
                for s in steps
            ]
            click.echo(json.dumps(data, indent=2))
            return
        console.print(snapshot(db, found.id))
        if found.error:
            say((found.error, "red"))


@runs.command("report")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the report as a self-contained HTML page (prints to PDF).",
)
def report_cmd(run_id: str, as_json: bool, html_file: str | None) -> None:
    """Everything about a run: snapshot hash, steps, gates, timeline, RTO against the plan."""
    from workflows import report

    with _store() as (_loaded, db), db.session() as session:
        data = report.build(session, run_id)
    if html_file:
        report.write_html(data, html_file)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        console.print(report.render(data))


@runs.command("follow")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event.")
@click.option("--timeout", default=24 * 3600.0, help="Seconds to follow at most.")
@click.option("--interval", default=0.5, help="Seconds between looks at the store.")
def follow(run_id: str, as_json: bool, timeout: float, interval: float) -> None:
    """Follow a run started anywhere: print its events as they happen, until it finishes.

    Exit status: 0 when it succeeded; 1 when it failed, was compensated or cancelled.
    """
    with _store() as (_loaded, db):
        with db.session() as session:
            target = repository.get_run(session, run_id=run_id, with_inputs=False)

        def look() -> tuple[Run, list[Any], dict[str, dict[str, Any]]]:
            with db.session() as session:
                run = repository.get_run(session, run_id=target.id, with_inputs=False)
                return (
                    run,
                    repository.events_of(session, run_id=target.id),
                    running_progress(session, run),
                )

        seen = 0
        current = target
        moved = ProgressLines()  # a long step's percent and bytes, as its worker records them
        for current, events, figures in poll(look, timeout=timeout, interval=interval):
            for event in events:
                if event.id is not None and event.id <= seen:
                    continue
                seen = event.id or seen
                _print_event(target.id, event, as_json)
            for key, progress in moved.changed(figures):
                _print_progress(target.id, key, progress, as_json)
            if RunStatus(current.status) in TERMINAL_RUN:
                break
        else:
            say(f"run {current.id} is still {current.status} after {timeout:g} s")
            stop(Exit.FAILED)
    if as_json:
        click.echo(
            json.dumps({"run": current.id, "status": current.status, "error": current.error})
        )
        stop(Exit.FAILED if RunStatus(current.status) in UNSUCCESSFUL else Exit.DONE)
    _finish(current)


def _print_progress(run_id: str, key: str, figures: dict[str, Any], as_json: bool) -> None:
    """A running step's progress: a JSON object (event ``step_progress``), or a line."""
    if as_json:
        line = {"run": run_id, "event": "step_progress", "step": key, "progress": figures}
        click.echo(json.dumps(line))
    else:
        say(("progress", "bold"), f" {key}: {describe_progress(figures)}")


def _print_event(run_id: str, event: Any, as_json: bool) -> None:
    """One event of a followed run: a JSON object, or a line with its time and actor."""
    at = getattr(event, "at", None)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "run": run_id,
                    "at": at.isoformat() if at else None,
                    "event": event.event,
                    "actor": event.actor,
                    "message": event.message,
                }
            )
        )
    else:
        stamp = f"{at:%H:%M:%S}" if at else ""
        who = f" [{event.actor}]" if event.actor else ""
        say((stamp, "dim"), " ", (event.event, "bold"), who, " ", event.message)


def _act(
    run_id: str, action: Callable[[Operations, Run], Outcome], wait: bool, timeout: float
) -> None:
    """Do ``action`` on a run with a runtime able to execute what it sends."""
    loaded = settings()
    db = open_store(loaded)
    try:
        with db.session() as session:
            target = repository.get_run(session, run_id=run_id)
    finally:
        db.dispose()
    with for_command(loaded, sites_of(target)) as runtime:
        outcome = action(Operations(runtime.engine), target)
        if outcome.replayed:
            say(
                f"run {outcome.run.id}: already done with this idempotency key "
                f"({outcome.action}); nothing new was done"
            )
        elif outcome.target is not None and outcome.run.id != outcome.target.id:
            say(f"run {outcome.run.id} started ({outcome.action} of {outcome.target.id})")
        else:
            say(
                f"run {outcome.run.id}: {outcome.action} recorded"
                + (f" ({outcome.detail})" if outcome.detail and outcome.dispatched else "")
            )
        _report(outcome, runtime, wait, timeout)


_wait = click.option("--wait/--no-wait", default=False, help="Follow until the run settles.")
_timeout = click.option("--timeout", default=3600.0, help="Seconds to follow.")
_by = click.option("--by", default=None, callback=_as_local, help="For whom (recorded).")
_key = click.option(
    "--idempotency-key",
    default=None,
    help="A retried command with the same key returns the same decision.",
)


@runs.command("approve")
@click.argument("run_id")
@_by
@click.option("--comment", default="", help="Why (recorded).")
@_key
@_wait
@_timeout
def approve(
    run_id: str, by: str, comment: str, idempotency_key: str | None, wait: bool, timeout: float
) -> None:
    """Approve the gate a run waits at; it continues."""
    _act(
        run_id,
        lambda ops, r: ops.approve(r.id, by=by, comment=comment, idempotency_key=idempotency_key),
        wait,
        timeout,
    )


@runs.command("reject")
@click.argument("run_id")
@_by
@click.option("--comment", default="", help="Why (recorded).")
@_key
def reject(run_id: str, by: str, comment: str, idempotency_key: str | None) -> None:
    """Reject the gate a run waits at; it fails (a test run is then compensated)."""
    _act(
        run_id,
        lambda ops, r: ops.reject(r.id, by=by, comment=comment, idempotency_key=idempotency_key),
        False,
        60,
    )


@runs.command("resume")
@click.argument("run_id")
@click.option("--by", default=None, callback=_as_local)
@_wait
@_timeout
def resume(run_id: str, by: str, wait: bool, timeout: float) -> None:
    """Re-run a failed run's failed steps and continue."""
    _act(run_id, lambda ops, r: ops.resume(r.id, by=by), wait, timeout)


@runs.command("skip")
@click.argument("run_id")
@click.option("--by", default=None, callback=_as_local)
@_wait
@_timeout
def skip(run_id: str, by: str, wait: bool, timeout: float) -> None:
    """Skip a failed run's failed steps (you checked their effect) and continue."""
    _act(run_id, lambda ops, r: ops.skip(r.id, by=by), wait, timeout)


@runs.command("cancel")
@click.argument("run_id")
@click.option("--by", default=None, callback=_as_local)
@click.option("--reason", default="")
def cancel(run_id: str, by: str, reason: str) -> None:
    """Stop a run (running steps finish; nothing new starts)."""
    _act(run_id, lambda ops, r: ops.cancel(r.id, by=by, reason=reason), False, 60)


@runs.command("compensate")
@click.argument("run_id")
@click.option("--by", default=None, callback=_as_local)
@_wait
@_timeout
def compensate(run_id: str, by: str, wait: bool, timeout: float) -> None:
    """Undo a run's completed steps, newest first."""
    _act(run_id, lambda ops, r: ops.compensate(r.id, by=by), wait, timeout)


def _followup(name: str, doc: str) -> click.Command:
    operation = FOLLOW_UP_COMMANDS[name]

    @click.argument("run_id")
    @click.option("--by", default=None, callback=_as_local)
    @click.option("--notes", default="", help="Recorded with the follow-up run.")
    @_wait
    @_timeout
    def command(run_id: str, by: str, notes: str, wait: bool, timeout: float) -> None:
        _act(
            run_id,
            lambda ops, r: ops.follow_up(r.id, operation, by=by, notes=notes),
            wait,
            timeout,
        )

    command.__doc__ = doc
    return runs.command(name)(command)


_followup("cleanup", "Clean up a test failover (delete test VMs, DNS).")
_followup("commit", "Commit an unplanned failover (Complete-VMFailover).")
_followup("cancel-failover", "Cancel an uncommitted unplanned failover (Stop-VMFailover).")
_followup("reverse", "Reverse replication after a committed unplanned failover.")
