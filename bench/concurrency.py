"""Twenty plans at once: every run succeeds and no VM is changed twice.

One fabric of 20 x G x M VMs, twenty plans over disjoint VMs, all started back to back on one
Ferryman (one worker process) against one lab at zero latency. ``concurrent_plans_ok`` is
true when all twenty runs succeeded; the lab's record of every call also shows whether any VM
saw ``Start-VMFailover`` more than once (a double failover would be a correctness bug, not a
performance one).

Run alone: ``python -m bench.concurrency [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import pipeline
from bench.engine import ferryman, ferryman_env
from bench.overhead import FERRYMAN_DB, lab_for, urls_of
from bench.plans import Shape, split_plans, write_bundle
from bench.services import redis_server

PLANS = 20


def run(*, quick: bool, concurrency: int = 16, timeout: float = 900) -> dict[str, Any]:
    """Start twenty runs at once and follow them all to the end."""
    reason = pipeline.available()
    if reason is not None:
        return {"skipped": f"the engine cannot run: {reason}"}
    groups_per_plan, per_group = (2, 3) if quick else (3, 10)
    shape = Shape(PLANS * groups_per_plan, per_group)
    settings = {
        "plans": PLANS,
        "groups_per_plan": groups_per_plan,
        "vms_per_group": per_group,
        "vms": shape.vm_count,
        "worker_concurrency": concurrency,
        "worker_processes": 1,
        "lab_latency_ms": 0,
        "store": "sqlite (WAL)",
    }
    out: dict[str, Any] = {"settings": settings}
    with (
        tempfile.TemporaryDirectory(prefix="ferryman-bench-") as tmp,
        redis_server() as server,
        lab_for(shape) as lab,
    ):
        workdir = Path(tmp)
        plans = split_plans(shape, PLANS)
        plan_file = write_bundle(workdir / "concurrency", shape, urls_of(lab), plans=plans)
        env = ferryman_env(
            server, workdir, db=FERRYMAN_DB, password=lab.password, database_url=None
        )
        with ferryman(env, concurrency=concurrency, log_dir=workdir) as harness:
            lab.calls.clear()
            began = time.monotonic()
            started = [harness.start(plan_file, name) for name in plans]
            start_span = time.monotonic() - began
            timings = [harness.follow(run_id, t0, timeout=timeout) for run_id, t0 in started]
            total = time.monotonic() - began
        failovers = Counter(c.vm for c in lab.calls.calls() if c.cmdlet == "Start-VMFailover")
    statuses = Counter(t.status for t in timings)
    ok = statuses.get("succeeded", 0) == PLANS
    twice = sorted(vm for vm, n in failovers.items() if vm and n > 1)
    out.update(
        concurrent_plans_ok=ok,
        statuses=dict(statuses),
        errors=[t.error[:200] for t in timings if t.error][:3],
        start_all_s=round(start_span, 3),
        all_done_s=round(total, 3),
        run_s={
            "min": round(min(t.recorded_s for t in timings), 3),
            "max": round(max(t.recorded_s for t in timings), 3),
        },
        vms_failed_over_twice=twice,
        summary=[
            f"{PLANS} plans x {groups_per_plan}x{per_group} VMs at once: "
            f"{statuses.get('succeeded', 0)}/{PLANS} succeeded in {round(total, 1)} s; "
            f"VMs failed over twice: {len(twice)}"
        ],
    )
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.concurrency [--quick]``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    options = parser.parse_args(argv)
    print(json.dumps(run(quick=options.quick), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
