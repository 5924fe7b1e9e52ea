"""The driver behind ``bench/run``: runs the benchmarks, prints the table, writes the JSON."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
NAMES = ("failovers", "client", "scale", "overhead", "makespan", "concurrency")

# The figures latest.json always carries at its top level (None when not measured).
HEADLINE = (
    "calls_per_vm_test",
    "calls_per_vm_planned",
    "calls_per_vm_unplanned",
    "makespan_ratio",
    "bare_makespan_ratio",
    "makespan_ratio_500ms",
    "bare_makespan_ratio_500ms",
    "client_cpu_ms_per_call",
    "engine_cpu_ms_per_step",
    "engine_cpu_ms_per_step_spread",
    "start_5000_s",
    "start_peak_mb_5000",
    "overhead_ms_per_step",
    "overhead_cpu_ms_per_step",
    "compile_5000_s",
    "peak_mb_5000",
    "concurrent_plans_ok",
    # full mode only (bench.scale's end-to-end runs)
    "worker_rss_growth_1k_5k",
    "lab_cpu_ms_per_call_1k",
    "lab_cpu_ms_per_call_5k",
)


def _runner(name: str) -> Callable[..., dict[str, Any]]:
    # Imported on use: a benchmark whose dependencies are missing must not stop the others.
    module = __import__(f"bench.{name}", fromlist=["run"])
    return module.run


def run_one(name: str, quick: bool, profile: bool = False) -> dict[str, Any]:
    """Run one benchmark; an exception becomes ``{"error": ...}`` with the traceback's tail."""
    started = time.monotonic()
    options: dict[str, Any] = {"quick": quick}
    if profile and name == "overhead":
        options["profile"] = True
    try:
        result = _runner(name)(**options)
    except Exception as exc:
        tail = traceback.format_exc().strip().splitlines()[-6:]
        result = {"error": f"{type(exc).__name__}: {exc}", "traceback": tail}
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    return result


def machine() -> dict[str, Any]:
    """What the figures were taken on."""
    load = os.getloadavg()
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_1m_at_start": round(load[0], 2),
    }


def collect(results: dict[str, dict[str, Any]], quick: bool) -> dict[str, Any]:
    """The JSON document: headline figures, why any is missing, and every section in full."""
    document: dict[str, Any] = {
        "taken_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if quick else "full",
        "machine": machine(),
    }
    not_run: dict[str, str] = {}
    for key in HEADLINE:
        document[key] = None
    for name, result in results.items():
        reason = result.get("skipped") or result.get("error")
        if reason:
            not_run[name] = str(reason)
        for key in HEADLINE:
            if key in result and result[key] is not None:
                document[key] = result[key]
    document["not_run"] = not_run
    document["benchmarks"] = results
    return document


def table(document: dict[str, Any]) -> str:
    """The headline figures against their targets, and what did not run."""
    rows = [
        ("PowerShell calls per VM, test", "calls_per_vm_test", "<= 5"),
        ("PowerShell calls per VM, planned", "calls_per_vm_planned", "<= 10"),
        ("PowerShell calls per VM, unplanned", "calls_per_vm_unplanned", "<= 7"),
        ("makespan / critical path, 100 ms", "makespan_ratio", "<= 1.20"),
        ("  bare Celery, same run", "bare_makespan_ratio", ""),
        ("makespan / critical path, 500 ms", "makespan_ratio_500ms", "<= 1.08"),
        ("  bare Celery, same run", "bare_makespan_ratio_500ms", ""),
        ("client CPU per call (ms, NTLM)", "client_cpu_ms_per_call", "<= 2.5"),
        ("engine CPU per VM-step (ms)", "engine_cpu_ms_per_step", "<= 1.5 (PostgreSQL)"),
        ("engine overhead per VM-step", "overhead_ms_per_step", "<= 3 ms beyond bare Celery"),
        ("start a realistic 5,000-VM plan (s)", "start_5000_s", "< 2 s"),
        ("  its peak RSS (MB)", "start_peak_mb_5000", "< 300 MB"),
        ("validate+compile 5,000 VMs", "compile_5000_s", "< 2 s"),
        ("peak RSS 5,000 VMs (MB)", "peak_mb_5000", "< 300 MB"),
        ("20 concurrent plans succeeded", "concurrent_plans_ok", "true"),
        ("worker RSS after 5k / after 1k VMs", "worker_rss_growth_1k_5k", "<= 1.2 (full)"),
        ("lab CPU per call, 1k VMs (ms)", "lab_cpu_ms_per_call_1k", "within 10% of 5k (full)"),
        ("lab CPU per call, 5k VMs (ms)", "lab_cpu_ms_per_call_5k", "(full)"),
    ]
    lines = [f"{'figure':34} {'value':>12}  target", "-" * 72]
    for label, key, target in rows:
        value = document.get(key)
        shown = "not run" if value is None else str(value)
        lines.append(f"{label:34} {shown:>12}  {target}")
    details = document["benchmarks"]
    for name, result in details.items():
        for line in result.get("summary", []):
            lines.append(f"  {name}: {line}")
    if document["not_run"]:
        lines.append("")
        lines.append("not run or failed:")
        for name, reason in document["not_run"].items():
            lines.append(f"  {name}: {reason}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run, print, write; exit 0 even when a benchmark could not run."""
    parser = argparse.ArgumentParser(
        prog="bench/run",
        description="Run Ferryman's benchmarks, print a table of figures against their targets "
        "and write bench/results/latest.json. Benchmarks are not tests.",
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes; under 5 minutes")
    parser.add_argument("--only", default=",".join(NAMES), help="comma-separated benchmarks")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    parser.add_argument(
        "--profile", action="store_true", help="sample the workers of the overhead runs (py-spy)"
    )
    options = parser.parse_args(argv)
    names = [n.strip() for n in options.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in NAMES]
    if unknown or not names:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(NAMES)}")
    results: dict[str, dict[str, Any]] = {}
    options.out.parent.mkdir(parents=True, exist_ok=True)
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results[name] = run_one(name, options.quick, options.profile)
        print(f"  done in {results[name]['elapsed_s']} s", file=sys.stderr, flush=True)
        # written after every benchmark, so a long run that dies keeps what it measured
        document = collect(results, options.quick)
        text = json.dumps(document, indent=2, default=str) + "\n"
        options.out.write_text(text, encoding="utf-8")
    print(table(document))
    print(f"\nwritten to {options.out}")
    return 0
