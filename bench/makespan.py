"""Makespan vs critical path: how much of a recovery's time the orchestrator adds.

The lab gets a fixed latency on every cmdlet and a boot time for every guest; Ferryman runs a
test failover of G groups x M VMs. A perfect orchestrator would run each VM's calls back to
back, all VMs of a group at once, and start group g+1 the moment group g is up, so

    critical path = sum over groups of
                    (the calls a test failover needs, up to and including Start-VM) x latency
                    + boot

The calls a failover needs are :data:`NECESSARY_CALLS` (listed in bench/README.md): whatever
an orchestrator does, it must make these, one after the other, for every VM; a read of its own
(to check state, to make a step idempotent) is not among them and counts against the ratio.
The IP wait counts as the boot time alone: a perfect orchestrator's read finds the address the
moment the guest reports it. The bound the calls really made imply (every call up to Start-VM,
plus boot and one address read) stays in the JSON as ``made_calls_path_s``.

The lab's record also gives the explanation when the ratio is high: how many calls ran at once
on one host at most (1 means they were serialised), the bound that serialising every call on
a host implies, and the gap between one group's last call and the next group's first.

Run alone: ``python -m bench.makespan [--quick]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC
from pathlib import Path
from typing import Any

from bench import bare, pipeline
from bench.calls import Call, CallLog
from bench.engine import ferryman, ferryman_env
from bench.overhead import (
    FERRYMAN_DB,
    bare_worker,
    host_refs,
    lab_for,
    redis_pid,
    time_bare,
    urls_of,
)
from bench.plans import PLAN_NAME, Shape, write_bundle
from bench.services import CpuMeter, LoadSampler, redis_server
from workers.hyperv.pool import MAX_SHELLS_PER_USER
from workers.hyperv.psrp import SESSIONS_PER_HOST_VARIABLE

LATENCY = 0.1  # seconds per cmdlet
SLOW_LATENCY = 0.5  # the full run's second measurement: the calls' CPU no longer fills the cores
BOOT = 1.0  # real seconds from Start-VM until the guest reports its address
TIME_SCALE = 0.01  # real seconds per lab second; boot_seconds = BOOT / TIME_SCALE
STAGE_ALLOWANCE = 0.05  # the target's fixed allowance per stage (seconds)
TARGETS = {LATENCY: 1.20, SLOW_LATENCY: 1.08}  # issue 19.2: makespan / critical path

# The PowerShell calls a failover of each type needs per VM up to and including Start-VM, in
# order (cmdlet, switch or parameter that makes it this action). The address read that ends the
# IP wait is not listed: it counts as boot time.
NECESSARY_CALLS: dict[str, tuple[str, ...]] = {
    "test": ("Start-VMFailover -AsTest", "Connect-VMNetworkAdapter", "Start-VM"),
    "planned": (
        "Stop-VM (primary)",
        "Start-VMFailover -Prepare (primary)",
        "Start-VMFailover (replica)",
        "Set-VMReplication -Reverse (replica)",
        "Connect-VMNetworkAdapter",
        "Start-VM",
    ),
    "unplanned": (
        "Stop-VM (primary, best effort)",
        "Start-VMFailover (replica)",
        "Connect-VMNetworkAdapter",
        "Start-VM",
    ),
}


def _group_of(shape: Shape) -> dict[str, int]:
    return {vm: g for g, names in enumerate(shape.groups_of_names()) for vm in names}


def critical_path(
    shape: Shape, calls: CallLog, latency: float, boot: float, failover_type: str = "test"
) -> dict[str, Any]:
    """The perfect orchestrator's makespan and what it is made of (see module docstring).

    ``critical_path_s`` counts the necessary calls only; ``made_calls_path_s`` is the bound
    the calls the run really made imply (each VM's calls up to Start-VM, boot, one read).
    """
    necessary = len(NECESSARY_CALLS[failover_type])
    per_vm = calls.per_vm()
    group_of = _group_of(shape)
    worst: dict[int, float] = defaultdict(float)
    before_start: list[int] = []
    for vm, vm_calls in per_vm.items():
        names = [c.cmdlet for c in vm_calls]
        upto = names.index("Start-VM") + 1 if "Start-VM" in names else len(names)
        before_start.append(upto)
        worst[group_of[vm]] = max(worst[group_of[vm]], upto * latency + boot + latency)
    return {
        "critical_path_s": round(shape.groups * (necessary * latency + boot), 3),
        "necessary_calls_before_boot": necessary,
        "made_calls_path_s": round(sum(worst.values()), 3),
        "calls_before_start_vm": sorted(set(before_start)),
    }


def host_concurrency(calls: list[Call]) -> dict[str, int]:
    """The most calls the lab ran at the same moment, per host."""
    events: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for call in calls:
        events[call.host] += [(call.start, 1), (call.end, -1)]
    peaks = {}
    for host, points in events.items():
        running = peak = 0
        for _, delta in sorted(points, key=lambda p: (p[0], p[1])):
            running += delta
            peak = max(peak, running)
        peaks[host] = peak
    return peaks


def serial_bound(shape: Shape, calls: CallLog, latency: float) -> float:
    """The makespan if each host ran one call at a time: per group, the busiest host's calls."""
    group_of = _group_of(shape)
    per_group_host: dict[tuple[int, str], int] = defaultdict(int)
    for vm, vm_calls in calls.per_vm().items():
        for call in vm_calls:
            per_group_host[(group_of[vm], call.host)] += 1
    busiest: dict[int, int] = defaultdict(int)
    for (group, _host), count in per_group_host.items():
        busiest[group] = max(busiest[group], count)
    return round(sum(busiest.values()) * latency, 3)


def stage_gaps(shape: Shape, calls: CallLog) -> list[float]:
    """Seconds between a group's last call and the next group's first call."""
    group_of = _group_of(shape)
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    for vm, vm_calls in calls.per_vm().items():
        g = group_of[vm]
        first[g] = min(first.get(g, vm_calls[0].start), vm_calls[0].start)
        last[g] = max(last.get(g, vm_calls[-1].end), vm_calls[-1].end)
    return [round(first[g + 1] - last[g], 3) for g in range(shape.groups - 1) if g + 1 in first]


def breakdown(shape: Shape, calls: CallLog) -> dict[str, Any]:
    """Where a VM's time went, medians over VMs (seconds).

    ``vm_span``: first call's start to last call's end. ``call_gap``: between one call's end
    and the VM's next call's start, before Start-VM (client-side work and waiting for a
    runspace or a worker slot). ``ip_wait``: Start-VM's end to the end of the read that found
    the address (the boot time is the least it can be). ``group_span``: a group's first
    call to its last.
    """
    vm_spans, gaps, ip_waits = [], [], []
    for vm_calls in calls.per_vm().values():
        vm_spans.append(vm_calls[-1].end - vm_calls[0].start)
        names = [c.cmdlet for c in vm_calls]
        upto = names.index("Start-VM") if "Start-VM" in names else len(names) - 1
        gaps += [b.start - a.end for a, b in itertools.pairwise(vm_calls[: upto + 1])]
        if "Start-VM" in names:
            ip_waits.append(vm_calls[-1].end - vm_calls[upto].end)
    group_of = _group_of(shape)
    spans: dict[int, list[float]] = defaultdict(list)
    for vm, vm_calls in calls.per_vm().items():
        spans[group_of[vm]] += [vm_calls[0].start, vm_calls[-1].end]
    group_spans = [max(v) - min(v) for v in spans.values()]
    return {
        "vm_span_s": _median(vm_spans),
        "call_gap_ms": round(_median(gaps) * 1000, 1),
        "call_gap_max_ms": round(max(gaps, default=0) * 1000, 1),
        "ip_wait_s": _median(ip_waits),
        "group_span_s": _median(group_spans),
    }


def group_figures(shape: Shape, calls: CallLog) -> list[dict[str, Any]]:
    """Per group (seconds): its span (first call to last), its VMs' median and longest span,
    the slowest VM, and what made it slow: its calls up to Start-VM (``to_start_s``) and its
    IP wait (Start-VM's end to the last call's). A group lasts as long as its slowest VM, so
    ``straggle_s`` (span - median VM span) is what the stragglers cost it."""
    group_of = _group_of(shape)
    per_group: dict[int, list[tuple[str, list[Call]]]] = defaultdict(list)
    for vm, vm_calls in calls.per_vm().items():
        per_group[group_of[vm]].append((vm, vm_calls))
    out = []
    for group in sorted(per_group):
        members = per_group[group]
        start = min(c[0].start for _, c in members)
        end = max(c[-1].end for _, c in members)
        spans = {vm: c[-1].end - c[0].start for vm, c in members}
        slowest, slowest_calls = max(members, key=lambda m: m[1][-1].end)
        names = [c.cmdlet for c in slowest_calls]
        upto = names.index("Start-VM") if "Start-VM" in names else len(names) - 1
        out.append(
            {
                "span_s": round(end - start, 3),
                "vm_span_median_s": _median(list(spans.values())),
                "vm_span_max_s": round(max(spans.values()), 3),
                "straggle_s": round(end - start - statistics.median(spans.values()), 3),
                "slowest_vm": slowest,
                "slowest_starts_after_s": round(slowest_calls[0].start - start, 3),
                "slowest_to_start_s": round(slowest_calls[upto].end - slowest_calls[0].start, 3),
                "slowest_ip_wait_s": round(slowest_calls[-1].end - slowest_calls[upto].end, 3),
            }
        )
    return out


def outside_calls(calls: CallLog, started: float, finished: float) -> dict[str, float]:
    """Seconds of the run before its first call (``lead_s``: starting the run, dispatching,
    opening sessions) and after its last (``tail_s``: recording the last steps, the last
    stage's end, the run's end); ``started``/``finished`` on the calls' monotonic clock."""
    recorded = calls.calls()
    if not recorded:
        return {}
    first = min(c.start for c in recorded)
    last = max(c.end for c in recorded)
    return {
        "lead_s": round(first - started, 3),
        "calls_span_s": round(last - first, 3),
        "tail_s": round(finished - last, 3),
    }


def load_sampler(worker_pids: list[int]) -> LoadSampler:
    """Samples the machine's load and that of the workers and the lab (this process)."""
    return LoadSampler({"workers": worker_pids}, this_process="lab")


def _load_text(load: dict[str, Any]) -> str:
    """``machine 53% of all cores (peak 68%); workers 0.45 cores (peak 1.01, 12% of the time
    at 0.9 or more); ...``."""
    if not load:
        return "not sampled"
    parts = []
    for name, figures in load.items():
        if name == "machine":
            parts.append(
                f"machine {figures['mean']:.0%} of all cores (peak {figures['peak_1s']:.0%})"
            )
        else:
            parts.append(
                f"{name} {figures['mean']:.2f} cores (peak {figures['peak_1s']:.2f}, "
                f"{figures['busy_share']:.0%} of the time at 0.9 or more)"
            )
    return "; ".join(parts)


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3) if values else 0.0


def sessions_for(shape: Shape) -> int:
    """PSRP sessions per host that let every VM of a group on one host call at once.

    The critical path assumes a group's VMs all run together; the adapter's session cache
    (``FERRYMAN_PSRP_SESSIONS_PER_HOST``, default 8) would otherwise queue the calls of a
    group with more VMs on one host, and the benchmark would measure that setting rather
    than the orchestrator. Capped at WinRM's MaxShellsPerUser.
    """
    per_host = -(-shape.vms_per_group // shape.hosts_per_site)
    return max(1, min(per_host, MAX_SHELLS_PER_USER))


def bare_makespan(
    shape: Shape,
    server: Any,
    workdir: Path,
    *,
    latency: float,
    threads: int,
    processes: int,
    timeout: float,
) -> dict[str, Any]:
    """The same shape on its own slow lab through bare Celery (``bench.bare``): what the
    adapter and Celery allow without Ferryman's store and executors."""
    env = {SESSIONS_PER_HOST_VARIABLE: str(sessions_for(shape))}
    with (
        lab_for(shape, latency=latency, time_scale=TIME_SCALE) as lab,
        bare_worker(
            server,
            concurrency=threads,
            password=lab.password,
            log_dir=workdir,
            env=env,
            processes=processes,
        ) as worker,
    ):
        app = worker.app
        stages = bare.vm_stages(shape.groups_of_names(), host_refs(shape, lab))
        lab.calls.clear()
        meter = cpu_meter(worker.pids, server)
        with load_sampler(worker.pids) as load:
            began = time.monotonic()
            seconds = time_bare(app, bare.VM, stages, timeout)
        cpu = meter.read()
        figures: dict[str, Any] = {"makespan_s": round(seconds, 3)}
        figures["outside_calls"] = outside_calls(lab.calls, began, began + seconds)
        figures.update(critical_path(shape, lab.calls, latency, BOOT))
        figures["calls_per_vm"] = round(lab.calls.calls_per_vm(), 2)
        figures["breakdown"] = breakdown(shape, lab.calls)
        figures.update(cpu_figures(cpu, len(lab.calls.calls())))
        figures["machine_load"] = load.figures()
    figures["makespan_ratio"] = round(seconds / figures["critical_path_s"], 2)
    return figures


def _recorded_window(harness: Any, run_id: str) -> tuple[float, float] | None:
    """The run's recorded start and end (the makespan's ends) on this process's monotonic
    clock, which the lab's call log uses."""
    from workflows.store import repository

    with harness.runtime.db.session() as session:
        run = repository.get_run(session, run_id=run_id, with_inputs=False)
        started, finished = run.started_at or run.created_at, run.finished_at
    if started is None or finished is None:
        return None
    offset = time.time() - time.monotonic()

    def mono(moment: Any) -> float:
        aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        return float(aware.timestamp() - offset)

    return mono(started), mono(finished)


def cpu_meter(worker_pids: list[int], server: Any) -> CpuMeter:
    """CPU of the workers, Redis and the lab (this process) from now on."""
    return CpuMeter({"workers": worker_pids, "redis": [redis_pid(server)]}, this_process="lab")


def cpu_figures(cpu: dict[str, float], calls: int) -> dict[str, Any]:
    """What the run's calls cost in CPU, and the makespan that CPU alone implies.

    Every PowerShell call costs CPU in the client (pypsrp: XML, serialisation, HTTP,
    NTLM sealing) and in the lab, which on this machine share its cores with everything else.
    ``cpu_bound_s`` = all of it / cores: no orchestrator finishes sooner, whatever the
    latencies; a makespan close to it is CPU-bound, not waiting on the orchestrator.
    """
    total = sum(cpu.values())
    return {
        "cpu_s": cpu,
        "cpu_ms_per_call": {name: round(seconds / calls * 1000, 2) for name, seconds in cpu.items()}
        if calls
        else {},
        "cpu_bound_s": round(total / (os.cpu_count() or 1), 3),
    }


def measure(
    shape: Shape, latency: float, *, threads: int, processes: int, timeout: float
) -> dict[str, Any]:
    """Ferryman and bare Celery on the slow lab at ``latency`` s per cmdlet."""
    per_group = shape.vm_count // shape.groups
    out: dict[str, Any] = {"latency_ms": latency * 1000}
    with (
        tempfile.TemporaryDirectory(prefix="ferryman-bench-") as tmp,
        redis_server() as server,
        lab_for(shape, latency=latency, time_scale=TIME_SCALE) as lab,
    ):
        workdir = Path(tmp)
        out["bare"] = bare_makespan(
            shape,
            server,
            workdir,
            latency=latency,
            threads=threads,
            processes=processes,
            timeout=timeout,
        )
        plan_file = write_bundle(workdir / "makespan", shape, urls_of(lab))
        env = ferryman_env(
            server, workdir, db=FERRYMAN_DB, password=lab.password, database_url=None
        )
        env[SESSIONS_PER_HOST_VARIABLE] = str(sessions_for(shape))
        with ferryman(env, concurrency=threads, workers=processes, log_dir=workdir) as harness:
            lab.calls.clear()
            meter = cpu_meter(harness.worker_pids, server)
            with load_sampler(harness.worker_pids) as load:
                timing = harness.run(plan_file, PLAN_NAME, timeout=timeout)
            cpu = meter.read()
            window = _recorded_window(harness, timing.run_id)
        calls = lab.calls
        out["status"] = timing.status
        if timing.status != "succeeded":
            out["error"] = f"the run ended {timing.status}: {timing.error[:300]}"
            return out
        out["makespan_s"] = round(timing.recorded_s, 3)
        out.update(critical_path(shape, calls, latency, BOOT))
        out["calls_per_vm"] = round(calls.calls_per_vm(), 2)
        out["cmdlets"] = calls.cmdlet_counts()
        out["max_concurrent_calls_per_host"] = host_concurrency(calls.calls())
        out["host_serial_bound_s"] = serial_bound(shape, calls, latency)
        out["breakdown"] = breakdown(shape, calls)
        out.update(cpu_figures(cpu, len(calls.calls())))
        out["machine_load"] = load.figures()
        gaps = stage_gaps(shape, calls)
        out["stage_gap_s"] = {"min": min(gaps), "max": max(gaps)} if gaps else {}
        out["outside_calls"] = outside_calls(calls, *window) if window else {}
        out["groups"] = group_figures(shape, calls)
    critical = out["critical_path_s"]
    out["makespan_ratio"] = round(out["makespan_s"] / critical, 2)
    out["target_ratio"] = TARGETS.get(latency)
    target = (out["target_ratio"] or 1.0) * critical
    out["target_s"] = round(target, 3)
    out["meets_target"] = out["makespan_s"] <= target
    out["summary"] = [
        f"{shape.groups}x{per_group} VMs, {latency * 1000:g} ms/cmdlet, boot {BOOT:g} s: "
        f"makespan {out['makespan_s']} s vs critical path {critical} s (ratio "
        f"{out['makespan_ratio']}, target {out['target_ratio']}; the calls made imply "
        f"{out['made_calls_path_s']} s); one-call-per-host bound {out['host_serial_bound_s']} s; "
        f"peak concurrent calls per host {max(out['max_concurrent_calls_per_host'].values())}",
        f"  bare Celery, same adapter and lab: {out['bare']['makespan_s']} s "
        f"({out['bare']['makespan_ratio']}x its critical path {out['bare']['critical_path_s']} s)",
        f"  CPU per call (ms): {out['cpu_ms_per_call']}; all the run's CPU over "
        f"{os.cpu_count()} cores: {out['cpu_bound_s']} s (bare: {out['bare']['cpu_bound_s']} s)",
        "  load: " + _load_text(out["machine_load"]),
        "  load, bare: " + _load_text(out["bare"]["machine_load"]),
        "  medians: VM span {vm_span_s} s, gap between a VM's calls {call_gap_ms} ms, "
        "Start-VM to address {ip_wait_s} s (boot {boot} s), group span {group_span_s} s".format(
            boot=BOOT, **out["breakdown"]
        ),
        "  outside the calls: {lead} s before the first, {tail} s after the last; stragglers "
        "cost the groups {straggle} s in all; stage gaps {gaps} s in all".format(
            lead=out["outside_calls"].get("lead_s"),
            tail=out["outside_calls"].get("tail_s"),
            straggle=round(sum(g["straggle_s"] for g in out["groups"]), 3),
            gaps=round(sum(gaps), 3),
        ),
    ]
    return out


def run(
    *,
    quick: bool,
    concurrency: int | None = None,
    timeout: float = 1800,
    latencies: tuple[float, ...] | None = None,
    processes: int = 1,
) -> dict[str, Any]:
    """Run the plan on the slow lab and compare its makespan with the critical path.

    The headline is the first latency (100 ms); every run also measures
    :data:`SLOW_LATENCY` (``makespan_ratio_500ms``), where the calls' CPU no longer fills the
    machine's cores, to show the orchestrator's share apart from the machine's. Each latency
    runs bare Celery (the calls it needs) and Ferryman in the same run.
    """
    reason = pipeline.available()
    if reason is not None:
        return {"skipped": f"the engine cannot run: {reason}"}
    shape = Shape(5, 20, boot_seconds=BOOT / TIME_SCALE)
    if not quick:
        shape = Shape(10, 100, boot_seconds=BOOT / TIME_SCALE)
    latencies = latencies or (LATENCY, SLOW_LATENCY)
    per_group = shape.vm_count // shape.groups
    # enough slots over all worker processes that the pool never limits a group
    threads = concurrency or -(-per_group // processes)
    settings = {
        "groups": shape.groups,
        "vms_per_group": per_group,
        "vms": shape.vm_count,
        "hosts_per_site": shape.hosts_per_site,
        "latencies_ms": [latency * 1000 for latency in latencies],
        "boot_s": BOOT,
        "worker_concurrency": threads,
        "worker_pool": "threads",
        "worker_processes": processes,
        "psrp_sessions_per_host": sessions_for(shape),
        "failover_type": "test",
        "store": "sqlite (WAL)",
    }
    runs = [
        measure(shape, latency, threads=threads, processes=processes, timeout=timeout)
        for latency in latencies
    ]
    # the headline (top-level figures) is the first latency's run; every run is under "runs"
    out: dict[str, Any] = {"settings": settings, **runs[0], "runs": runs[1:]}
    out["bare_makespan_ratio"] = runs[0].get("bare", {}).get("makespan_ratio")
    for extra in runs[1:]:
        if extra.get("latency_ms") == SLOW_LATENCY * 1000 and "makespan_ratio" in extra:
            out["makespan_ratio_500ms"] = extra["makespan_ratio"]
            out["bare_makespan_ratio_500ms"] = extra["bare"]["makespan_ratio"]
    out["summary"] = [line for run in runs for line in run.get("summary", [run.get("error")])]
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.makespan [--quick]``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--latency", type=float, action="append", help="seconds per cmdlet (repeatable)"
    )
    parser.add_argument("--processes", type=int, default=1, help="worker processes per side")
    options = parser.parse_args(argv)
    latencies = tuple(options.latency) if options.latency else None
    result = run(quick=options.quick, latencies=latencies, processes=options.processes)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
