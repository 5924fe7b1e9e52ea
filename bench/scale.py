"""Scale and growth: validate + compile time and peak memory at 100, 1,000 and 5,000 VMs.

Each size is measured in a fresh child interpreter, so ``ru_maxrss`` (the process's peak
resident set) belongs to that size alone; the child also reports tracemalloc's peak for the
load + validate + compile calls only (what the engine itself allocates) and the resident set
it had before loading (the interpreter and imports). Generating the YAML is not timed.

The child then measures what the engine's store costs at that size (SQLite file, nothing
dispatched): creating the run with its step rows, loading the run row (workers do it before
every step) and rebuilding the compiled run from it (workers do it for every unit). A per-step
cost that grows with the plan makes a whole run grow with its square.

In full mode the plan also runs end to end on the lab at zero latency (100 and 1,000 VMs, and
5,000 within a time cap; a run that does not finish reports how far it got).

Run alone: ``python -m bench.scale [--quick]``; ``--e2e`` runs only the end-to-end runs of
1,000 and 5,000 VMs (the worker's memory growth and the lab's CPU per call).
"""

from __future__ import annotations

import argparse
import importlib
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from bench import pipeline
from bench.plans import Shape, placeholder_urls, write_bundle, write_realistic_bundle
from bench.services import REPO_ROOT

# (groups, VMs per group): 100, 1,000 and 5,000 VMs
SIZES = ((10, 10), (10, 100), (50, 100))
# the realistic 5,000-VM plan's shape: 50 groups of 100 VMs on 50 hosts per site
START_SHAPE = Shape(50, 100, hosts_per_site=50)


def _maxrss_mb() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(directory: Path, plan: str, *, trace: bool) -> dict[str, Any]:
    """Validate and compile the bundle in ``directory``; the figures as a dict.

    With ``trace``, tracemalloc follows every allocation, which slows Python down several
    times; its timings are then meaningless, so times come from a run without it.
    """
    t0 = time.perf_counter()
    # Imports are measured apart from the work: a long-lived engine pays them once.
    importlib.import_module("plans.bundle")
    importlib.import_module("workflows.compiler")

    import_s = time.perf_counter() - t0
    rss_before = _maxrss_mb()
    paths = [directory / "plan.yaml"]
    if trace:
        tracemalloc.start()
    t0 = time.perf_counter()
    report = pipeline.validate(paths)
    t1 = time.perf_counter()
    if report.bundle is None:
        raise SystemExit(f"the generated bundle is invalid: {report.problems[:3]}")
    # Serialising the compiled run is part of the cost: the engine stores it with the run.
    compiled = pipeline.compile_plan(report.bundle, plan)
    t2 = time.perf_counter()
    stored = json.dumps(compiled.run.to_json())
    t3 = time.perf_counter()
    peak = tracemalloc.get_traced_memory()[1] if trace else 0
    tracemalloc.stop()
    if trace:
        return {"tracemalloc_peak_mb": round(peak / 2**20, 1)}
    rss_compiled = _maxrss_mb()
    store = store_costs(report.bundle, plan, directory)
    return {
        **store,
        "peak_rss_with_store_mb": round(_maxrss_mb(), 1),
        "import_s": round(import_s, 4),
        "validate_s": round(t1 - t0, 4),
        "compile_s": round(t2 - t1, 4),
        "to_json_s": round(t3 - t2, 4),
        "validate_compile_s": round(t2 - t0, 4),
        "compiled_json_kb": round(len(stored) / 1024),
        "rss_before_mb": round(rss_before, 1),
        "peak_rss_mb": round(rss_compiled, 1),
        "warnings": len(report.problems),
        "stages": compiled.stages,
        "units": compiled.units,
        "steps": compiled.steps,
    }


def start_child(directory: Path, plan: str) -> dict[str, Any]:
    """What starting a run costs: validate, then ``Engine.start`` (compile, serialise, store
    write of the run and its step rows) into a fresh SQLite store, nothing dispatched.

    ``start_s`` is the sum, imports excluded (a running engine has them); ``peak_mb`` is the
    child's peak resident set (``ru_maxrss``), the interpreter and imports included.
    """
    importlib.import_module("plans.bundle")
    importlib.import_module("workflows.compiler")
    from workflows.engine import Engine
    from workflows.settings import Settings
    from workflows.store import Database

    database = directory / "start.db"
    database.unlink(missing_ok=True)
    settings = Settings(database_url=f"sqlite:///{database}")
    # Database creates the schema: it exists before the clock starts, as in a deployment
    engine = Engine(Database(settings.database_url), _NoDispatch(), settings)
    t0 = time.perf_counter()
    report = pipeline.validate([directory / "plan.yaml"])
    if report.bundle is None:
        raise SystemExit(f"the generated bundle is invalid: {report.problems[:3]}")
    t1 = time.perf_counter()
    engine.start(report.bundle, plan, "test", requested_by="bench")
    t2 = time.perf_counter()
    engine.db.dispose()
    return {
        "start_s": round(t2 - t0, 3),
        "validate_s": round(t1 - t0, 3),
        "engine_start_s": round(t2 - t1, 3),
        "peak_mb": round(_maxrss_mb(), 1),
    }


def measure_start(workdir: Path, shape: Shape = START_SHAPE) -> dict[str, Any]:
    """The realistic plan (``bench.plans.realistic_plan_document``) started in a child."""
    directory = workdir / f"start-{shape.vm_count}"
    write_realistic_bundle(directory, shape, placeholder_urls(shape))
    result = subprocess.run(
        [sys.executable, "-m", "bench.scale", "child", "start", str(directory)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    figures: dict[str, Any] = {
        "vms": shape.vm_count,
        "groups": shape.groups,
        "hosts_per_site": shape.hosts_per_site,
        "plan": "a DNS record per VM, a script and a health check per group, a gate every "
        "10 groups",
        "store": "sqlite (WAL file)",
    }
    if result.returncode != 0:
        figures["error"] = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return figures
    figures.update(json.loads(result.stdout.strip().splitlines()[-1]))
    return figures


class _NoDispatch:
    """A dispatcher that sends nothing: the store's costs are measured without Celery."""

    def dispatch(self, run_id: str, stage: Any) -> None:
        """Drop the stage."""


def store_costs(bundle: Any, plan: str, directory: Path) -> dict[str, Any]:
    """What the engine's store costs for a run of this size (SQLite file, no workers).

    ``store_start_s``: creating the run and its step rows (Engine.start). ``read_ms``: the
    read a unit makes before its first step (the run's status, the step, the VM's earlier
    results: :func:`repository.read_to_run`). ``compiled_ms``: the compiled run a unit
    needs, from the process's cache (decoded once per run per process). ``decode_ms``: that
    one decode, loading the run row and rebuilding the CompiledRun. Flat columns across
    sizes mean a step costs the same in a small run and a large one.
    """
    from workflows.cache import CompiledRuns
    from workflows.engine import Engine
    from workflows.settings import Settings
    from workflows.store import Database, repository

    database = directory / "store.db"
    database.unlink(missing_ok=True)
    settings = Settings(database_url=f"sqlite:///{database}")
    engine = Engine(Database(settings.database_url), _NoDispatch(), settings)
    t0 = time.perf_counter()
    run = engine.start(bundle, plan, "test", requested_by="bench")
    t1 = time.perf_counter()
    with engine.db.session() as session:
        steps = repository.steps_of(session, run_id=run.id)
    # units spread over the run, each read in a fresh session as a worker does
    picks = [(step.key, step.vm) for step in steps[:: max(1, len(steps) // 50)][:50]]
    del steps
    t2 = time.perf_counter()
    for key, vm in picks:
        with engine.db.session() as session:
            repository.read_to_run(session, run_id=run.id, key=key, vm=vm)
    t3 = time.perf_counter()
    cache = CompiledRuns()
    with engine.db.session() as session:
        cache.get(session, run.id)  # the one decode
    t4 = time.perf_counter()
    for _ in picks:
        with engine.db.session() as session:
            cache.get(session, run.id)
    t5 = time.perf_counter()
    engine.db.dispose()
    return {
        "store_start_s": round(t1 - t0, 4),
        "read_ms": round((t3 - t2) / len(picks) * 1000, 2),
        "decode_ms": round((t4 - t3) * 1000, 2),
        "compiled_ms": round((t5 - t4) / len(picks) * 1000, 3),
    }


def measure_size(groups: int, vms_per_group: int, workdir: Path) -> dict[str, Any]:
    """Generate a plan of ``groups`` x ``vms_per_group`` and measure it in a child process."""
    shape = Shape(groups, vms_per_group)
    directory = workdir / f"scale-{shape.vm_count}"
    write_bundle(directory, shape, placeholder_urls(shape))
    figures: dict[str, Any] = {"vms": shape.vm_count, "groups": groups, "per_group": vms_per_group}
    for mode in ("time", "trace"):
        result = subprocess.run(
            [sys.executable, "-m", "bench.scale", "child", mode, str(directory)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if result.returncode != 0:
            figures["error"] = (result.stderr.strip().splitlines() or ["no output"])[-1]
            return figures
        figures.update(json.loads(result.stdout.strip().splitlines()[-1]))
    figures["per_vm_ms"] = round(figures["validate_compile_s"] / shape.vm_count * 1000, 4)
    return figures


def end_to_end(shape: Shape, *, concurrency: int, timeout: float) -> dict[str, Any]:
    """Run the plan on the lab at zero latency; seconds, or how far it got by ``timeout``."""
    from bench.engine import ferryman, ferryman_env
    from bench.overhead import FERRYMAN_DB, lab_for, urls_of
    from bench.services import CpuMeter, redis_server

    with (
        tempfile.TemporaryDirectory(prefix="ferryman-bench-") as tmp,
        redis_server() as server,
        lab_for(shape) as lab,
    ):
        workdir = Path(tmp)
        plan_file = write_bundle(workdir / "e2e", shape, urls_of(lab))
        env = ferryman_env(
            server, workdir, db=FERRYMAN_DB, password=lab.password, database_url=None
        )
        with ferryman(env, concurrency=concurrency, log_dir=workdir) as harness:
            lab.calls.clear()
            run_id, started = harness.start(plan_file, "bench")
            # the lab runs in this process (its server threads), from here on with only the
            # run's follow loop beside it in this thread (a read of the store every few hundred
            # ms, and a count of the run's steps by status every 2 s, which grows with the run):
            # the lab's CPU is the process's less this thread's
            meter = CpuMeter({}, this_process="lab")
            follow_cpu_s = time.thread_time()
            timing = harness.follow(run_id, started, timeout=timeout)
            follow_cpu_s = time.thread_time() - follow_cpu_s
            process_cpu_s = meter.read()["lab"]
            lab_cpu_s = process_cpu_s - follow_cpu_s
            calls = len(lab.calls.calls())
            worker_rss_mb = settled_rss_mb(harness.worker_pids)
            done, total = harness.progress(timing.run_id)
    figures: dict[str, Any] = {
        "vms": shape.vm_count,
        "status": timing.status,
        "calls": calls,
        "lab_cpu_ms_per_call": round(lab_cpu_s / calls * 1000, 3) if calls else None,
        "process_cpu_ms_per_call": round(process_cpu_s / calls * 1000, 3) if calls else None,
        "follow_cpu_s": round(follow_cpu_s, 3),
        "worker_rss_mb": round(worker_rss_mb, 1),
    }
    if timing.status == "succeeded":
        figures["e2e_s"] = round(timing.recorded_s, 2)
        figures["per_vm_ms"] = round(timing.recorded_s / shape.vm_count * 1000, 1)
    else:
        figures["steps_done"] = f"{done} of {total} in {timeout:g} s"
    return figures


def run(
    *, quick: bool, workdir: Path | None = None, e2e_cap: float = 1200, concurrency: int = 16
) -> dict[str, Any]:
    """Measure every size; returns ``{"sizes": [...], "compile_5000_s": ..., ...}``."""
    reason = pipeline.available()
    if reason is not None:
        return {"skipped": f"validate/compile cannot run: {reason}"}
    with tempfile.TemporaryDirectory(prefix="ferryman-bench-") as tmp:
        base = workdir or Path(tmp)
        sizes = [measure_size(g, m, base) for g, m in SIZES]
        start = measure_start(base)
    out: dict[str, Any] = {"sizes": sizes, "start_5000": start}
    if "error" in start:
        out["error_start_5000"] = start["error"]
    else:
        out["start_5000_s"] = start["start_s"]
        out["start_peak_mb_5000"] = start["peak_mb"]
    largest = sizes[-1]
    if "error" in largest:
        out["error_5000"] = largest["error"]
    else:
        out["compile_5000_s"] = largest["validate_compile_s"]
        out["peak_mb_5000"] = largest["peak_rss_mb"]
        out["tracemalloc_mb_5000"] = largest["tracemalloc_peak_mb"]
    good = [s for s in sizes if "error" not in s]
    out["summary"] = [
        f"start of the realistic 5,000-VM plan (validate, compile, store write): "
        f"{start.get('start_s', start.get('error'))} s, peak {start.get('peak_mb')} MB "
        f"(validate {start.get('validate_s')} s, Engine.start {start.get('engine_start_s')} s)",
        "validate+compile ms/VM: " + ", ".join(f"{s['vms']}: {s['per_vm_ms']}" for s in good),
        "store ms per unit (first read / cached compiled run; the run's one decode): "
        + ", ".join(
            f"{s['vms']}: {s['read_ms']}/{s['compiled_ms']}; {s['decode_ms']}" for s in good
        ),
    ]
    if not quick:
        out["settings"] = {"e2e_worker_concurrency": concurrency, "e2e_cap_s": e2e_cap}
        growth = end_to_end_growth(SIZES, e2e_cap=e2e_cap, concurrency=concurrency)
        out["summary"] += growth.pop("summary")
        out.update(growth)
    return out


def end_to_end_growth(
    sizes: tuple[tuple[int, int], ...], *, e2e_cap: float = 1200, concurrency: int = 16
) -> dict[str, Any]:
    """The end-to-end runs of full mode alone (``--e2e``): each size on the lab in a fresh
    worker, ``worker_rss_growth_1k_5k`` and the lab's CPU per call."""
    out: dict[str, Any] = {
        "settings": {"e2e_worker_concurrency": concurrency, "e2e_cap_s": e2e_cap},
        "e2e": [
            end_to_end(Shape(g, m), concurrency=concurrency, timeout=e2e_cap) for g, m in sizes
        ],
    }
    out.update(growth_figures(out["e2e"]))
    out["summary"] = [
        "end to end: "
        + ", ".join(f"{e['vms']}: {e.get('e2e_s', e.get('steps_done'))}" for e in out["e2e"]),
        f"worker RSS after the 5,000-VM run / after the 1,000-VM run: "
        f"{out.get('worker_rss_growth_1k_5k')}; lab CPU per call 1k / 5k: "
        f"{out.get('lab_cpu_ms_per_call_1k')} / {out.get('lab_cpu_ms_per_call_5k')} ms",
    ]
    return out


def rss_mb(pid: int) -> float:
    """A process's resident set now (``VmRSS``), in MB; 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def settled_rss_mb(
    pids: list[int], *, interval: float = 0.5, timeout: float = 5.0, within: float = 0.5
) -> float:
    """The processes' resident set summed once it stops moving (two reads ``interval`` apart
    within ``within`` MB), or the last read after ``timeout``.

    A worker gives a run's freed memory back (``malloc_trim``) just after the run's end is
    committed, which is when a follow loop sees the run finished: one read at that moment
    may come before it.
    """
    last = sum(rss_mb(pid) for pid in pids)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(interval)
        now = sum(rss_mb(pid) for pid in pids)
        if abs(now - last) <= within:
            return now
        last = now
    return last


def growth_figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """``worker_rss_growth_1k_5k`` (the worker's resident set after the 5,000-VM run over that
    after the 1,000-VM run, each in a fresh worker) and ``lab_cpu_ms_per_call_1k``/``_5k``,
    from the end-to-end runs that succeeded."""
    done = {run["vms"]: run for run in runs if run.get("status") == "succeeded"}
    out: dict[str, Any] = {}
    small, large = done.get(1000), done.get(5000)
    if small and large and small.get("worker_rss_mb"):
        out["worker_rss_growth_1k_5k"] = round(large["worker_rss_mb"] / small["worker_rss_mb"], 2)
    for vms, suffix in ((1000, "1k"), (5000, "5k")):
        if vms in done and done[vms].get("lab_cpu_ms_per_call") is not None:
            out[f"lab_cpu_ms_per_call_{suffix}"] = done[vms]["lab_cpu_ms_per_call"]
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.scale [--quick | --start | --e2e]`` or the child mode ``child DIR``."""
    args = sys.argv[1:] if argv is None else argv
    if args[:2] == ["child", "start"]:
        print(json.dumps(start_child(Path(args[2]), "bench")))
        return 0
    if args[:1] == ["child"]:
        figures = child(Path(args[2]), "bench", trace=args[1] == "trace")
        print(json.dumps(figures))
        return 0
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--start",
        action="store_true",
        help="only the start of the realistic 5,000-VM plan (start_5000_s, start_peak_mb_5000)",
    )
    parser.add_argument(
        "--e2e",
        action="store_true",
        help="only the end-to-end runs of 1,000 and 5,000 VMs on the lab, a fresh worker each "
        "(worker_rss_growth_1k_5k, lab_cpu_ms_per_call_1k/_5k)",
    )
    options = parser.parse_args(args)
    if options.e2e:
        print(json.dumps(end_to_end_growth(SIZES[1:]), indent=2))
        return 0
    if options.start:
        with tempfile.TemporaryDirectory(prefix="ferryman-bench-") as tmp:
            print(json.dumps(measure_start(Path(tmp)), indent=2))
        return 0
    print(json.dumps(run(quick=options.quick), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
