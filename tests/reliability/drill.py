"""The example world for reliability drills: lab, BIND9, the example plan, workers, the engine.

A :class:`Stack` holds the servers a multi-process run needs (Redis, a database URL, the lab
password) and produces both the worker processes' environment and the in-process engine's
settings from the same values, so the test and its workers always agree.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from plans import Bundle, load_bundle
from tests.support.bind import BindServers
from tests.support.secrets import SECRET_ROOTS_VARIABLE, suite_secret_roots
from tests.support.servers import RedisServer, wait_for
from workers.embedded import Runtime, build_runtime
from workflows.demo import lab_topology, point_at_lab
from workflows.migrations import upgrade
from workflows.settings import RetryPolicy, Settings
from workflows.statuses import TERMINAL_RUN, RunStatus, StepStatus
from workflows.store import Run, repository

ROOT = Path(__file__).resolve().parents[2]
PLAN_FILE = ROOT / "plans" / "examples" / "three-tier.yaml"
PLAN = "three-tier"
PASSWORD_VARIABLE = "FERRYMAN_LAB_PASSWORD"
# Short enough that a killed worker's task comes back within seconds, longer than any one
# task of the example plan against the lab (the longest, a VM's planned steps, takes ~1 s).
VISIBILITY_TIMEOUT = 5
RETRY = RetryPolicy(max_retries=8, base_delay=0.2, max_delay=2.0)
# a step whose worker is silent this long is taken over (its message may be gone with it)
STEP_HEARTBEAT = 0.5
STEP_LEASE = 3.0


def topology() -> dict[str, Any]:
    """The shared example lab on ephemeral ports, its password read from the environment."""
    data = lab_topology()
    data["credentials"]["password"] = f"env:{PASSWORD_VARIABLE}"
    return data


def example_bundle(urls: dict[str, str], bind: BindServers | None) -> Bundle:
    """The example plan and fabric, endpoints pointed at the lab and ``corp.example`` at BIND."""
    bundle = point_at_lab(load_bundle([PLAN_FILE]), urls)
    if bind is None:
        return bundle
    snapshot = bundle.snapshot()
    zone = snapshot["fabric"]["dns_zones"]["corp.example"]
    zone.update(
        primary=bind.primary.hostport,
        servers=bind.servers,
        tsig_key=f"file:{bind.key_file}",
    )
    return Bundle.from_snapshot(snapshot)


@dataclass
class Stack:
    """Redis + a database + the lab password: everything a worker process is configured with."""

    redis: RedisServer
    database_url: str
    password: str
    directory: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        upgrade(self.database_url)  # as a deployment does before its workers start

    def settings(self) -> Settings:
        """The engine's settings (the same values the workers read from their environment)."""
        return Settings(
            database_url=self.database_url,
            broker_url=self.redis.url(0),
            result_backend=self.redis.url(1),
            visibility_timeout=VISIBILITY_TIMEOUT,
            retry=RETRY,
            advance_poll=0.25,
            worker_concurrency=8,
            step_heartbeat=STEP_HEARTBEAT,
            step_lease=STEP_LEASE,
        )

    def env(self) -> dict[str, str]:
        """A worker process's environment: ``FERRYMAN_*`` from :meth:`settings`, and the secret
        folders the test's key files lie in."""
        settings = self.settings()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FERRYMAN_")}
        env.update(
            FERRYMAN_DATABASE_URL=settings.database_url,
            FERRYMAN_BROKER_URL=settings.broker_url,
            FERRYMAN_VISIBILITY_TIMEOUT=str(settings.visibility_timeout),
            FERRYMAN_RETRY_MAX_RETRIES=str(RETRY.max_retries),
            FERRYMAN_RETRY_BASE_DELAY=str(RETRY.base_delay),
            FERRYMAN_RETRY_MAX_DELAY=str(RETRY.max_delay),
            FERRYMAN_ADVANCE_POLL=str(settings.advance_poll),
            FERRYMAN_WORKER_CONCURRENCY=str(settings.worker_concurrency),
            FERRYMAN_STEP_HEARTBEAT=str(settings.step_heartbeat),
            FERRYMAN_STEP_LEASE=str(settings.step_lease),
            PYTHONPATH=str(ROOT),
        )
        if settings.result_backend is not None:
            env["FERRYMAN_RESULT_BACKEND"] = settings.result_backend
        env[PASSWORD_VARIABLE] = self.password
        env[SECRET_ROOTS_VARIABLE] = os.environ.get(SECRET_ROOTS_VARIABLE) or suite_secret_roots()
        env.update(self.extra_env)
        return env

    @contextmanager
    def runtime(self) -> Iterator[Runtime]:
        """The engine in this process (it dispatches; the worker processes execute)."""
        runtime = build_runtime(self.settings())
        try:
            yield runtime
        finally:
            # chord results unsubscribe from Redis when collected, and the unsubscriptions
            # are flushed by the next pubsub operation: do both while Redis is still up
            gc.collect()
            consumer = getattr(runtime.app.backend, "result_consumer", None)
            if consumer is not None:
                consumer.stop()
                # results still pending (e.g. sent before a Redis restart) unsubscribe when
                # collected, later, maybe after Redis is gone: with no pubsub they skip the
                # network instead of retrying a dead server for minutes
                consumer._pubsub = None
            runtime.app.close()
            runtime.db.dispose()


@contextmanager
def planned_run(stack: Stack, bind: BindServers | None) -> Iterator[tuple[Runtime, Run]]:
    """A planned failover of the example plan on a fresh NTLM lab, driven to success by the
    engine in this process (gates approved); yields the runtime and the finished run while
    the lab and the runtime are still up."""
    from lab.testing import running_lab

    with stack.runtime() as runtime, running_lab(topology(), auth="ntlm") as lab:
        bundle = example_bundle({n: e.url for n, e in lab.endpoints.items()}, bind)
        run = runtime.engine.start(bundle, PLAN, "planned", requested_by="reliability")
        final = drive(runtime, run.id, timeout=120)
        assert final.status == RunStatus.SUCCEEDED, final.error
        yield runtime, final


class WorkerProcess:
    """``python -m tests.reliability.worker_main`` with its output in a log file."""

    command: tuple[str, ...] = ("-m", "tests.reliability.worker_main")
    ready_marker = " ready."
    kind = "worker"

    def __init__(self, stack: Stack, name: str, env: dict[str, str] | None = None) -> None:
        self.stack = stack
        self.log_path = stack.directory / f"{self.kind}-{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.env = {**stack.env(), **(env or {})}

    def start(self, *, ready_timeout: float = 60.0) -> WorkerProcess:
        """Start the worker and wait until Celery says it is ready."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, *self.command],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(self._ready, timeout=ready_timeout, what=f"{self.kind} ready ({self.log_path})")
        return self

    def log(self) -> str:
        """Everything the worker printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"{self.kind} exited at start:\n{self.log()[-4000:]}")
        return self.ready_marker in self.log()

    @property
    def exited(self) -> bool:
        """Whether the process has ended (crashed, or gave up on its own)."""
        return self.process is not None and self.process.poll() is not None

    def kill(self) -> None:
        """SIGKILL: the crash under test (no warm shutdown, nothing acknowledged)."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        """A warm shutdown (SIGTERM), SIGKILL if it takes too long."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()


class TriggerProcess(WorkerProcess):
    """``ferryman triggers``: the queue-trigger consumer, as operators run it."""

    command = ("-m", "workflows.cli", "triggers", "--poll", "0.2")
    ready_marker = "consuming ferryman.runs"
    kind = "triggers"


# The example fabric's fixed endpoints, replaced by a running lab's (and BIND's) in copies.
EXAMPLE_PORTS = {
    "vmm-sto": 15985,
    "vmm-got": 15986,
    "hv-sto-1": 15987,
    "hv-sto-2": 15988,
    "hv-got-1": 15989,
    "hv-got-2": 15990,
}


def write_plan_files(
    directory: Path, urls: dict[str, str], bind: BindServers | None = None
) -> Path:
    """Copies of the example plan and fabric pointing at the lab (and BIND); the plan's path."""
    directory.mkdir(parents=True, exist_ok=True)
    fabric = (PLAN_FILE.parent / "fabric.yaml").read_text(encoding="utf-8")
    for host, port in EXAMPLE_PORTS.items():
        fabric = fabric.replace(f"http://127.0.0.1:{port}/wsman", urls[host])
    if bind is not None:
        fabric = (
            fabric.replace(
                '"127.0.0.1:15353", "127.0.0.1:15354"',
                ", ".join(f'"{server}"' for server in bind.servers),
            )
            .replace('"127.0.0.1:15353"', f'"{bind.primary.hostport}"')
            .replace("file:/etc/ferryman/corp-example.key", f"file:{bind.key_file}")
        )
    (directory / "fabric.yaml").write_text(fabric, encoding="utf-8")
    plan = directory / PLAN_FILE.name
    plan.write_text(PLAN_FILE.read_text(encoding="utf-8"), encoding="utf-8")
    return plan


def unacked_older_than(redis: RedisServer, seconds: float) -> bool:
    """True when no message is held unacknowledged, or the newest is ``seconds`` old.

    kombu's Redis transport restores an unacknowledged message only once it is older than
    the visibility timeout; a new worker scans at start, so starting it after this holds
    makes it pick up everything a killed worker held.
    """
    # redis-py types a reply as sync-or-async
    newest = cast(list[Any], redis.client(0).zrange("unacked_index", -1, -1, withscores=True))
    return not newest or time.time() - float(newest[0][1]) > seconds


def drive(
    runtime: Runtime,
    run_id: str,
    *,
    timeout: float,
    approve: bool = True,
    supervise: Callable[[], None] | None = None,
) -> Run:
    """Follow a run until it ends, approving every gate it waits at (as an operator would).

    ``supervise`` is called on every poll (e.g. to restart exited workers, as systemd would).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if supervise is not None:
            supervise()
        with runtime.db.session() as session:
            run = repository.get_run(session, run_id=run_id)
        if RunStatus(run.status) in TERMINAL_RUN:
            return run
        if run.status == RunStatus.WAITING and approve:
            runtime.engine.approve(run_id, by="reliability", comment="drill")
        time.sleep(0.1)
    raise TimeoutError(
        f"run {run_id} still {run.status} after {timeout:.0f} s: {stuck(runtime, run_id)}"
    )


def stuck(runtime: Runtime, run_id: str) -> str:
    """The run's steps that are not done, for failure messages."""
    with runtime.db.session() as session:
        steps = repository.steps_of(session, run_id=run_id)
    return json.dumps(
        [(s.key, s.status, s.error) for s in steps if s.status != StepStatus.SUCCEEDED], indent=1
    )


def step_statuses(runtime: Runtime, run_id: str) -> Counter[str]:
    """How many of the run's steps are in each status."""
    with runtime.db.session() as session:
        return Counter(s.status for s in repository.steps_of(session, run_id=run_id))


def expected_planned_calls(bundle: Bundle) -> set[tuple[str, str, str]]:
    """The mutating calls a planned failover of the example plan makes: (host, cmdlet, VM)."""
    plan = bundle.plan(PLAN)
    pairing = bundle.fabric.pairings[plan.pairing]
    calls: set[tuple[str, str, str]] = set()
    for group in plan.groups:
        for member in group.vms:
            vm = pairing.vms[member.name]
            primary, replica = vm.primary_host, vm.replica_host
            calls |= {
                (primary, "Stop-VM", member.name),
                (primary, "Start-VMFailover", member.name),
                (replica, "Start-VMFailover", member.name),
                (replica, "Set-VMReplication", member.name),
                (replica, "Connect-VMNetworkAdapter", member.name),
                (replica, "Start-VM", member.name),
            }
    return calls


def audit_calls(entries: list[dict[str, Any]]) -> Counter[tuple[str, str, str]]:
    """Audited mutating calls on VMs, counted by (host, cmdlet, VM)."""
    return Counter((e["host"], e["cmdlet"], e["vm"]) for e in entries if e["vm"] is not None)


def approve_until(
    runtime: Runtime, run_id: str, condition: Any, *, timeout: float, what: str
) -> None:
    """Wait for ``condition()``, approving the run's gates meanwhile (an operator at work)."""

    def check() -> bool:
        with runtime.db.session() as session:
            current = repository.get_run(session, run_id=run_id)
        if current.status == RunStatus.WAITING:
            runtime.engine.approve(run_id, by="reliability", comment="drill")
        if RunStatus(current.status) in TERMINAL_RUN:
            raise AssertionError(f"run {run_id} ended ({current.status}) before {what}")
        return bool(condition())

    wait_for(check, timeout=timeout, what=what)
