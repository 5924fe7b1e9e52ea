"""The run commands of ``ferryman``: run, runs ..., worker, flower, demo.

Configuration comes from ``FERRYMAN_*`` variables (:mod:`workflows.settings`). With the
default in-memory broker there is no separate worker to talk to, so commands that dispatch
work (``run``, ``runs approve|resume|cleanup|...``) start a worker inside the command and wait
until the run settles (finished, or waiting at a gate); with Redis they dispatch to the site
workers (``ferryman worker --site NAME``) and return at once unless ``--wait`` is given.
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from plans.errors import FerrymanError
from workflows.compiler import CompiledRun, RunOperation, StageKind
from workflows.settings import Settings
from workflows.statuses import TERMINAL_RUN, RunStatus
from workflows.store import Run, repository

SETTLED = [*TERMINAL_RUN, RunStatus.WAITING, RunStatus.COMPENSATING]
console = Console()


def _settings() -> Settings:
    return Settings.from_env()


def _embedded(settings: Settings) -> bool:
    return settings.broker_url.startswith("memory://")


@contextmanager
def _runtime(settings: Settings, sites: list[str]) -> Iterator[Any]:
    from workers.embedded import build_runtime, worker

    runtime = build_runtime(settings)
    try:
        if _embedded(settings):
            with worker(runtime, sites):
                yield runtime
        else:
            yield runtime
    finally:
        runtime.db.dispose()


def _sites_of(run: Run) -> list[str]:
    compiled = CompiledRun.from_json(run.compiled)
    return sorted({ref.site for ref in compiled.hosts.values()})


def _fail(exc: FerrymanError) -> None:
    console.print(f"[red]error:[/] {exc}")
    sys.exit(1)


def _follow(runtime: Any, run_id: str, wait: bool, timeout: float) -> Run:
    from workflows.progress import watch

    settings: Settings = runtime.engine.settings
    if wait or _embedded(settings):
        return watch(runtime.db, run_id, SETTLED, timeout=timeout, console=console)
    with runtime.db.session() as session:
        return repository.get_run(session, run_id=run_id)


def _exit_for(run: Run) -> None:
    console.print(f"run {run.id}: [bold]{run.status}[/]")
    if run.status == RunStatus.WAITING:
        console.print(f"waiting at a gate: ferryman runs approve {run.id} --by NAME --comment WHY")
    if run.status in (RunStatus.FAILED, RunStatus.CANCELLED):
        if run.error:
            console.print(f"[red]{run.error}[/]")
        sys.exit(1)


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
    """The compiled stages as a tree (``run --dry-run``)."""
    tree = Tree(f"{compiled.operation.value} of {compiled.plan} ({compiled.direction.value})")
    for stage in compiled.stages:
        if stage.kind is StageKind.GATE:
            assert stage.gate is not None
            tree.add(f"[yellow]{stage.index}. gate {stage.gate.name}[/]: {stage.gate.instructions}")
            continue
        branch = tree.add(f"{stage.index}. {stage.name} ({len(stage.units)} parallel)")
        for unit in stage.units:
            steps = " -> ".join(f"{s.kind.value}@{s.host}" for s in unit.steps)
            branch.add(f"{unit.vm or unit.key} [dim]{unit.queue}[/]: {steps}")
    return tree


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
@click.option("--by", "requested_by", default="cli", help="Who asks (recorded).")
@click.option("--idempotency-key", default=None, help="Start at most one run per key.")
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
    """Run a recovery plan: test, planned or unplanned failover (or failback)."""
    from plans import load_bundle
    from workflows.compiler import compile_run

    settings = _settings()
    try:
        bundle = load_bundle(list(files))
        options = _options(option_pairs)
        if dry_run:
            compiled = compile_run(
                bundle.fabric,
                plan_name,
                bundle.plan(plan_name),
                failover_type,
                direction,
                options,
                gate_timeout=settings.gate_timeout,
            )
            if as_json:
                click.echo(json.dumps(compiled.to_json(), indent=2))
            else:
                console.print(render_stages(compiled))
            return
        with _runtime(settings, list(bundle.fabric.sites)) as runtime:
            started = runtime.engine.start(
                bundle,
                plan_name,
                failover_type,
                direction,
                options=options,
                requested_by=requested_by,
                idempotency_key=idempotency_key,
            )
            console.print(f"run [bold]{started.id}[/] started ({failover_type}, {direction})")
            _exit_for(_follow(runtime, started.id, wait, timeout))
    except FerrymanError as exc:
        _fail(exc)


@click.group("runs")
def runs() -> None:
    """Inspect runs and act on them (approve, resume, cleanup, commit, ...)."""


@runs.command("list")
@click.option(
    "--status", "statuses", multiple=True, type=click.Choice([s.value for s in RunStatus])
)
@click.option("--limit", default=30)
@click.option("--json", "as_json", is_flag=True)
def list_runs(statuses: tuple[str, ...], limit: int, as_json: bool) -> None:
    """The most recent runs."""
    from workers.embedded import build_runtime

    runtime = build_runtime(_settings())
    runtime.engine.check_timeouts()
    with runtime.db.session() as session:
        rows = repository.list_runs(session, status=[RunStatus(s) for s in statuses], limit=limit)
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "id": r.id,
                        "plan": r.plan,
                        "operation": r.operation,
                        "direction": r.direction,
                        "status": r.status,
                        "parent": r.parent_id,
                        "created_at": r.created_at.isoformat(),
                    }
                    for r in rows
                ],
                indent=2,
            )
        )
        return
    table = Table("run", "plan", "operation", "direction", "status", "parent", "created (UTC)")
    for r in rows:
        table.add_row(
            r.id,
            r.plan,
            r.operation,
            r.direction,
            r.status,
            r.parent_id or "",
            f"{r.created_at:%Y-%m-%d %H:%M:%S}",
        )
    console.print(table)


@runs.command("show")
@click.argument("run_id")
def show(run_id: str) -> None:
    """A run's progress table and its open gate, if any."""
    from workers.embedded import build_runtime
    from workflows.progress import snapshot

    runtime = build_runtime(_settings())
    try:
        runtime.engine.check_timeouts()
        with runtime.db.session() as session:
            found = repository.get_run(session, run_id=run_id)
        console.print(snapshot(runtime.db, found.id))
        if found.error:
            console.print(f"[red]{found.error}[/]")
    except FerrymanError as exc:
        _fail(exc)


@runs.command("report")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
def report_cmd(run_id: str, as_json: bool) -> None:
    """Everything about a run: snapshot hash, steps, gates, timeline."""
    from workers.embedded import build_runtime
    from workflows import report

    runtime = build_runtime(_settings())
    try:
        with runtime.db.session() as session:
            data = report.build(session, run_id)
    except FerrymanError as exc:
        _fail(exc)
        return
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        console.print(report.render(data))


def _act(run_id: str, action: Callable[[Any, Run], Run | None], wait: bool, timeout: float) -> None:
    """Load the run, do ``action`` with a runtime able to execute what it dispatches."""
    from workers.embedded import build_runtime

    settings = _settings()
    probe = build_runtime(settings)
    try:
        with probe.db.session() as session:
            target = repository.get_run(session, run_id=run_id)
    except FerrymanError as exc:
        _fail(exc)
        return
    finally:
        probe.db.dispose()
    with _runtime(settings, _sites_of(target)) as runtime:
        try:
            result = action(runtime.engine, target)
        except FerrymanError as exc:
            _fail(exc)
            return
        followed = result or target
        if followed.id != target.id:
            console.print(f"run [bold]{followed.id}[/] started (follows {target.id})")
        _exit_for(_follow(runtime, followed.id, wait, timeout))


_wait = click.option("--wait/--no-wait", default=False, help="Follow until the run settles.")
_timeout = click.option("--timeout", default=3600.0, help="Seconds to follow.")
_by = click.option("--by", required=True, help="Operator name (recorded).")


@runs.command("approve")
@click.argument("run_id")
@_by
@click.option("--comment", default="", help="Why (recorded).")
@_wait
@_timeout
def approve(run_id: str, by: str, comment: str, wait: bool, timeout: float) -> None:
    """Approve the gate a run waits at; it continues."""
    _act(run_id, lambda e, r: e.approve(r.id, by=by, comment=comment), wait, timeout)


@runs.command("reject")
@click.argument("run_id")
@_by
@click.option("--comment", default="", help="Why (recorded).")
def reject(run_id: str, by: str, comment: str) -> None:
    """Reject the gate a run waits at; it fails (a test run is then compensated)."""
    _act(run_id, lambda e, r: e.reject(r.id, by=by, comment=comment), False, 60)


@runs.command("resume")
@click.argument("run_id")
@click.option("--by", default="cli")
@_wait
@_timeout
def resume(run_id: str, by: str, wait: bool, timeout: float) -> None:
    """Re-run a failed run's failed steps and continue."""
    _act(run_id, lambda e, r: e.resume(r.id, by=by), wait, timeout)


@runs.command("cancel")
@click.argument("run_id")
@click.option("--by", default="cli")
@click.option("--reason", default="")
def cancel(run_id: str, by: str, reason: str) -> None:
    """Stop a run (running steps finish; nothing new starts)."""
    _act(run_id, lambda e, r: e.cancel(r.id, by=by, reason=reason), False, 60)


@runs.command("compensate")
@click.argument("run_id")
@click.option("--by", default="cli")
@_wait
@_timeout
def compensate(run_id: str, by: str, wait: bool, timeout: float) -> None:
    """Undo a run's completed steps, newest first."""
    from workflows.compensation import compensate as start

    _act(run_id, lambda e, r: start(e, r.id, by=by), wait, timeout)


def _followup(name: str, operation: RunOperation, doc: str) -> click.Command:
    @click.argument("run_id")
    @click.option("--by", default="cli")
    @click.option("--notes", default="", help="Recorded with the follow-up run.")
    @_wait
    @_timeout
    def command(run_id: str, by: str, notes: str, wait: bool, timeout: float) -> None:
        from workflows.followups import start_followup

        _act(
            run_id,
            lambda e, r: start_followup(e, r.id, operation, by=by, notes=notes),
            wait,
            timeout,
        )

    command.__doc__ = doc
    return runs.command(name)(command)


_followup("cleanup", RunOperation.CLEANUP, "Clean up a test failover (delete test VMs, DNS).")
_followup("commit", RunOperation.COMMIT, "Commit an unplanned failover (Complete-VMFailover).")
_followup(
    "cancel-failover",
    RunOperation.CANCEL_FAILOVER,
    "Cancel an uncommitted unplanned failover (Stop-VMFailover).",
)
_followup(
    "reverse", RunOperation.REVERSE, "Reverse replication after a committed unplanned failover."
)


@click.command("worker")
@click.option("--site", "sites", multiple=True, required=True, help="Site whose queue to take.")
@click.option("--concurrency", default=None, type=int, help="Threads (default from settings).")
@click.option("--engine/--no-engine", default=True, help="Also take the engine queue.")
@click.option("--loglevel", default="INFO")
def worker_cmd(
    sites: tuple[str, ...], concurrency: int | None, engine: bool, loglevel: str
) -> None:
    """A Celery worker (threads pool) for sites' queues and, by default, the engine queue."""
    from workers.app import queues_for
    from workers.embedded import build_runtime
    from workflows.recovery import Watch

    settings = _settings()
    if _embedded(settings):
        console.print(
            "[red]error:[/] the in-memory broker cannot reach a separate worker; set "
            "FERRYMAN_BROKER_URL (e.g. redis://127.0.0.1:6379/0)"
        )
        sys.exit(2)
    from celery.signals import worker_ready

    from workers.app import never_join_results

    threads = concurrency or settings.worker_concurrency
    runtime = build_runtime(settings, concurrency=threads)
    worker_ready.connect(lambda **_: never_join_results(), weak=False)
    watch = Watch(runtime.engine).start()
    try:
        runtime.app.Worker(
            queues=queues_for(sites, engine=engine),
            pool="threads",
            concurrency=threads,
            loglevel=loglevel,
            hostname=f"ferryman-{'-'.join(sites)}@{socket.gethostname()}",
        ).start()
    finally:
        watch.stop()


@click.command("flower", context_settings={"ignore_unknown_options": True})
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
def flower(flower_args: tuple[str, ...]) -> None:
    """Flower (Celery's web monitor) on the configured broker; extra arguments go to it.

    The same as ``celery -b $FERRYMAN_BROKER_URL flower``; binds 127.0.0.1:5555 by default.
    """
    from workers.app import create_app

    app = create_app(_settings())
    args = list(flower_args) or ["--address=127.0.0.1", "--port=5555"]
    app.start(["flower", *args])


@click.command("demo")
@click.option("--no-live", is_flag=True, help="Print tables instead of a live view.")
@click.option("--timeout", default=120.0, help="Seconds to wait for each run.")
def demo(no_live: bool, timeout: float) -> None:
    """The example plan's test failover and cleanup against the lab, all in this process."""
    from workflows.demo import run_demo

    result = run_demo(console=console, live=not no_live, timeout=timeout)
    sys.exit(0 if result.ok else 1)


@click.command("triggers")
@click.option("--poll", default=1.0, help="Seconds between checks for a stop request.")
def triggers(poll: float) -> None:
    """Start runs from JSON messages on the ferryman.runs queue (until interrupted).

    Plans come from FERRYMAN_PLAN_PATHS; refused messages go to ferryman.runs.dead with the
    reason.
    """
    from kombu import Connection

    from workers.app import transport_options
    from workers.embedded import build_runtime
    from workflows.triggers import TriggerConsumer, bundle_loader

    settings = _settings()
    if _embedded(settings):
        console.print("[red]error:[/] triggers need a shared broker; set FERRYMAN_BROKER_URL")
        sys.exit(2)
    runtime = build_runtime(settings)
    with Connection(settings.broker_url, transport_options=transport_options(settings)) as conn:
        consumer = TriggerConsumer(runtime.engine, conn, bundle_loader(settings.plan_paths))
        console.print(f"consuming ferryman.runs on {conn.as_uri()}; Ctrl-C stops")
        try:
            consumer.run(poll=poll)
        except KeyboardInterrupt:
            consumer.stop()
