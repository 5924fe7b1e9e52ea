"""The lab's CPU per PowerShell call, at 1,000 and 5,000 VMs: it must not grow with the world.

The lab runs in this process (NTLM, zero latency, as every benchmark starts it) with a world of
``N`` VMs; a child interpreter makes the calls a test failover makes, VM after VM, through the
Hyper-V adapter (:class:`workers.hyperv.psrp.PsrpRunner`), one after another on one replica
host::

    Get-VM -Name v; Start-VMFailover -VMName v -AsTest; Connect-VMNetworkAdapter -VMName
    "v - Test" -SwitchName test-got; Start-VM -Name "v - Test"; Get-VMNetworkAdapter -VMName
    "v - Test"; Stop-VMFailover -VMName v

(``Stop-VMFailover`` removes the test VM, so every VM can take its turn again). After a
warm-up, this process's CPU (``time.process_time``: the lab's server, pipeline and ticker
threads; this thread only waits on the child) is read around the timed calls:

    lab_cpu_ms_per_call = this process's CPU seconds / calls the lab answered x 1000

The median of ``rounds`` rounds per size, each on a fresh lab. With ``--profile`` every lab
thread runs under cProfile (per-thread CPU clock) for one more round of each size, and the top
functions by own time are reported.

Run alone: ``python -m bench.lab [--quick] [--vms 1000,5000] [--profile]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.overhead import host_refs, lab_for
from bench.plans import Shape

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
SIZES = (1000, 5000)
TEST_SWITCH = "test-got"
CALLS_PER_VM = 6


def _vm_calls(vm: str) -> list[tuple[str, dict[str, Any], tuple[str, ...]]]:
    test = f"{vm} - Test"
    return [
        ("Get-VM", {"Name": vm}, ()),
        ("Start-VMFailover", {"VMName": vm, "Confirm": False}, ("AsTest",)),
        ("Connect-VMNetworkAdapter", {"VMName": test, "SwitchName": TEST_SWITCH}, ()),
        ("Start-VM", {"Name": test}, ()),
        ("Get-VMNetworkAdapter", {"VMName": test}, ()),
        ("Stop-VMFailover", {"VMName": vm, "Confirm": False}, ()),
    ]


def child(ref: dict[str, Any], vms: list[str], warmup: int, rounds: int) -> None:
    """The child's body: warm up, say ``ready``, wait for ``go``, make the calls, say ``done``."""
    from workers.hyperv.connection import PsrpEndpoint
    from workers.hyperv.psrp import PsrpRunner
    from workflows.steps import HostRef

    runner = PsrpRunner(PsrpEndpoint.from_ref(HostRef(**{"site": "", **ref})))

    def cycle(names: list[str]) -> None:
        for vm in names:
            for cmdlet, params, switches in _vm_calls(vm):
                result = runner.run(cmdlet, params, switches=switches)
                if result.errors:
                    raise SystemExit(f"{cmdlet} {vm}: {result.errors[0]}")

    cycle(vms[:warmup])
    for _ in range(rounds):
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            return
        cycle(vms)
        print("done", flush=True)
    runner.close()


class _ThreadProfiles:
    """cProfile in every thread started while it is installed (per-thread CPU clock)."""

    def __init__(self) -> None:
        self.profiles: list[Any] = []
        self._lock = threading.Lock()

    def _start(self, *_: Any) -> None:
        import cProfile

        sys.setprofile(None)
        profile = cProfile.Profile(time.thread_time)
        with self._lock:
            self.profiles.append(profile)
        profile.enable()

    def install(self) -> None:
        """Profile threads started from now on."""
        threading.setprofile(self._start)

    def uninstall(self) -> None:
        """Stop profiling new threads."""
        threading.setprofile(None)

    def top(self, count: int = 30) -> list[dict[str, Any]]:
        """The top functions by own CPU time, as shares of all profiled time."""
        import pstats

        rows: dict[tuple[str, int, str], list[float]] = {}
        for profile in list(self.profiles):
            profile.snapshot_stats()
            for key, row in profile.stats.items():
                agg = rows.setdefault(key, [0.0, 0.0, 0])
                agg[0] += row[2]
                agg[1] += row[3]
                agg[2] += row[1]
        del pstats
        total = sum(r[0] for r in rows.values()) or 1.0
        top = sorted(rows.items(), key=lambda kv: -kv[1][0])[:count]
        return [
            {
                "where": f"{Path(f).name}:{line}({name})",
                "own": round(r[0] / total, 3),
                "cumulative": round(r[1] / total, 3),
                "calls": int(r[2]),
            }
            for (f, line, name), r in top
        ]

    def dump(self, path: Path) -> None:
        """Write every thread's profile merged, in ``pstats``' file format."""
        import marshal

        merged: dict[Any, Any] = {}
        for profile in list(self.profiles):
            profile.snapshot_stats()
            for key, row in profile.stats.items():
                if key in merged:
                    old = merged[key]
                    callers = dict(old[4])
                    for caller, value in row[4].items():
                        before = callers.get(caller)
                        callers[caller] = (
                            value
                            if before is None
                            else tuple(a + b for a, b in zip(before, value, strict=True))
                        )
                    merged[key] = (*(a + b for a, b in zip(old[:4], row[:4], strict=True)), callers)
                else:
                    merged[key] = row
        path.write_bytes(marshal.dumps(merged))

    def total_s(self) -> float:
        """Profiled CPU seconds in all threads."""
        total = 0.0
        for profile in list(self.profiles):
            profile.snapshot_stats()
            total += sum(row[2] for row in profile.stats.values())
        return total


def measure(vm_count: int, calls: int, *, profile: bool = False) -> dict[str, Any]:
    """One fresh lab of ``vm_count`` VMs; the lab's CPU per call over ``calls`` calls."""
    shape = Shape(max(1, vm_count // 100), min(100, vm_count))
    profiles = _ThreadProfiles() if profile else None
    if profiles is not None:
        profiles.install()
    try:
        with lab_for(shape) as lab:
            refs = host_refs(shape, lab)
            # every other VM is on the first replica host: spread the calls over them
            on_host = [shape.vm_name(i) for i in range(0, shape.vm_count, shape.hosts_per_site)]
            wanted = max(1, calls // CALLS_PER_VM)
            step = max(1, len(on_host) // (wanted + 5))
            names = on_host[::step]
            warm, timed = names[:5], names[5 : 5 + wanted]
            payload = json.dumps(
                {"ref": refs[timed[0]], "vms": warm + timed, "warmup": len(warm), "rounds": 1}
            )
            env = {**os.environ, "FERRYMAN_LAB_PASSWORD": lab.password}
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.lab", "--child", payload],
                cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert proc.stdin is not None and proc.stdout is not None
            try:
                if proc.stdout.readline().strip() != "ready":
                    raise RuntimeError("the client process failed during its warm-up")
                lab.calls.clear()
                base = profiles.total_s() if profiles is not None else 0.0
                cpu, wall = time.process_time(), time.monotonic()
                proc.stdin.write("go\n")
                proc.stdin.flush()
                line = proc.stdout.readline().strip()
                cpu, wall = time.process_time() - cpu, time.monotonic() - wall
                if line != "done":
                    raise RuntimeError("the client process failed during the timed calls")
                answered = len(lab.calls.calls())
                profiled = profiles.total_s() - base if profiles is not None else 0.0
                top = profiles.top() if profiles is not None else []
                if profiles is not None:
                    profiles.dump(RESULTS / f"lab-{shape.vm_count}.prof")
            finally:
                proc.stdin.close()
                proc.wait(timeout=60)
    finally:
        if profiles is not None:
            profiles.uninstall()
    out: dict[str, Any] = {
        "vms": shape.vm_count,
        "calls": answered,
        "lab_cpu_ms_per_call": round(cpu / answered * 1000, 3),
        "wall_ms_per_call": round(wall / answered * 1000, 3),
    }
    if profiles is not None:
        out["profiled_cpu_ms_per_call"] = round(profiled / answered * 1000, 3)
        out["profile_top_own_time"] = top
    return out


def run(
    *, quick: bool, sizes: tuple[int, ...] = SIZES, rounds: int = 3, profile: bool = False
) -> dict[str, Any]:
    """Every size ``rounds`` times (alternating sizes), each on a fresh lab; medians."""
    calls = 300 if quick else 1200
    per_size: dict[int, list[float]] = {n: [] for n in sizes}
    for _ in range(rounds):
        for n in sizes:
            per_size[n].append(measure(n, calls)["lab_cpu_ms_per_call"])
    out: dict[str, Any] = {
        "settings": {
            "auth": "ntlm",
            "lab_latency_ms": 0,
            "calls_per_round": calls // CALLS_PER_VM * CALLS_PER_VM,
            "rounds": rounds,
            "cmdlets": [c for c, _, _ in _vm_calls("v")],
        },
        "rounds": {str(n): v for n, v in per_size.items()},
    }
    for n in sizes:
        out[f"lab_cpu_ms_per_call_{_suffix(n)}"] = round(statistics.median(per_size[n]), 3)
    if profile:
        out["profiles"] = {str(n): measure(n, calls, profile=True) for n in sizes}
    out["summary"] = [
        f"{n} VMs: {out[f'lab_cpu_ms_per_call_{_suffix(n)}']} ms of lab CPU per call "
        f"(median of {per_size[n]})"
        for n in sizes
    ]
    return out


def _suffix(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.lab [--quick] [--vms 1000,5000] [--rounds 3] [--profile]``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--vms", default=",".join(str(n) for n in SIZES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.child:
        args = json.loads(options.child)
        child(args["ref"], args["vms"], args["warmup"], args["rounds"])
        return 0
    sizes = tuple(int(v) for v in options.vms.split(","))
    result = run(quick=options.quick, sizes=sizes, rounds=options.rounds, profile=options.profile)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
