"""Worker CPU per PowerShell call: what the PSRP client (pypsrp over NTLM) costs per call.

The lab runs in this process (NTLM, zero latency); a child interpreter makes ``calls`` calls
of one cmdlet (``Get-VM -Name <vm>``, a read whose answer is a VM object) through the Hyper-V
adapter (:class:`workers.hyperv.psrp.PsrpRunner`, its runspace-pool cache), one after another,
after a warm-up that opens the session. The child measures its own CPU (``time.process_time``:
every thread of that process) over the timed calls, so the lab's CPU is not in the figure:

    client_cpu_ms_per_call = child CPU seconds / calls x 1000

With ``--profile`` the child runs the calls again under cProfile and reports where the CPU
went, by package (pypsrp's modules, psrpcore, spnego, requests/urllib3, ElementTree, the
adapter) and the top functions by own time.

Run alone: ``python -m bench.client [--quick] [--profile]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.overhead import host_refs, lab_for
from bench.plans import Shape

ROOT = Path(__file__).resolve().parent.parent
CMDLET = "Get-VM"


_PACKAGES = (
    "pypsrp/", "psrpcore/", "spnego/", "requests/", "urllib3/", "xml/etree/", "workers/hyperv/",
    "cryptography/", "http/client", "copy.py", "codecs", "typing.py", "uuid.py", "socket",
)  # fmt: skip


def _bucket(filename: str) -> str:
    """A profile entry's package, for the breakdown by package (builtins: ``other``)."""
    path = filename.replace("\\", "/")
    return next((m.strip("/") for m in _PACKAGES if m in path), "other")


def child(ref: dict[str, Any], vm: str, calls: int, warmup: int, profile: bool) -> dict[str, Any]:
    """The child's body: warm up, time ``calls`` calls by CPU, optionally profile them."""
    from workers.hyperv.connection import PsrpEndpoint
    from workers.hyperv.psrp import PsrpRunner
    from workflows.steps import HostRef

    runner = PsrpRunner(PsrpEndpoint.from_ref(HostRef(**{"site": "", **ref})))
    for _ in range(warmup):
        runner.run(CMDLET, {"Name": vm})
    cpu, wall = time.process_time(), time.monotonic()
    for _ in range(calls):
        runner.run(CMDLET, {"Name": vm})
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    out: dict[str, Any] = {
        "calls": calls,
        "client_cpu_ms_per_call": round(cpu / calls * 1000, 3),
        "wall_ms_per_call": round(wall / calls * 1000, 3),
    }
    if profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile(time.process_time)  # CPU, not the wait on the lab
        profiler.enable()
        for _ in range(calls):
            runner.run(CMDLET, {"Name": vm})
        profiler.disable()
        stats = pstats.Stats(profiler)
        total = sum(row[2] for row in stats.stats.values())  # type: ignore[attr-defined]
        buckets: dict[str, float] = {}
        top = []
        for (filename, line, name), row in stats.stats.items():  # type: ignore[attr-defined]
            bucket = _bucket(filename)
            buckets[bucket] = buckets.get(bucket, 0.0) + row[2]
            top.append((row[2], f"{Path(filename).name}:{line}({name})", row[3]))
        out["profile_share_by_package"] = {
            k: round(v / total, 3) for k, v in sorted(buckets.items(), key=lambda kv: -kv[1])
        }
        out["profile_top_own_time"] = [
            {"where": where, "share": round(own / total, 3), "cumulative": round(c / total, 3)}
            for own, where, c in sorted(top, reverse=True)[:25]
        ]
    runner.close()
    return out


def run(*, quick: bool, profile: bool = False) -> dict[str, Any]:
    """Start the lab, run the child, return its figures."""
    calls = 300 if quick else 2000
    shape = Shape(1, 1)
    with lab_for(shape) as lab:
        ref = host_refs(shape, lab)[shape.vm_name(0)]
        payload = json.dumps(
            {"ref": ref, "vm": shape.vm_name(0), "calls": calls, "warmup": 20, "profile": profile}
        )
        env = {**os.environ, "FERRYMAN_LAB_PASSWORD": lab.password}
        done = subprocess.run(
            [sys.executable, "-m", "bench.client", "--child", payload],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
    if done.returncode != 0:
        return {"error": f"the client process failed: {done.stderr.strip()[-400:]}"}
    out: dict[str, Any] = json.loads(done.stdout)
    out["settings"] = {"cmdlet": f"{CMDLET} -Name", "auth": "ntlm", "lab_latency_ms": 0}
    out["summary"] = [
        f"{calls} sequential {CMDLET} calls over NTLM: {out['client_cpu_ms_per_call']} ms of "
        f"client CPU per call ({out['wall_ms_per_call']} ms wall, the lab included)"
    ]
    if profile:
        out["summary"].append(f"  client CPU by package: {out['profile_share_by_package']}")
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.client [--quick] [--profile]``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.child:
        args = json.loads(options.child)
        print(json.dumps(child(args["ref"], args["vm"], args["calls"], args["warmup"],
                               args["profile"])))  # fmt: skip
        return 0
    print(json.dumps(run(quick=options.quick, profile=options.profile), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
