"""The servers a benchmark starts for itself and stops again: Redis and Celery workers.

Redis and PostgreSQL come from :mod:`tests.support.servers`, as for the tests.

Every benchmark gets its own ``redis-server`` on a free loopback port (no persistence), so it
never depends on, or clobbers, a shared instance; worker processes are children that are
stopped by their pid when the benchmark ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.support.servers import PostgresCluster as PostgresCluster
from tests.support.servers import RedisServer as RedisServer
from tests.support.servers import free_port as free_port
from tests.support.servers import postgres_server as postgres_server
from tests.support.servers import redis_server as redis_server

REPO_ROOT = Path(__file__).resolve().parent.parent


def cpu_seconds(pids: Sequence[int]) -> float:
    """CPU seconds (user + system) spent so far by ``pids`` and all their descendants.

    Read from ``/proc``: a live process's own time plus the time of its children that have
    exited and been reaped (``cutime``/``cstime``), so the difference between two readings is
    what the process tree spent in between, whatever the machine's other load.
    """
    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    times: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue  # the process exited while the table was read
        # after the command: state ppid ... utime stime cutime cstime are fields 14-17 of stat
        parent[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = sum(int(v) for v in fields[11:15])
    wanted = set(pids)
    grew = True
    while grew:
        children = {pid for pid, ppid in parent.items() if ppid in wanted} - wanted
        grew = bool(children)
        wanted |= children
    return sum(times.get(pid, 0) for pid in wanted) / tick


class CpuMeter:
    """CPU seconds spent by named process trees (``{"worker": [pid], ...}``) since it was made.

    ``this_process``: also this process alone, under that name (its children, the workers and
    servers a benchmark starts, are not counted in it), e.g. the lab a benchmark runs in-process.
    """

    def __init__(
        self, parts: Mapping[str, Sequence[int]], *, this_process: str | None = None
    ) -> None:
        self.parts = {name: list(pids) for name, pids in parts.items()}
        self.this_process = this_process
        self._start = self.now()

    def now(self) -> dict[str, float]:
        """CPU seconds per part so far (since each process started)."""
        now = {name: cpu_seconds(pids) for name, pids in self.parts.items()}
        if self.this_process is not None:
            now[self.this_process] = time.process_time()
        return now

    def read(self) -> dict[str, float]:
        """Seconds per part since the meter was made."""
        now = self.now()
        return {name: round(now[name] - self._start[name], 3) for name in now}


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all this machine's cores so far, from ``/proc/stat``."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


class LoadSampler:
    """How busy the machine's cores, and named processes, were while a block ran.

    Sampled every ``interval`` s. ``machine``: all the cores, whatever runs on them (the
    workers, the lab, Redis and anything else), as a share of all of them. ``parts`` (as for
    :class:`CpuMeter`; ``this_process`` names this process alone): each one's CPU in cores,
    where 1.0 is one core fully busy, the most one Python process's interpreter lock allows.
    A run whose machine or one of whose processes was close to fully busy for much of its time
    was bound by CPU, and no orchestrator would have finished it at the latencies' pace.
    """

    def __init__(
        self,
        parts: Mapping[str, Sequence[int]] | None = None,
        *,
        this_process: str | None = None,
        interval: float = 0.25,
        busy: float = 0.9,
    ) -> None:
        self._processes = CpuMeter(parts or {}, this_process=this_process)
        self.interval = interval
        self.busy = busy
        self._loads: dict[str, list[float]] = {"machine": []}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="load-sampler", daemon=True)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _sample(self) -> None:
        before, cpu_before, at = machine_ticks(), self._processes.now(), time.monotonic()
        while not self._stop.wait(self.interval):
            now, cpu_now, now_at = machine_ticks(), self._processes.now(), time.monotonic()
            total = now[1] - before[1]
            if total > 0:
                self._loads["machine"].append((now[0] - before[0]) / total)
            elapsed = now_at - at
            if elapsed > 0:
                for name, seconds in cpu_now.items():
                    self._loads.setdefault(name, []).append((seconds - cpu_before[name]) / elapsed)
            before, cpu_before, at = now, cpu_now, now_at

    def figures(self) -> dict[str, Any]:
        """Per series (``machine`` and each part): the mean, the peak over one second, and the
        share of samples at or above ``busy`` (of all cores for the machine, of one core for
        a part)."""
        per_second = max(1, round(1 / self.interval))
        out: dict[str, Any] = {}
        for name, series in self._loads.items():
            loads = list(series)
            if not loads:
                continue
            windows = [
                loads[i : i + per_second] for i in range(max(1, len(loads) - per_second + 1))
            ]
            out[name] = {
                "mean": round(sum(loads) / len(loads), 2),
                "peak_1s": round(max(sum(w) / len(w) for w in windows), 2),
                "busy_share": round(sum(1 for load in loads if load >= self.busy) / len(loads), 2),
            }
        return out


def _quiet(argv: list[str], *, check: bool = True) -> None:
    subprocess.run(
        argv, check=check, timeout=90, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def spawn(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start a child process in the repository root with the repository on ``PYTHONPATH``."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), full_env.get("PYTHONPATH", "")) if p
    )
    out = open(log, "wb") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(
        list(argv), cwd=REPO_ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT
    )


def stop_process(process: subprocess.Popen[bytes], *, timeout: float = 15.0) -> None:
    """Ask a child to stop (SIGTERM), then kill it if it has not stopped within ``timeout``."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def release_results(app: Any) -> None:
    """Drop the result handles a Celery client still tracks, while its Redis is still up.

    The Redis result backend keeps handles of results a client sent (chords) and unsubscribes
    each when it is collected; if that happens at interpreter exit, after the benchmark
    stopped its Redis, every handle prints a reconnect error.
    """
    consumer = getattr(app.backend, "result_consumer", None)
    if consumer is None:
        return
    with contextlib.suppress(Exception):
        consumer.stop()
    # Nothing subscribed is left to unsubscribe, so a handle collected later does not call
    # Redis at all (celery.backends.redis.ResultConsumer.cancel_for).
    subscribed = getattr(consumer, "subscribed_to", None)
    if subscribed is not None:
        subscribed.clear()


def celery_worker_argv(
    app: str, *, queues: Sequence[str], concurrency: int, pool: str = "threads", name: str
) -> list[str]:
    """The command line of a Celery worker for ``app`` on ``queues``."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        app,
        "worker",
        "--pool",
        pool,
        "--concurrency",
        str(concurrency),
        "--queues",
        ",".join(queues),
        "--hostname",
        f"{name}@bench",
        "--loglevel",
        "WARNING",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
