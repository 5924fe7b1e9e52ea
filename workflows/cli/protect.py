"""``ferryman protect status|apply|disable FABRIC``: protection as desired state.

``status`` reads what replicates from the primary hosts of every pairing and compares it with
the fabric (exit 0 in sync, 1 with drift or a recovery point objective at risk). ``apply`` and
``disable`` start a protection run of the engine, followed like ``ferryman run``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from workflows.cli.output import Exit, console, say, stop, styled
from workflows.cli.runs import _as_local, _report, render_stages, settings
from workflows.compiler import CompiledRun
from workflows.operations import Outcome
from workflows.protection import (
    Action,
    VmReport,
    compile_disable,
    compile_protection,
    read_protection,
)
from workflows.runtime import BrokerUnavailable, for_command

ACTION_STYLE = {
    Action.NONE: "green",
    Action.ENABLE: "yellow",
    Action.RECONCILE: "yellow",
    Action.PRUNE: "magenta",
    Action.WAIT: "cyan",
    Action.MISSING: "red",
    Action.MISPLACED: "red",
    Action.REVERSED: "cyan",
}


@click.group("protect")
def protect() -> None:
    """Protection as desired state: compare the fabric with the hosts, apply it, disable it."""


def _load(files: tuple[str, ...]) -> Any:
    from plans import load_bundle

    return load_bundle(list(files))


def read_reports(bundle: Any, loaded: Any) -> list[VmReport]:
    """Read the hosts and compare them with the fabric (the hosts' reads only, no run)."""
    from workflows.compiler import _all_hosts
    from workflows.runtime import executor_for, protection_reader

    fabric = bundle.fabric
    hosts = _all_hosts(fabric, list(fabric.sites))
    ctx = executor_for(loaded).context("protect-status", "protect", "failover", hosts, {})
    return read_protection(fabric, protection_reader(ctx), datetime.now(UTC))


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def _settings_text(report: VmReport, side: str) -> str:
    """Settings in a few characters: ``300s 4pts vss2h krb:8083`` (``nocomp`` when off)."""
    holder = report.desired if side == "desired" else report.observed
    if holder is None:
        return "-"
    s = holder.settings
    parts = [f"{s.frequency}s", f"{s.recovery_history}pts"]
    if s.vss_hours:
        parts.append(f"vss{s.vss_hours}h")
    if not s.compression:
        parts.append("nocomp")
    parts.append(f"{'krb' if s.authentication == 'Kerberos' else 'cert'}:{s.port}")
    return " ".join(parts)


def _table(reports: list[VmReport]) -> Table:
    table = Table(
        "VM",
        "pairing",
        "desired",
        "actual",
        "drift",
        "state",
        "health",
        "last replication",
        "lag",
        "action",
    )
    for r in reports:
        obs = r.observed
        drift = ", ".join(d.setting for d in r.differences)
        lag = "-" if r.lag_seconds is None else f"{r.lag_seconds:.0f} s"
        if r.rpo_at_risk:
            lag += " RPO at risk"
        state = obs.state if obs else "Disabled"
        if r.resync_pending:
            state += " (resync pending)"
        last = obs.last_replication if obs else None
        table.add_row(
            r.vm,
            r.pairing,
            _settings_text(r, "desired"),
            _settings_text(r, "actual"),
            drift or "-",
            state,
            obs.health if obs else "-",
            _cell(last.strftime("%m-%d %H:%M:%S") if last else None),
            lag,
            Text(r.action.value, style=ACTION_STYLE[r.action]),
        )
    return table


@protect.command("status")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
def status(files: tuple[str, ...], as_json: bool) -> None:
    """Desired against actual protection of every VM the fabric's pairings name, and of every
    VM replicating from their primary sites. Exit 0 in sync, 1 with drift or risk."""
    loaded = settings(store=False)
    reports = read_reports(_load(files), loaded)
    if as_json:
        click.echo(json.dumps([r.to_json() for r in reports], indent=2))
    else:
        console.print(_table(reports))
    if not all(r.healthy for r in reports):
        stop(Exit.FAILED)


def _start(files: tuple[str, ...], compiled: CompiledRun, by: str, wait: bool, what: str) -> None:
    bundle = _load(files)
    with for_command(settings(), sorted({h.site for h in compiled.hosts.values()})) as runtime:
        try:
            run = runtime.engine.start_compiled(bundle, compiled, requested_by=by, message=what)
            outcome = Outcome("start", run)
        except BrokerUnavailable as exc:
            with runtime.db.session() as session:
                from workflows.store import repository

                run = repository.get_run(session, run_id=exc.run_id)
            outcome = Outcome("start", run, dispatched=False, detail=exc.reason)
        say(f"run {run.id} started ({what})")
        _report(outcome, runtime, wait, timeout=24 * 3600.0)


@protect.command("apply")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--vm", "vms", multiple=True, help="Only this VM (repeatable).")
@click.option("--dry-run", is_flag=True, help="Show what would change and exit.")
@click.option("--wait/--no-wait", default=False, help="Follow the run until it settles.")
@click.option("--prune", is_flag=True, help="Disable protection of VMs the fabric no longer lists.")
@click.option(
    "--by", "requested_by", default=None, callback=_as_local, help="For whom (recorded)."
)
def apply(
    files: tuple[str, ...],
    vms: tuple[str, ...],
    dry_run: bool,
    wait: bool,
    prune: bool,
    requested_by: str,
) -> None:
    """Bring the hosts to the fabric: enable protection of listed VMs that do not replicate
    (Enable-VMReplication, then initial replication by the profile's method), set the
    profile's settings where they drifted, and with --prune disable unlisted VMs."""
    loaded = settings(store=False)
    bundle = _load(files)
    reports = read_reports(bundle, loaded)
    compiled = compile_protection(bundle.fabric, reports, vms=vms, prune=prune)
    chosen = [r for r in reports if not vms or r.vm in vms]
    for r in chosen:
        if r.action is Action.NONE or (r.action is Action.PRUNE and not prune):
            continue
        detail = ", ".join(f"{d.setting} {d.actual} -> {d.desired}" for d in r.differences)
        say(styled((r.action.value, "bold"), f" {r.vm}", f": {detail}" if detail else ""))
    blocked = [r for r in chosen if r.action in _BLOCKED]
    for r in blocked:
        say((f"cannot apply {r.vm}: {_BLOCKED[r.action].format(r=r)}", "red"))
    if compiled is None:
        if not blocked:
            say("nothing to change: the hosts match the fabric")
        else:
            stop(Exit.FAILED)
        return
    if dry_run:
        console.print(render_stages(compiled))
        return
    count = len(compiled.stages[0].units)
    _start(files, compiled, requested_by, wait, f"protect {count} VM(s)")
    if blocked:
        stop(Exit.FAILED)  # the rest was applied; these still differ from the fabric


# What apply cannot change by itself, and what the operator does about it.
_BLOCKED = {
    Action.MISSING: "no such VM on {r.desired.primary_host}; fix the fabric or create the VM",
    Action.MISPLACED: (
        "it replicates to {r.observed.replica_host}, not {r.desired.replica_host}; disable it "
        "(ferryman protect disable FABRIC --vm {r.vm}) and apply again"
    ),
}


@protect.command("disable")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--vm", "vms", multiple=True, required=True, help="The VM (repeatable).")
@click.option("--delete-replica", is_flag=True, help="Also delete the replica VM.")
@click.option("--wait/--no-wait", default=False, help="Follow the run until it settles.")
@click.option(
    "--by", "requested_by", default=None, callback=_as_local, help="For whom (recorded)."
)
def disable(
    files: tuple[str, ...],
    vms: tuple[str, ...],
    delete_replica: bool,
    wait: bool,
    requested_by: str,
) -> None:
    """Remove-VMReplication on both ends of each VM; with --delete-replica (or the pairing's
    delete_replica_on_disable) the replica VM is deleted too."""
    loaded = settings(store=False)
    bundle = _load(files)
    reports = read_reports(bundle, loaded)
    compiled = compile_disable(bundle.fabric, reports, vms, delete_replica=delete_replica)
    _start(files, compiled, requested_by, wait, f"unprotect {', '.join(vms)}")
