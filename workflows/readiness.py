"""``ferryman plan check``: is a plan ready to run that failover type against the live sites?

Checks, each reported as pass / warn / fail with what to do: every VM is protected by the
plan's pairing and its network is mapped (static); on the live sites, the VM exists where the
run will act and its replication state and health allow the type, and for a test failover no
earlier test's VM is left there; no other run holds the VMs; a worker consumes each site's
queue; every RFC 2136 DNS zone the run will update answers an SOA query. Only what the chosen
type and direction use is checked (a test failover updates its test zones, not production's),
and a state that needs another command first says which.
"""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import click

from plans.errors import FerrymanError
from plans.model import Fabric, RecoveryPlan
from workflows.compiler import CompiledRun, compile_run
from workflows.inputs import UpdateDnsInput, ZoneTarget
from workflows.protection import RPO_RISK_CYCLES
from workflows.steps import StepKind


class Verdict(enum.StrEnum):
    """The outcome of one check."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    """One line of the readiness table."""

    subject: str
    check: str
    verdict: Verdict
    detail: str = ""


# replication states that allow each type on the replica (workflows/ARCHITECTURE.md state table)
ALLOWED = {
    "test": {"Replicating"},
    "planned": {"Replicating"},
    "unplanned": {"Replicating", "Resynchronizing", "Suspended"},
}


def static_checks(fabric: Fabric, plan: RecoveryPlan) -> list[Check]:
    """Checks that need no live site."""
    checks: list[Check] = []
    pairing = fabric.pairings.get(plan.pairing)
    if pairing is None:
        return [Check(plan.pairing, "pairing exists", Verdict.FAIL, "add it to the fabric")]
    for vm in plan.vm_names():
        protected = pairing.vms.get(vm)
        if protected is None:
            checks.append(
                Check(vm, "protected", Verdict.FAIL, f"add {vm} to pairing {plan.pairing}")
            )
            continue
        for network in protected.networks:
            if fabric.mapping_for(pairing.primary.site, network) is None:
                checks.append(
                    Check(
                        vm,
                        "network mapped",
                        Verdict.WARN,
                        f"{network} is unmapped: its adapter stays disconnected",
                    )
                )
            else:
                checks.append(Check(vm, "network mapped", Verdict.PASS, network))
    return checks


def replication_checks(
    compiled: CompiledRun,
    failover_type: str,
    context: Callable[[], Any],
    holders: Mapping[str, str] | None = None,
) -> list[Check]:
    """Read each VM's replication on the host the run will fail over on.

    ``holders``: VM -> the run holding it, named in the advice for a state that run left.
    """
    holders = holders or {}
    checks: list[Check] = []
    ctx = context()
    targets = {
        spec.vm: spec.host
        for _stage, _unit, spec in compiled.steps()
        if spec.kind in (StepKind.FAILOVER, StepKind.TEST_FAILOVER) and spec.vm and spec.host
    }
    for vm, host in targets.items():
        try:
            info = ctx.hyperv(host).get_replication(vm)
        except FerrymanError as exc:
            checks.append(Check(vm, f"replica on {host}", Verdict.FAIL, str(exc)))
            continue
        state, health = str(info.state.value), str(info.health.value)
        detail = f"{state}, health {health}"
        mode = str(getattr(getattr(info, "mode", None), "value", "Replica"))
        if mode == "Primary":
            # the VM runs here: replication goes the other way (a failover was committed and
            # reversed, or a planned failover reversed it), so this direction has no replica
            other = "failback" if compiled.direction.value == "failover" else "failover"
            checks.append(
                Check(
                    vm,
                    f"replication on {host}",
                    Verdict.FAIL,
                    f"{detail}, but {vm} is the primary on {host}: replication runs from here "
                    f"now, so the next failover of it is `--direction {other}`",
                )
            )
        elif state not in ALLOWED[failover_type]:
            checks.append(
                Check(
                    vm,
                    f"replication on {host}",
                    Verdict.FAIL,
                    f"{detail}: a {failover_type} failover needs "
                    + " or ".join(sorted(ALLOWED[failover_type]))
                    + _state_hint(state, holders.get(vm)),
                )
            )
        elif health == "Critical":
            checks.append(
                Check(
                    vm,
                    f"replication on {host}",
                    Verdict.FAIL,
                    f"{detail}: resolve the replication error first",
                )
            )
        elif health == "Warning" or info.last_replication_time is None:
            checks.append(Check(vm, f"replication on {host}", Verdict.WARN, detail))
        elif failover_type != "planned" and (stale := _past_rpo(info, ctx.hyperv(host))):
            # A test (or unplanned failover) would start from a copy older than the RPO.
            checks.append(Check(vm, f"replication on {host}", Verdict.WARN, f"{detail}: {stale}"))
        else:
            checks.append(Check(vm, f"replication on {host}", Verdict.PASS, detail))
        if failover_type == "test":
            checks.append(leftover_test_vm(ctx.hyperv(host), vm, host))
    return checks


def _state_hint(state: str, run_id: str | None) -> str:
    """What to do about a replica in ``state`` before this failover (empty: nothing known)."""
    run = run_id or "RUN"
    hints = {
        "FailedOverWaitingCompletion": (
            f"a failover of it waits for commit or cancel: `ferryman runs commit {run}` or "
            f"`ferryman runs cancel-failover {run}`"
        ),
        "FailedOver": (
            f"its failover was committed but replication not reversed: "
            f"`ferryman runs reverse {run}`, then fail over with `--direction failback`"
        ),
        "PreparedForFailover": (
            f"a planned failover stopped after preparing it: `ferryman runs resume {run}` or "
            f"`ferryman runs compensate {run}`"
        ),
        "Resynchronizing": "wait for the resynchronization to finish, then check again",
        "WaitingForStartResynchronize": "start the resynchronization (Resume-VMReplication "
        "-Resynchronize) and let it finish",
        "ResynchronizeSuspended": "resume the resynchronization (Resume-VMReplication "
        "-Resynchronize) and let it finish",
        "Suspended": "resume replication (Resume-VMReplication) and wait for one cycle",
        "Disabled": "it is not protected: `ferryman protect apply FABRIC`",
        "ReadyForInitialReplication": "its initial replication never started: "
        "`ferryman protect apply FABRIC`",
        "InitialReplicationInProgress": "wait for its initial replication to finish",
        "WaitingForInitialReplication": "wait for its initial replication to finish",
    }
    hint = hints.get(state)
    return f"; {hint}" if hint else ""


def _past_rpo(info: Any, hv: Any) -> str | None:
    """Why the VM's last replication is older than its recovery point objective (None: it
    is not): more than RPO_RISK_CYCLES copy intervals ago, on the host's own clock (``hv``'s
    Get-Date; this machine's only when the host gives none)."""
    from workflows.runtime import host_clock

    frequency = getattr(info, "frequency", 0) or 0
    last = info.last_replication_time
    if not frequency or last is None:
        return None
    age = ((host_clock(hv) or datetime.now(UTC)) - last).total_seconds()
    if age <= RPO_RISK_CYCLES * frequency:
        return None
    return (
        f"last replication {age:.0f} s ago, past its RPO ({RPO_RISK_CYCLES:g} x the {frequency} s "
        "copy frequency): the copy would be that old"
    )


def leftover_test_vm(hv: Any, vm: str, host: str) -> Check:
    """A test failover cannot start while an earlier test's VM is still on the replica host
    (Ferryman refuses to adopt it: it would test an old copy)."""
    from workflows.runtime import leftover_test_vm_lookup

    name_of_test_vm, find_vm, leftover_cleanup = leftover_test_vm_lookup()
    name = name_of_test_vm(vm)
    what = f"no test VM left on {host}"
    try:
        found = find_vm(hv, name)
    except FerrymanError as exc:
        return Check(vm, what, Verdict.FAIL, str(exc))
    if found is None:
        return Check(vm, what, Verdict.PASS, f"no {name!r}")
    return Check(
        vm,
        what,
        Verdict.FAIL,
        f"{name!r} exists: an earlier test failover was not cleaned up; run "
        f"{leftover_cleanup(vm, host)}",
    )


def worker_checks(compiled: CompiledRun, broker_url: str, app: Any) -> list[Check]:
    """A worker must consume every site queue the run uses."""
    queues = sorted({unit.queue for stage in compiled.stages for unit in stage.units})
    if broker_url.startswith("memory://"):
        return [
            Check(q, "worker online", Verdict.PASS, "embedded: the run starts its own")
            for q in queues
        ]
    replies = app.control.inspect(timeout=2.0).active_queues() or {}
    consumed = {q["name"] for qs in replies.values() for q in qs}
    return [
        Check(
            q,
            "worker online",
            Verdict.PASS if q in consumed else Verdict.FAIL,
            "" if q in consumed else f"start one: ferryman worker --site {q.rsplit('.', 1)[1]}",
        )
        for q in queues
    ]


def zones_used(compiled: CompiledRun) -> dict[str, ZoneTarget]:
    """The DNS zones the run's steps update (a test failover's are its test zones), by name."""
    zones: dict[str, ZoneTarget] = {}
    for _stage, _unit, spec in compiled.steps():
        if isinstance(spec.params, UpdateDnsInput):
            zones.update(spec.params.zones)
    return zones


def dns_checks(zones: Mapping[str, ZoneTarget]) -> list[Check]:
    """Every RFC 2136 zone of ``zones`` (see :func:`zones_used`) answers an SOA query."""
    import dns.exception
    import dns.message
    import dns.query
    import dns.rdatatype

    checks: list[Check] = []
    for name, zone in sorted(zones.items()):
        kind, primary = zone.kind, zone.primary
        if kind != "rfc2136" or not primary:
            checks.append(
                Check(
                    name,
                    "DNS reachable",
                    Verdict.PASS,
                    f"{kind}: checked through the site's VMM at run time",
                )
            )
            continue
        host, _, port = primary.rpartition(":") if ":" in primary else (primary, "", "53")
        try:
            answer = dns.query.udp(
                dns.message.make_query(name, dns.rdatatype.SOA),
                host,
                port=int(port),
                timeout=zone.timeout,
            )
            ok = bool(answer.answer)
            checks.append(
                Check(
                    name,
                    "DNS reachable",
                    Verdict.PASS if ok else Verdict.FAIL,
                    f"{primary}: " + ("SOA answered" if ok else "no SOA"),
                )
            )
        except (OSError, dns.exception.DNSException) as exc:
            checks.append(Check(name, "DNS reachable", Verdict.FAIL, f"{primary}: {exc}"))
    return checks


def lock_checks(
    compiled: CompiledRun, snapshot: Mapping[str, Any], database_url: str
) -> tuple[list[Check], dict[str, str]]:
    """VMs of the run that another run holds (it would be refused), and VM -> holding run."""
    from sqlalchemy.exc import SQLAlchemyError

    from workflows.store import Database, repository

    keys = repository.vm_lock_keys(snapshot, compiled.plan, compiled.vms())
    try:
        db = Database(database_url, create=False)
        try:
            with db.session() as session:
                held = repository.vm_holders(session, keys=keys.values())
                described = {
                    run_id: repository.describe_holder(session, run_id=run_id)
                    for run_id in set(held.values())
                }
        finally:
            db.dispose()
    except (SQLAlchemyError, FerrymanError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return [Check("runs", "VMs free", Verdict.WARN, f"the store cannot be read: {reason}")], {}
    checks, holders = [], {}
    for vm, key in keys.items():
        if key in held:
            holders[vm] = held[key]
            checks.append(
                Check(vm, "not held by a run", Verdict.FAIL, f"held by {described[held[key]]}")
            )
        else:
            checks.append(Check(vm, "not held by a run", Verdict.PASS, key))
    return checks, holders


@click.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--plan", "plan_name", required=True)
@click.option(
    "--type", "failover_type", required=True, type=click.Choice(["test", "planned", "unplanned"])
)
@click.option("--direction", default="failover", type=click.Choice(["failover", "failback"]))
@click.option("--json", "as_json", is_flag=True)
def check(
    files: tuple[str, ...], plan_name: str, failover_type: str, direction: str, as_json: bool
) -> None:
    """Readiness of a plan against the live sites: a table of pass / warn / fail."""
    from rich.console import Console
    from rich.table import Table

    from plans import load_bundle
    from workflows.runtime import create_app, executor_for
    from workflows.settings import Settings

    console = Console()
    settings = Settings.from_env()
    try:
        bundle = load_bundle(list(files))
        plan = bundle.plan(plan_name)
        compiled = compile_run(bundle.fabric, plan_name, plan, failover_type, direction)
    except FerrymanError as exc:
        console.print(f"[red]error:[/] {exc}")
        sys.exit(1)
    executor = executor_for(settings)
    checks = static_checks(bundle.fabric, plan)
    held, holders = lock_checks(compiled, bundle.snapshot(), settings.database_url)
    checks += held
    checks += replication_checks(
        compiled,
        failover_type,
        lambda: executor.context("readiness", failover_type, direction, compiled.hosts, {}),
        holders,
    )
    checks += worker_checks(compiled, settings.broker_url, create_app(settings))
    checks += dns_checks(zones_used(compiled))
    if as_json:
        click.echo(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        table = Table("subject", "check", "verdict", "detail")
        colour = {Verdict.PASS: "green", Verdict.WARN: "yellow", Verdict.FAIL: "red"}
        for c in checks:
            table.add_row(c.subject, c.check, f"[{colour[c.verdict]}]{c.verdict}[/]", c.detail)
        console.print(table)
    sys.exit(1 if any(c.verdict is Verdict.FAIL for c in checks) else 0)
