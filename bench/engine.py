"""Ferryman under measurement: its workers as child processes, runs started through the engine.

The benchmark process plays the operator's part: it builds the engine on the same settings
the workers get (``FERRYMAN_*``: Redis broker and backend, an SQL database) and starts runs
with :meth:`workflows.engine.Engine.start`, exactly as ``ferryman run`` does, then follows
each run in the store until it settles. Workers are ``ferryman worker --site ...`` processes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.services import RedisServer, release_results, spawn, stop_process

SETTLED = {"succeeded", "failed", "cancelled", "waiting", "compensated"}
STALL_AFTER = 120.0  # seconds without any step changing before a run counts as stalled
STALL_CHECK = 2.0  # seconds between reads of every step for the stall check
FOLLOW_INTERVAL = 0.1  # seconds between reads of a run's status; the run's own
# timestamps give its duration, so this only bounds how late the benchmark notices the end


@dataclass(frozen=True)
class RunTiming:
    """How one run went: its status, error and durations (seconds)."""

    run_id: str
    status: str
    error: str
    recorded_s: float  # finished_at - started_at, as the engine recorded them
    wall_s: float  # from the call to Engine.start until the benchmark saw the run settle


def ferryman_env(
    redis_server: RedisServer, workdir: Path, *, db: int, password: str, database_url: str | None
) -> dict[str, str]:
    """The ``FERRYMAN_*`` variables of the engine and its workers for one benchmark."""
    return {
        "FERRYMAN_BROKER_URL": redis_server.url(db),
        "FERRYMAN_RESULT_BACKEND": redis_server.url(db),
        "FERRYMAN_DATABASE_URL": database_url or f"sqlite:///{workdir / 'ferryman.db'}",
        "FERRYMAN_LAB_PASSWORD": password,
    }


def progress_mark(session: Any, run_id: str) -> tuple[Any, ...]:
    """What changes whenever any step of the run moves: counts per status, latest times."""
    from sqlalchemy import func, select

    from workflows.store import Step

    table: Any = Step  # its attributes are columns here
    counts = session.execute(
        select(table.status, func.count(), func.max(table.started_at), func.max(table.finished_at))
        .where(table.run_id == run_id)
        .group_by(table.status)
    ).all()
    return tuple(sorted((str(status), n, str(a), str(b)) for status, n, a, b in counts))


class Harness:
    """Starts runs on the engine and follows them to the end."""

    def __init__(self, runtime: Any, worker_pids: list[int]) -> None:
        self.runtime = runtime
        self.worker_pids = worker_pids
        # the servers the workers use (name -> pid: broker, database), for CPU accounting
        self.services: dict[str, int] = {}

    def start(self, plan_file: Path, plan: str, failover_type: str = "test") -> tuple[str, float]:
        """Start a run of ``plan``; returns its id and the monotonic time of the call."""
        from plans.bundle import load_bundle

        bundle = load_bundle([str(plan_file)])
        started = time.monotonic()
        run = self.runtime.engine.start(
            bundle, plan, failover_type, "failover", options={}, requested_by="bench"
        )
        return str(run.id), started

    def follow(
        self, run_id: str, started: float, *, timeout: float, stall: float = STALL_AFTER
    ) -> RunTiming:
        """Wait until the run settles; its timing.

        A run whose steps stop moving for ``stall`` seconds while it still says running is
        reported as ``stalled`` with its unsettled steps, instead of being waited on until
        ``timeout``: a lost unit leaves a run hanging, and that is a finding, not a figure.
        """
        from sqlalchemy import select

        from workflows.store import Run, repository

        deadline = time.monotonic() + timeout
        last_change, last_seen = time.monotonic(), None
        next_check = time.monotonic() + STALL_CHECK
        seen: tuple[Any, ...] | None = None
        while True:
            with self.runtime.db.session() as session:
                # only the small columns: the row's plan snapshot and compiled run are large,
                # and loading them every poll would load the machine being measured
                table: Any = Run  # its attributes are columns here, not a row's values
                columns = (table.status, table.error, table.created_at, table.started_at)
                row = session.execute(
                    select(*columns, table.finished_at).where(table.id == run_id)
                ).one()
                status = str(row.status)
                if status in SETTLED:
                    wall = time.monotonic() - started
                    begun = row.started_at or row.created_at
                    recorded = (
                        (row.finished_at - begun).total_seconds() if row.finished_at else wall
                    )
                    return RunTiming(run_id, status, row.error or "", recorded, wall)
                now = time.monotonic()
                if now >= next_check:
                    # one aggregate row, not every step: on a 5,000-VM run, reading 20,000
                    # steps every few seconds would load the machine being measured
                    seen = progress_mark(session, run_id)
                    next_check = now + STALL_CHECK
            if seen != last_seen:
                last_change, last_seen = now, seen
            elif seen is not None and now - last_change > stall:
                with self.runtime.db.session() as session:
                    steps = repository.steps_of(session, run_id=run_id)
                open_steps = [s.key for s in steps if str(s.status) in ("pending", "running")]
                detail = f"no step moved for {stall:g}s; unsettled: {open_steps[:8]}"
                return RunTiming(
                    run_id, f"stalled ({status})", detail, now - started, now - started
                )
            if now > deadline:
                return RunTiming(run_id, f"timeout ({status})", "", timeout, timeout)
            time.sleep(FOLLOW_INTERVAL)  # the store has no change feed to wait on

    def run(
        self, plan_file: Path, plan: str, failover_type: str = "test", *, timeout: float = 600
    ) -> RunTiming:
        """Start a run and follow it to the end, then let its VMs go.

        A benchmark runs one plan again on a fresh lab, with no cleanup between: what the
        last run left (a test's VMs, held until its cleanup) went with the last lab.
        """
        from workflows.store import repository

        run_id, started = self.start(plan_file, plan, failover_type)
        timing = self.follow(run_id, started, timeout=timeout)
        with self.runtime.db.session() as session:
            repository.release_vms(session, run=repository.get_run(session, run_id=run_id))
        return timing

    def progress(self, run_id: str) -> tuple[int, int]:
        """How many of the run's steps have succeeded, and how many it has."""
        from workflows.store import repository

        with self.runtime.db.session() as session:
            steps = repository.steps_of(session, run_id=run_id)
            return sum(1 for s in steps if str(s.status) == "succeeded"), len(steps)

    def step_count(self, run_id: str) -> int:
        """How many steps the run recorded."""
        from workflows.store import repository

        with self.runtime.db.session() as session:
            return len(repository.steps_of(session, run_id=run_id))


@contextmanager
def ferryman(
    env: Mapping[str, str],
    *,
    sites: tuple[str, ...] = ("gothenburg", "stockholm"),
    concurrency: int = 16,
    workers: int = 1,
    log_dir: Path | None = None,
    ready_timeout: float = 60.0,
) -> Iterator[Harness]:
    """Ferryman's workers (``workers`` processes of ``concurrency`` threads) and the engine."""
    from workflows.migrations import upgrade
    from workflows.runtime import build_runtime
    from workflows.settings import Settings

    settings = Settings.from_env(dict(env))
    upgrade(settings.database_url)  # as a deployment does before its workers start
    runtime = build_runtime(settings)
    argv = ["-m", "workflows.cli", "worker", "--concurrency", str(concurrency)]
    argv += [arg for site in sites for arg in ("--site", site)]
    processes = []
    try:
        for index in range(workers):
            log = None if log_dir is None else log_dir / f"ferryman-worker-{index}.log"
            processes.append(
                spawn(
                    [sys.executable, *argv, "--loglevel", "WARNING"],
                    env={**env, "PYTHONUNBUFFERED": "1"},
                    log=log,
                )
            )
        wait_for_workers(runtime.app, workers, ready_timeout, processes)
        yield Harness(runtime, [p.pid for p in processes])
    finally:
        release_results(runtime.app)
        for process in processes:
            stop_process(process)
        runtime.db.dispose()


def wait_for_workers(app: Any, count: int, timeout: float, processes: list[Any]) -> None:
    """Block until ``count`` workers answer a ping; fail early if one died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = [p for p in processes if p.poll() is not None]
        if dead:
            raise RuntimeError(f"a worker exited with code {dead[0].returncode} while starting")
        replies = app.control.ping(timeout=0.5)
        if len(replies or []) >= count:
            return
    raise TimeoutError(f"{count} worker(s) did not answer a ping within {timeout:g}s")
