"""Scale and growth: validate + compile time and peak memory at 100, 1,000 and 5,000 VMs.

Each size is measured in a fresh child interpreter, so ``ru_maxrss`` (the process's peak
resident set) belongs to that size alone; the child also reports tracemalloc's peak for the
load + validate + compile calls only (what the engine itself allocates) and the resident set
it had before loading (the interpreter and imports). Generating the YAML is not timed.

Run alone: ``python -m bench.scale [--quick]``.
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
from bench.plans import Shape, placeholder_urls, write_bundle
from bench.services import REPO_ROOT

# (groups, VMs per group): 100, 1,000 and 5,000 VMs
SIZES = ((10, 10), (10, 100), (50, 100))


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
    return {
        "import_s": round(import_s, 4),
        "validate_s": round(t1 - t0, 4),
        "compile_s": round(t2 - t1, 4),
        "to_json_s": round(t3 - t2, 4),
        "validate_compile_s": round(t2 - t0, 4),
        "compiled_json_kb": round(len(stored) / 1024),
        "rss_before_mb": round(rss_before, 1),
        "peak_rss_mb": round(_maxrss_mb(), 1),
        "warnings": len(report.problems),
        "stages": compiled.stages,
        "units": compiled.units,
        "steps": compiled.steps,
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


def run(*, quick: bool, workdir: Path | None = None) -> dict[str, Any]:
    """Measure every size; returns ``{"sizes": [...], "compile_5000_s": ..., ...}``."""
    reason = pipeline.available()
    if reason is not None:
        return {"skipped": f"validate/compile cannot run: {reason}"}
    with tempfile.TemporaryDirectory(prefix="ferryman-bench-") as tmp:
        base = workdir or Path(tmp)
        sizes = [measure_size(g, m, base) for g, m in SIZES]
    out: dict[str, Any] = {"sizes": sizes}
    largest = sizes[-1]
    if "error" in largest:
        out["error_5000"] = largest["error"]
    else:
        out["compile_5000_s"] = largest["validate_compile_s"]
        out["peak_mb_5000"] = largest["peak_rss_mb"]
        out["tracemalloc_mb_5000"] = largest["tracemalloc_peak_mb"]
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.scale [--quick]`` or the child mode ``child DIR``."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["child"]:
        figures = child(Path(args[2]), "bench", trace=args[1] == "trace")
        print(json.dumps(figures))
        return 0
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    options = parser.parse_args(args)
    print(json.dumps(run(quick=options.quick), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
