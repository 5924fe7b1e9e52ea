"""Engine overhead vs bare Celery, side by side in one run: same Redis, same lab, zero latency.

Three runs of one plan shape (G groups x M VMs, test failover), each on a fresh lab so every
run finds the replicas in the same state:

1. bare no-op: the stage-by-stage chain of chords with tasks that do nothing (Celery's cost);
2. bare PSRP: the same chain whose tasks make the test failover's PowerShell calls directly
   (``bench.bare``: no store, no compiler);
3. Ferryman: the engine and its workers running the same plan.

Overhead per VM-step = (Ferryman - bare PSRP) / VM-steps, where VM-steps are the compiled
steps (TEST_FAILOVER, CONNECT_NETWORK, START_VM, WAIT_IP per VM). Both PSRP runs use the same
worker pool size and the same adapter (``workers.hyperv.psrp``), and the lab counts the calls
each made, so the comparison shows when they do not make the same calls.

Run alone: ``python -m bench.overhead [--quick]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import bare, pipeline
from bench.calls import CallLog, recording
from bench.engine import ferryman, ferryman_env, wait_for_workers
from bench.plans import PASSWORD_REF, PLAN_NAME, Shape, topology_document, write_bundle
from bench.profiler import Profile, sampling
from bench.services import (
    CpuMeter,
    RedisServer,
    celery_worker_argv,
    postgres_server,
    redis_server,
    release_results,
    spawn,
    stop_process,
)

RESULTS = Path(__file__).resolve().parent / "results"
AUTH = "ntlm"  # what the example fabric uses; NTLM seals every message, as WinRM over http does
TIME_SCALE = 0.01  # lab seconds are 10 ms: replication cycles pass quickly; boot time is 0
LAB_PASSWORD_VARIABLE = "FERRYMAN_BENCH_LAB_PASSWORD"
BARE_DB = 0
FERRYMAN_DB = 1


@dataclass
class LabRun:
    """A running lab (``lab.testing.LabHandle``) and the record of the calls it answers."""

    handle: Any
    calls: CallLog

    @property
    def password(self) -> str:
        """The lab login's password (generated at start; handed to workers by environment)."""
        return str(self.handle.password)


@contextmanager
def lab_for(
    shape: Shape,
    *,
    latency: float = 0.0,
    time_scale: float = TIME_SCALE,
    password: str = "generate",
) -> Iterator[LabRun]:
    """A fresh lab for ``shape`` with ``latency`` seconds per cmdlet, recording its calls
    (``password``: the login's, or ``generate`` for a new one)."""
    from lab.testing import running_lab

    topology = topology_document(
        shape, time_scale=time_scale, cmdlet_latency=latency, password=password
    )
    with running_lab(topology, auth=AUTH) as handle, recording(handle.lab) as calls:
        yield LabRun(handle, calls)


def host_refs(shape: Shape, lab: LabRun) -> dict[str, dict[str, Any]]:
    """Per VM, how a bare task reaches its replica host (the password stays a reference)."""
    refs = {}
    for index in range(shape.vm_count):
        _, replica = shape.host_pair(index)
        endpoint = lab.handle.endpoints[replica]
        refs[shape.vm_name(index)] = {
            "name": replica,
            "url": endpoint.url,
            "auth": endpoint.auth,
            "username": endpoint.username,
            "password_ref": PASSWORD_REF,
        }
    return refs


def urls_of(lab: LabRun) -> dict[str, str]:
    """Host name -> WinRM URL of a running lab."""
    return {name: endpoint.url for name, endpoint in lab.handle.endpoints.items()}


@dataclass
class BareWorker:
    """The bare worker processes' pids and a client app on the same broker."""

    app: Any
    pids: list[int]

    @property
    def pid(self) -> int:
        """The first worker process's pid."""
        return self.pids[0]


@contextmanager
def bare_worker(
    server: RedisServer,
    *,
    concurrency: int,
    password: str,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    processes: int = 1,
) -> Iterator[BareWorker]:
    """Bare Celery worker processes (``processes`` of ``concurrency`` threads each) on Redis
    database :data:`BARE_DB` (``env``: more variables for them, e.g. the adapter's sessions
    per host)."""
    url = server.url(BARE_DB)
    started = []
    app = bare.make_app(url)
    try:
        for index in range(processes):
            argv = celery_worker_argv(
                "bench.bare:app",
                queues=[bare.VM_QUEUE, bare.ENGINE_QUEUE],
                concurrency=concurrency,
                name=f"bare{index}",
            )
            started.append(
                spawn(
                    argv,
                    env={**(env or {}), "BENCH_BROKER_URL": url, "FERRYMAN_LAB_PASSWORD": password},
                    log=log_dir / f"bare-worker-{index}.log",
                )
            )
        wait_for_workers(app, processes, 60, started)
        yield BareWorker(app, [process.pid for process in started])
    finally:
        release_results(app)
        for process in started:
            stop_process(process)


@contextmanager
def _maybe_sampling(enabled: bool, pid: int, name: str) -> Iterator[Profile]:
    if not enabled:
        yield Profile(RESULTS / f"{name}.raw", skipped="not asked for (--profile)")
        return
    with sampling(pid, RESULTS / f"{name}.raw") as profile:
        yield profile


def time_bare(app: Any, task: str, stages: list[list[dict[str, Any]]], timeout: float) -> float:
    """Seconds from dispatching the first stage to the last callback."""
    started = time.time()
    run_id = bare.start_run(app, task, stages)
    return bare.wait_run(app, run_id, timeout=timeout) - started


def redis_pid(server: RedisServer) -> int:
    """The pid of a running benchmark Redis (its CPU is counted)."""
    if server.process is None:
        raise RuntimeError("the benchmark's Redis is not running")
    return server.process.pid


def call_summary(calls: CallLog) -> dict[str, Any]:
    """What the lab saw: calls per VM and per cmdlet."""
    return {"calls_per_vm": round(calls.calls_per_vm(), 2), "cmdlets": calls.cmdlet_counts()}


def run(
    *,
    quick: bool,
    concurrency: int = 16,
    timeout: float = 900,
    profile: bool = False,
    databases: tuple[str, ...] | None = None,
    rounds: int | None = None,
) -> dict[str, Any]:
    """Measure the runs in alternating rounds; returns figures and their settings.

    Each round runs bare PSRP, then Ferryman on each store, each on a fresh lab, so a burst
    of load on this shared machine hits one round rather than one side; the overhead is the
    median over rounds of each round's (Ferryman - bare PSRP). With ``profile``, py-spy
    samples the bare and the Ferryman worker in the first round (which slows both a little;
    the figures are then marked as profiled).
    """
    reason = pipeline.available()
    if reason is not None:
        return {"skipped": f"the engine cannot run: {reason}"}
    shape = Shape(4, 20) if quick else Shape(10, 50)  # quick: all of bench/run within 5 min
    # at least 5 rounds, so the spread of the CPU figure is seen; the quick run keeps to the
    # headline store (PostgreSQL) to stay within its 5 minutes
    rounds = rounds or 5
    databases = databases or (("postgres",) if quick else ("sqlite", "postgres"))
    settings = {
        "groups": shape.groups,
        "vms_per_group": shape.vm_count // shape.groups,
        "vms": shape.vm_count,
        "hosts_per_site": shape.hosts_per_site,
        "worker_concurrency": concurrency,
        "worker_pool": "threads",
        "worker_processes": 1,
        "lab_latency_ms": 0,
        "lab_auth": AUTH,
        "stores": list(databases),  # sqlite: WAL file; postgres: private server, fsync off
        "rounds": rounds,
        "profiled": profile,
    }
    out: dict[str, Any] = {"settings": settings}
    # every lab of the run uses one password, read from this process's environment; the
    # workers get it in theirs
    password = secrets.token_urlsafe(18)
    os.environ[LAB_PASSWORD_VARIABLE] = password
    lab_password = f"env:{LAB_PASSWORD_VARIABLE}"
    bare_runs: list[float] = []
    bare_cpu: list[dict[str, float]] = []  # CPU seconds of the bare worker and Redis per run
    ferryman_runs: dict[str, list[dict[str, Any]]] = {store: [] for store in databases}
    profiles: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ferryman-bench-")))
        server = stack.enter_context(redis_server())
        worker = stack.enter_context(
            bare_worker(server, concurrency=concurrency, password=password, log_dir=workdir)
        )
        harnesses = {
            store: stack.enter_context(
                _ferryman_harness(server, workdir, store, index, password, concurrency)
            )
            for index, store in enumerate(databases)
        }
        groups = shape.groups_of_names()
        # warm Celery's connections; opening runspace pools stays in every PSRP run
        time_bare(worker.app, bare.NOOP, bare.noop_stages(groups[:1]), timeout)
        out["bare_noop_s"] = round(
            time_bare(worker.app, bare.NOOP, bare.noop_stages(groups), timeout), 3
        )
        for index in range(rounds):
            sample = profile and index == 0
            with lab_for(shape, password=lab_password) as lab:
                stages = bare.vm_stages(groups, host_refs(shape, lab))
                meter = CpuMeter({"worker": worker.pids, "redis": [redis_pid(server)]})
                with _maybe_sampling(sample, worker.pid, "bare-worker") as bare_profile:
                    bare_runs.append(round(time_bare(worker.app, bare.VM, stages, timeout), 3))
                bare_cpu.append(meter.read())
                if index == 0:
                    out["bare_calls"] = call_summary(lab.calls)
                    out["bare_calls_per_s"] = round(len(lab.calls.calls()) / bare_runs[0], 1)
            if sample:
                profiles["bare_worker"] = bare_profile.to_json()
            for store, harness in harnesses.items():
                sample_this = sample and store == databases[0]
                figures, ferryman_profile = _ferryman_run(
                    shape, harness, workdir / f"{store}-{index}", lab_password,
                    timeout=timeout, profile=sample_this,
                )  # fmt: skip
                ferryman_runs[store].append(figures)
                if sample_this:
                    profiles["ferryman_worker"] = ferryman_profile.to_json()
    if profile:
        out["profile"] = profiles
    out["bare_psrp_runs_s"] = bare_runs
    out["bare_psrp_s"] = statistics.median(bare_runs)
    out["bare_psrp_cpu_s_runs"] = bare_cpu
    out["celery_ms_per_task"] = round(out["bare_noop_s"] / shape.vm_count * 1000, 2)
    out["summary"] = [
        f"{shape.groups}x{shape.vm_count // shape.groups} VMs, {rounds} rounds: bare no-op "
        f"{out['bare_noop_s']} s, bare PSRP {bare_runs} s ({out['bare_calls']['calls_per_vm']} "
        f"calls/VM, {out['bare_calls_per_s']} calls/s)"
    ]
    for store in databases:
        out[store] = figures = _per_store(ferryman_runs[store], bare_runs, bare_cpu)
        if "error" in figures:
            out["summary"].append(f"Ferryman on {store}: {figures['error']}")
            continue
        out["summary"].append(
            f"Ferryman on {store}: {figures['ferryman_runs_s']} s (median "
            f"{figures['ratio_to_bare_psrp']}x bare PSRP), {figures['overhead_ms_per_step']} "
            f"ms per VM-step beyond it (rounds: {figures['overhead_ms_per_step_runs']}), "
            f"{figures['calls']['calls_per_vm']} calls/VM; CPU {figures['cpu_ms_per_step']} "
            f"ms per VM-step beyond bare (rounds: {figures['cpu_ms_per_step_runs']}, "
            f"stdev {figures['cpu_ms_per_step_spread']['stdev']})"
        )
    # the headline is the production store's figure when it ran, else the embedded one's
    for store in ("postgres", "sqlite"):
        if store in databases and "overhead_ms_per_step" in out[store]:
            out["overhead_ms_per_step"] = out[store]["overhead_ms_per_step"]
            out["overhead_cpu_ms_per_step"] = out[store]["cpu_ms_per_step"]
            out["engine_cpu_ms_per_step"] = out[store]["cpu_ms_per_step"]
            out["engine_cpu_ms_per_step_spread"] = out[store]["cpu_ms_per_step_spread"]
            out["overhead_store"] = store
            break
    else:
        out["error"] = "no Ferryman run succeeded; see the per-store figures"
    return out


def _per_store(
    runs: list[dict[str, Any]], bare_runs: list[float], bare_cpu: list[dict[str, float]]
) -> dict[str, Any]:
    """One store's figures over the rounds: medians, and every round's own figure.

    Besides the wall-clock overhead, the CPU the run cost beyond bare Celery's: CPU seconds of
    the Ferryman worker, Redis and the database server against those of the bare worker and
    Redis, per VM-step. A burst of other load on the machine stretches wall clocks but not
    CPU seconds, so this figure is the steadier one.
    """
    failed = [run for run in runs if "error" in run]
    if failed:
        return {**failed[0], "rounds_failed": len(failed)}
    steps = runs[0]["vm_steps"]
    overheads = [
        round((run["ferryman_s"] - bare) / steps * 1000, 2)
        for run, bare in zip(runs, bare_runs, strict=True)
    ]
    ratios = [round(run["ferryman_s"] / bare, 2) for run, bare in zip(runs, bare_runs, strict=True)]
    cpu = [
        round((sum(run["cpu_s"].values()) - sum(bare.values())) / steps * 1000, 2)
        for run, bare in zip(runs, bare_cpu, strict=True)
    ]
    return {
        "status": "succeeded",
        "calls": runs[0]["calls"],
        "vm_steps": steps,
        "ferryman_runs_s": [run["ferryman_s"] for run in runs],
        "ferryman_s": statistics.median(run["ferryman_s"] for run in runs),
        "ferryman_wall_s": statistics.median(run["ferryman_wall_s"] for run in runs),
        "overhead_ms_per_step_runs": overheads,
        "overhead_ms_per_step": round(statistics.median(overheads), 2),
        "ratio_to_bare_psrp": round(statistics.median(ratios), 2),
        "cpu_s_runs": [run["cpu_s"] for run in runs],
        "cpu_ms_per_step_runs": cpu,
        "cpu_ms_per_step": round(statistics.median(cpu), 2),
        "cpu_ms_per_step_spread": spread(cpu),
        "overhead_ms_per_step_spread": spread(overheads),
    }


def spread(values: list[float]) -> dict[str, float]:
    """How far a figure moved over the rounds: min, max, and the standard deviation."""
    return {
        "rounds": len(values),
        "min": min(values),
        "max": max(values),
        "stdev": round(statistics.stdev(values), 2) if len(values) > 1 else 0.0,
    }


@contextmanager
def _ferryman_harness(
    server: RedisServer, workdir: Path, store: str, index: int, password: str, concurrency: int
) -> Iterator[Any]:
    """Ferryman's worker and engine on ``store`` (sqlite | postgres), on its own Redis
    database so the stores' workers never take each other's tasks."""
    with contextlib.ExitStack() as stack:
        postgres = (
            stack.enter_context(postgres_server(fsync=False)) if store == "postgres" else None
        )
        (workdir / store).mkdir(exist_ok=True)
        env = ferryman_env(
            server,
            workdir / store,
            db=FERRYMAN_DB + index,
            password=password,
            database_url=postgres.url() if postgres else None,
        )
        harness = stack.enter_context(ferryman(env, concurrency=concurrency, log_dir=workdir))
        harness.services = {"redis": redis_pid(server)}
        if postgres:
            harness.services["postgres"] = postgres.pid()
        yield harness


def _ferryman_run(
    shape: Shape,
    harness: Any,
    workdir: Path,
    lab_password: str,
    *,
    timeout: float,
    profile: bool,
) -> tuple[dict[str, Any], Profile]:
    """Ferryman on a fresh lab (``lab_password``: an ``env:`` reference); figures, profile."""
    with lab_for(shape, password=lab_password) as lab:
        plan_file = write_bundle(workdir, shape, urls_of(lab))
        lab.calls.clear()
        meter = CpuMeter(
            {"worker": harness.worker_pids}
            | {name: [pid] for name, pid in harness.services.items()}
        )
        with _maybe_sampling(profile, harness.worker_pids[0], "ferryman-worker") as sampled:
            timing = harness.run(plan_file, PLAN_NAME, timeout=timeout)
        cpu = meter.read()
        steps = harness.step_count(timing.run_id)
        figures: dict[str, Any] = {"status": timing.status, "calls": call_summary(lab.calls)}
    if timing.status != "succeeded":
        figures["error"] = f"the run ended {timing.status}: {timing.error[:300]}"
        return figures, sampled
    figures.update(
        ferryman_s=round(timing.recorded_s, 3),
        ferryman_wall_s=round(timing.wall_s, 3),
        cpu_s=cpu,
        vm_steps=steps,
    )
    return figures, sampled


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.overhead [--quick]``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--profile", action="store_true", help="sample both workers with py-spy")
    options = parser.parse_args(argv)
    print(json.dumps(run(quick=options.quick, profile=options.profile), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
