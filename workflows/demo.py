"""``ferryman demo``: the example plan's test failover and cleanup against the lab, in one process.

Wired by :func:`workflows.runtime.embedded`: the lab (``lab.testing.running_lab`` with
``deploy/lab/topology.yaml`` on ephemeral loopback ports, NTLM like the example fabric), the
example fabric with its endpoint URLs pointed at the lab, SQLite in a temporary directory, the
memory broker and an in-process worker running the real executors over pypsrp. The plan's
manual gate is approved automatically, and the screen says so.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from lab.examples import topology_path
from plans import Bundle, load_bundle
from workflows import report as run_report
from workflows.compiler import RunOperation
from workflows.followups import start_followup
from workflows.progress import watch
from workflows.runtime import close_sessions, embedded
from workflows.settings import RetryPolicy, Settings
from workflows.statuses import TERMINAL_RUN, RunStatus
from workflows.store import repository

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGY = topology_path()  # deploy/lab/topology.yaml, or the copy an installed wheel carries
PLAN_FILE = ROOT / "plans" / "examples" / "three-tier.yaml"
PLAN = "three-tier"
PASSWORD_VARIABLE = "FERRYMAN_LAB_PASSWORD"  # what the example fabric's credential refers to
DEMO_ACTOR = "ferryman demo"
SETTLED = [*TERMINAL_RUN, RunStatus.WAITING, RunStatus.COMPENSATING]


@dataclass
class DemoResult:
    """What the demo did, for its summary and for tests."""

    test_run: str
    cleanup_run: str | None
    test_status: str
    cleanup_status: str | None
    failed_over: list[str]
    addresses: dict[str, list[str]]
    audit: Counter[str]
    test_vms_left: list[str]
    durations: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the test run and its cleanup both succeeded and no test VM is left."""
        return (
            self.test_status == RunStatus.SUCCEEDED
            and self.cleanup_status == RunStatus.SUCCEEDED
            and not self.test_vms_left
        )


def lab_topology(path: Path = TOPOLOGY) -> dict[str, Any]:
    """The lab topology with its fixed ports removed, so the demo never collides with a lab."""
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    data.pop("admin_port", None)
    for host in data.get("hosts", []):
        host.pop("port", None)
    return data


def point_at_lab(bundle: Bundle, urls: dict[str, str]) -> Bundle:
    """The bundle with every endpoint URL replaced by the lab's URL for that host."""
    snapshot = bundle.snapshot()
    for site in snapshot["fabric"]["sites"].values():
        vmm = site["vmm"]
        vmm["url"] = urls.get(vmm["name"], vmm["url"])
        for name, endpoint in site["hosts"].items():
            endpoint["url"] = urls.get(name, endpoint["url"])
    return Bundle.from_snapshot(snapshot)


@contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    # the credential reference env:FERRYMAN_LAB_PASSWORD resolves in this process only
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def run_demo(
    *,
    console: Console | None = None,
    live: bool = True,
    timeout: float = 120.0,
    topology: Path = TOPOLOGY,
    plan_file: Path = PLAN_FILE,
    plan: str = PLAN,
) -> DemoResult:
    """Run the demo end to end and print its summary; returns what happened."""
    from lab.testing import running_lab

    console = console or Console()
    started = time.monotonic()
    console.print(
        Panel.fit(
            Text.assemble(
                "Ferryman demo: test failover of plan ",
                (plan, "bold"),
                " and its cleanup\nlab: two Hyper-V Replica sites (stockholm -> gothenburg) "
                "over real WinRM/PSRP on loopback\nstore: SQLite in a temporary directory; "
                "broker: in-memory; worker: in this process",
            )
        )
    )
    with (
        running_lab(lab_topology(topology), auth="ntlm") as lab,
        tempfile.TemporaryDirectory(prefix="ferryman-demo-") as tmp,
        _environment(PASSWORD_VARIABLE, lab.password),
    ):
        urls = {name: endpoint.url for name, endpoint in lab.endpoints.items()}
        bundle = point_at_lab(load_bundle([plan_file]), urls)
        settings = Settings(
            database_url=f"sqlite:///{tmp}/ferryman.db",
            retry=RetryPolicy(max_retries=4, base_delay=0.2, max_delay=2.0),
        )
        sites = list(bundle.fabric.sites)
        with embedded(settings, sites, concurrency=12, poll_interval=0.1) as runtime:
            engine, db = runtime.engine, runtime.db
            run = engine.start(bundle, plan, "test", requested_by=DEMO_ACTOR)
            console.print(Text.assemble("started test failover run ", (run.id, "bold")))
            t0 = time.monotonic()
            current = watch(db, run.id, SETTLED, timeout=timeout, console=console, live=live)
            while current.status == RunStatus.WAITING:
                with db.session() as session:
                    gate = repository.approval_for(
                        session, run_id=run.id, stage=current.current_stage
                    )
                name = gate.name if gate else "manual action"
                console.print(
                    Text.assemble(
                        (f"gate '{name}'", "yellow"),
                        f": {gate.instructions if gate else ''}\n",
                        ("the demo approves it automatically", "yellow"),
                        f" as '{DEMO_ACTOR}' (an operator would run: ferryman runs approve "
                        f"{run.id} --by NAME --comment WHY)",
                    )
                )
                engine.approve(run.id, by=DEMO_ACTOR, comment="approved automatically by the demo")
                current = watch(db, run.id, SETTLED, timeout=timeout, console=console, live=live)
            test_seconds = time.monotonic() - t0
            with db.session() as session:
                test_report = run_report.build(session, run.id)
            cleanup_id = cleanup_status = None
            cleanup_seconds = 0.0
            if current.status in (RunStatus.SUCCEEDED, RunStatus.FAILED):
                t1 = time.monotonic()
                cleanup = start_followup(
                    engine,
                    run.id,
                    RunOperation.CLEANUP,
                    by=DEMO_ACTOR,
                    notes="demo: test VMs checked, removing them",
                )
                console.print(
                    Text.assemble(
                        "started cleanup run ", (cleanup.id, "bold"), f" (linked to {run.id})"
                    )
                )
                done = watch(
                    db, cleanup.id, TERMINAL_RUN, timeout=timeout, console=console, live=live
                )
                cleanup_id, cleanup_status = cleanup.id, done.status
                cleanup_seconds = time.monotonic() - t1
        _status, audit = lab.admin("GET", "/audit")
        _status, state = lab.admin("GET", "/state")
        close_sessions()  # the PowerShell sessions to this lab end with it
    result = DemoResult(
        test_run=run.id,
        cleanup_run=cleanup_id,
        test_status=current.status,
        cleanup_status=cleanup_status,
        failed_over=sorted(
            s["vm"]
            for s in test_report["steps"]
            if s["kind"] == "test_failover" and s["status"] == "succeeded"
        ),
        addresses=run_report.addresses(test_report),
        audit=Counter(entry["cmdlet"] for entry in audit["entries"] if entry["outcome"] == "ok"),
        test_vms_left=sorted(vm["name"] for vm in state["vms"] if vm.get("test_of")),
        durations={
            "test failover": round(test_seconds, 2),
            "cleanup": round(cleanup_seconds, 2),
            "total": round(time.monotonic() - started, 2),
        },
    )
    console.print(summary(result, test_report))
    return result


def summary(result: DemoResult, test_report: dict[str, Any]) -> Table:
    """The closing table of the demo."""
    table = Table(title="Ferryman demo: summary", show_header=False, title_justify="left")
    # names and errors come from the plan and the hosts: cells are Text, never markup
    _add(table, "test failover", f"run {result.test_run}: {result.test_status}")
    _add(
        table,
        "VMs failed over (test)",
        f"{len(result.failed_over)}: " + ", ".join(result.failed_over),
    )
    _add(
        table,
        "test VMs' addresses",
        "\n".join(f"{vm} - Test: {', '.join(ips)}" for vm, ips in sorted(result.addresses.items())),
    )
    gates = [a for a in test_report["approvals"]]
    _add(
        table,
        "gates",
        "\n".join(
            f"{a['name']}: {a['status']} by {a['decided_by']} ({a['comment']})" for a in gates
        )
        or "none",
    )
    _add(
        table,
        "lab audit log",
        "\n".join(f"{cmdlet}: {count}" for cmdlet, count in sorted(result.audit.items())),
    )
    _add(
        table,
        "cleanup",
        f"run {result.cleanup_run}: {result.cleanup_status}; test VMs "
        f"left in the lab: {len(result.test_vms_left)}",
    )
    _add(table, "durations", ", ".join(f"{k} {v:.1f} s" for k, v in result.durations.items()))
    if test_report["run"]["error"]:
        _add(table, "error", test_report["run"]["error"])
    return table


def _add(table: Table, *cells: str) -> None:
    """A row whose cells print as written (names and errors are never markup)."""
    table.add_row(*(Text(cell) for cell in cells))
