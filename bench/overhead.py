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
    shape: Shape, *, latency: float = 0.0, time_scale: float = TIME_SCALE
) -> Iterator[LabRun]:
    """A fresh lab for ``shape`` with ``latency`` seconds per cmdlet, recording its calls."""
    from lab.testing import running_lab

    topology = topology_document(shape, time_scale=time_scale, cmdlet_latency=latency)
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
    """The bare worker process's pid and a client app on the same broker."""

    app: Any
    pid: int


@contextmanager
def bare_worker(
    server: RedisServer,
    *,
    concurrency: int,
    password: str,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
) -> Iterator[BareWorker]:
    """A bare Celery worker process on Redis database :data:`BARE_DB` (``env``: more
    variables for it, e.g. the adapter's sessions per host)."""
    url = server.url(BARE_DB)
    argv = celery_worker_argv(
        "bench.bare:app",
        queues=[bare.VM_QUEUE, bare.ENGINE_QUEUE],
        concurrency=concurrency,
        name="bare",
    )
    process = spawn(
        argv,
        env={**(env or {}), "BENCH_BROKER_URL": url, "FERRYMAN_LAB_PASSWORD": password},
        log=log_dir / "bare-worker.log",
    )
    app = bare.make_app(url)
    try:
        wait_for_workers(app, 1, 60, [process])
        yield BareWorker(app, process.pid)
    finally:
        release_results(app)
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


def call_summary(calls: CallLog) -> dict[str, Any]:
    """What the lab saw: calls per VM and per cmdlet."""
    return {"calls_per_vm": round(calls.calls_per_vm(), 2), "cmdlets": calls.cmdlet_counts()}


def run(
    *,
    quick: bool,
    concurrency: int = 16,
    timeout: float = 900,
    profile: bool = False,
    databases: tuple[str, ...] = ("sqlite", "postgres"),
) -> dict[str, Any]:
    """Measure the three runs; returns figures and the settings they were taken with.

    With ``profile``, py-spy samples the bare and the Ferryman worker during their PSRP runs
    (which slows both a little; the figures are then marked as profiled).
    """
    reason = pipeline.available()
    if reason is not None:
        return {"skipped": f"the engine cannot run: {reason}"}
    shape = Shape(5, 20) if quick else Shape(10, 50)
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
        "profiled": profile,
    }
    out: dict[str, Any] = {"settings": settings}
    with tempfile.TemporaryDirectory(prefix="ferryman-bench-") as tmp, redis_server() as server:
        workdir = Path(tmp)
        # 1 + 2: bare Celery, no-op and PSRP
        with (
            lab_for(shape) as lab,
            bare_worker(
                server, concurrency=concurrency, password=lab.password, log_dir=workdir
            ) as worker,
        ):
            app = worker.app
            groups = shape.groups_of_names()
            # warm Celery's connections; opening runspace pools stays in both PSRP runs
            time_bare(app, bare.NOOP, bare.noop_stages(groups[:1]), timeout)
            out["bare_noop_s"] = round(
                time_bare(app, bare.NOOP, bare.noop_stages(groups), timeout), 3
            )
            lab.calls.clear()
            stages = bare.vm_stages(groups, host_refs(shape, lab))
            with _maybe_sampling(profile, worker.pid, "bare-worker") as bare_profile:
                out["bare_psrp_s"] = round(time_bare(app, bare.VM, stages, timeout), 3)
            out["bare_calls"] = call_summary(lab.calls)
            # the machine's PSRP throughput (client and lab together): the floor under any run
            out["bare_calls_per_s"] = round(len(lab.calls.calls()) / out["bare_psrp_s"], 1)
        # 3: Ferryman on a fresh lab, on each store
        profiles = {"bare_worker": bare_profile.to_json()}
        for store in databases:
            figures, ferryman_profile = _ferryman_run(
                shape,
                server,
                workdir,
                store,
                concurrency=concurrency,
                timeout=timeout,
                profile=profile and store == databases[0],
            )
            if profile and store == databases[0]:
                profiles["ferryman_worker"] = ferryman_profile.to_json()
            out[store] = figures
    if profile:
        out["profile"] = profiles
    out["celery_ms_per_task"] = round(out["bare_noop_s"] / shape.vm_count * 1000, 2)
    out["summary"] = [
        f"{shape.groups}x{shape.vm_count // shape.groups} VMs: bare no-op {out['bare_noop_s']} s, "
        f"bare PSRP {out['bare_psrp_s']} s ({out['bare_calls']['calls_per_vm']} calls/VM, "
        f"{out['bare_calls_per_s']} calls/s)"
    ]
    for store in databases:
        figures = out[store]
        if "error" in figures:
            out["summary"].append(f"Ferryman on {store}: {figures['error']}")
            continue
        figures["overhead_ms_per_step"] = round(
            (figures["ferryman_s"] - out["bare_psrp_s"]) / figures["vm_steps"] * 1000, 2
        )
        figures["ratio_to_bare_psrp"] = round(figures["ferryman_s"] / out["bare_psrp_s"], 2)
        out["summary"].append(
            f"Ferryman on {store}: {figures['ferryman_s']} s ({figures['ratio_to_bare_psrp']}x "
            f"bare PSRP), {figures['overhead_ms_per_step']} ms per VM-step beyond it, "
            f"{figures['calls']['calls_per_vm']} calls/VM"
        )
    # the headline is the production store's figure when it ran, else the embedded one's
    for store in ("postgres", "sqlite"):
        if store in databases and "overhead_ms_per_step" in out[store]:
            out["overhead_ms_per_step"] = out[store]["overhead_ms_per_step"]
            out["overhead_store"] = store
            break
    else:
        out["error"] = "no Ferryman run succeeded; see the per-store figures"
    return out


def _ferryman_run(
    shape: Shape,
    server: RedisServer,
    workdir: Path,
    store: str,
    *,
    concurrency: int,
    timeout: float,
    profile: bool,
) -> tuple[dict[str, Any], Profile]:
    """Ferryman on a fresh lab with ``store`` (sqlite | postgres); its figures and profile."""
    with contextlib.ExitStack() as stack:
        lab = stack.enter_context(lab_for(shape))
        url = stack.enter_context(postgres_server()) if store == "postgres" else None
        plan_file = write_bundle(workdir / f"ferryman-{store}", shape, urls_of(lab))
        env = ferryman_env(
            server, workdir / store, db=FERRYMAN_DB, password=lab.password, database_url=url
        )
        (workdir / store).mkdir(exist_ok=True)
        harness = stack.enter_context(ferryman(env, concurrency=concurrency, log_dir=workdir))
        lab.calls.clear()
        name = "ferryman-worker"
        with _maybe_sampling(profile, harness.worker_pids[0], name) as sampled:
            timing = harness.run(plan_file, PLAN_NAME, timeout=timeout)
        steps = harness.step_count(timing.run_id)
        figures: dict[str, Any] = {"status": timing.status, "calls": call_summary(lab.calls)}
    if timing.status != "succeeded":
        figures["error"] = f"the run ended {timing.status}: {timing.error[:300]}"
        return figures, sampled
    figures.update(
        ferryman_s=round(timing.recorded_s, 3),
        ferryman_wall_s=round(timing.wall_s, 3),
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
