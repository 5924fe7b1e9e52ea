"""PowerShell calls per VM for each failover type, counted by the lab on real runs.

For each failover type (test, planned, unplanned) Ferryman runs one plan of G groups x M VMs
on a fresh zero-latency lab whose guests report their address at once (boot 0), so one
address read finds it. The lab records every pipeline it answers (``bench.calls``: reads
included) and its audit log keeps every mutating call with its outcome; the figures are

* ``calls_per_vm_<type>``: the mean number of pipelines per VM (a test VM counts for its VM);
* ``mutating_calls_per_vm_<type>``: the mean number of audited (mutating) calls per VM;
* ``mutated_once_<type>``: no successful mutating call (host, cmdlet, VM, parameter names)
  was answered twice.

Run alone: ``python -m bench.failovers [--quick]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from bench import pipeline
from bench.overhead import LAB_PASSWORD_VARIABLE, _ferryman_harness, lab_for, urls_of
from bench.plans import PLAN_NAME, Shape, write_bundle

FAILOVER_TYPES = ("test", "planned", "unplanned")


def audit_figures(entries: list[dict[str, Any]], vms: int) -> dict[str, Any]:
    """Mutating calls per VM and whether any successful one was answered twice."""
    repeated = Counter(
        (e["host"], e["cmdlet"], e["vm"], tuple(sorted(e["parameters"])))
        for e in entries
        if e["outcome"] == "ok"
    )
    twice = sorted(f"{c[1]} {c[2]} on {c[0]}" for c, n in repeated.items() if n > 1)
    return {
        "mutating_calls_per_vm": round(len(entries) / vms, 2) if vms else 0.0,
        "mutated_once": not twice,
        "mutated_twice": twice[:10],
        "failed_mutations": sum(1 for e in entries if e["outcome"] != "ok"),
    }


def one_type(
    shape: Shape, harness: Any, workdir: Path, lab_password: str, failover_type: str
) -> dict[str, Any]:
    """One run of ``failover_type`` on a fresh lab; the lab's counts."""
    with lab_for(shape, password=lab_password) as lab:
        plan_file = write_bundle(workdir, shape, urls_of(lab))
        lab.calls.clear()
        lab.handle.lab.audit.clear()
        timing = harness.run(plan_file, PLAN_NAME, failover_type, timeout=600)
        entries = [e.as_dict() for e in lab.handle.lab.audit.entries()]
        per_vm = lab.calls.per_vm()
        figures: dict[str, Any] = {
            "status": timing.status,
            "calls_per_vm": round(lab.calls.calls_per_vm(), 2),
            "calls_per_vm_max": max((len(c) for c in per_vm.values()), default=0),
            "cmdlets": lab.calls.cmdlet_counts(),
            "one_vm": [c.cmdlet for c in per_vm.get(shape.vm_name(0), [])],
            **audit_figures(entries, shape.vm_count),
        }
    if timing.status != "succeeded":
        figures["error"] = f"the {failover_type} run ended {timing.status}: {timing.error[:300]}"
    return figures


def run(*, quick: bool, timeout: float = 600) -> dict[str, Any]:
    """Run each failover type once and count its calls per VM."""
    reason = pipeline.available()
    if reason is not None:
        return {"skipped": f"the engine cannot run: {reason}"}
    shape = Shape(2, 4) if quick else Shape(4, 10)
    out: dict[str, Any] = {
        "settings": {
            "groups": shape.groups,
            "vms_per_group": shape.vms_per_group,
            "lab_latency_ms": 0,
            "boot_s": 0,
            "store": "sqlite (WAL)",
            "counted_by": "the lab: every pipeline it answered; mutating ones from its audit",
        }
    }
    password = secrets.token_urlsafe(18)
    os.environ[LAB_PASSWORD_VARIABLE] = password
    lab_password = f"env:{LAB_PASSWORD_VARIABLE}"
    summary = []
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ferryman-bench-")))
        from bench.services import redis_server

        server = stack.enter_context(redis_server())
        harness = stack.enter_context(
            _ferryman_harness(server, workdir, "sqlite", 0, password, shape.vms_per_group)
        )
        for failover_type in FAILOVER_TYPES:
            figures = one_type(shape, harness, workdir / failover_type, lab_password, failover_type)
            out[failover_type] = figures
            if "error" in figures:
                summary.append(figures["error"])
                continue
            out[f"calls_per_vm_{failover_type}"] = figures["calls_per_vm"]
            summary.append(
                f"{failover_type}: {figures['calls_per_vm']} calls/VM "
                f"({figures['mutating_calls_per_vm']} mutating, each once: "
                f"{figures['mutated_once']}); one VM: {', '.join(figures['one_vm'])}"
            )
    out["summary"] = summary
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.failovers [--quick]``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    options = parser.parse_args(argv)
    print(json.dumps(run(quick=options.quick), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
