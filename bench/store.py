"""The engine's per-step store cost alone: round trips to PostgreSQL and CPU per step.

In this process, on a private PostgreSQL (fsync off): ``Engine.start`` and then every unit of
every stage through the workers' own code (``workers.tasks.UnitRunner``) with an executor
that does nothing (``tests.workflows.fakes.FakeExecutor``), and ``Engine.advance`` after each
stage; no Celery, no broker, no lab. It counts what psycopg sends: statements, and the
BEGIN/COMMIT/ROLLBACK it sends on its own. The round trips do not depend on the machine's
load, so this figure can be compared across runs; the CPU per step can not, quite: this
process's, and the PostgreSQL server's (all its processes, read from ``/proc``).

Run alone: ``python -m bench.store [--rounds N]`` (JSON on stdout).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench import pipeline
from bench.plans import PLAN_NAME, Shape, placeholder_urls, write_bundle
from bench.services import cpu_seconds


class _Sent:
    """A dispatcher that keeps the stages sent, for this process to run."""

    def __init__(self) -> None:
        self.stages: list[tuple[str, Any]] = []

    def dispatch(self, run_id: str, stage: Any) -> None:
        """Keep the stage."""
        self.stages.append((run_id, stage))


@contextmanager
def counting() -> Iterator[dict[str, int]]:
    """Count psycopg's statements and transaction commands while the block runs."""
    from psycopg import Cursor
    from psycopg._connection_base import BaseConnection

    counts = {"statements": 0, "transaction_commands": 0}
    execute, command = Cursor.execute, BaseConnection._exec_command

    def counted_execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        counts["statements"] += 1
        return execute(self, *args, **kwargs)

    def counted_command(self: Any, *args: Any, **kwargs: Any) -> Any:
        counts["transaction_commands"] += 1
        return command(self, *args, **kwargs)

    Cursor.execute = counted_execute  # type: ignore[method-assign]
    BaseConnection._exec_command = counted_command  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        Cursor.execute = execute  # type: ignore[method-assign]
        BaseConnection._exec_command = command  # type: ignore[method-assign]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(*, quick: bool = True, rounds: int = 3) -> dict[str, Any]:
    """Run the plan ``rounds`` times after one warm-up run; the figures per step."""
    reason = pipeline.available()
    if reason is not None:
        return {"skipped": f"the engine cannot run: {reason}"}
    from tests.support.servers import postgres_server
    from tests.workflows.fakes import FakeExecutor, on_other_vms
    from workers.tasks import UnitRunner
    from workflows.dispatch import unit_kwargs
    from workflows.engine import Engine
    from workflows.settings import Settings
    from workflows.store import Database

    shape = Shape(4, 20)
    with (
        tempfile.TemporaryDirectory(prefix="ferryman-bench-") as tmp,
        postgres_server(fsync=False) as postgres,
    ):
        directory = Path(tmp)
        write_bundle(directory, shape, placeholder_urls(shape))
        report = pipeline.validate([directory / "plan.yaml"])
        if report.bundle is None:
            return {"error": f"the generated bundle is invalid: {report.problems[:3]}"}
        sent = _Sent()
        database = Database(postgres.url(), pool_size=4)
        engine = Engine(database, sent, Settings(database_url=postgres.url()))
        runner = UnitRunner(engine, FakeExecutor())
        steps = 0
        cpu = server = 0.0
        with counting() as counts:
            for index in range(rounds + 1):
                if index == 1:  # after the warm-up: prepared statements, pooled connections
                    counts.update(statements=0, transaction_commands=0)
                    cpu, server, steps = _cpu(), cpu_seconds([postgres.pid()]), 0
                bundle = on_other_vms(report.bundle, f"r{index}")  # a run holds its VMs
                engine.start(bundle, PLAN_NAME, "test", requested_by="bench")
                while sent.stages:
                    run_id, stage = sent.stages.pop(0)
                    for unit in stage.units:
                        task = SimpleNamespace(request=SimpleNamespace(id=uuid.uuid4().hex))
                        unit_json = unit_kwargs(run_id, stage, unit)["unit"]
                        runner.execute(task, run_id=run_id, unit=unit_json)
                        steps += len(unit.steps)
                    engine.advance(run_id, stage.index)
            cpu = _cpu() - cpu
            server = cpu_seconds([postgres.pid()]) - server
            figures = dict(counts)
        database.dispose()
    trips = figures["statements"] + figures["transaction_commands"]
    return {
        "settings": {"groups": shape.groups, "vms": shape.vm_count, "rounds": rounds},
        "steps": steps,
        **figures,
        "round_trips_per_step": round(trips / steps, 2),
        "cpu_ms_per_step": round(cpu / steps * 1000, 3),
        "database_cpu_ms_per_step": round(server / steps * 1000, 3),
        "summary": [
            f"{rounds} runs of {shape.groups}x{shape.vm_count // shape.groups} VMs, no-op "
            f"executor, PostgreSQL: {round(trips / steps, 2)} round trips per step "
            f"({figures['statements']} statements, {figures['transaction_commands']} "
            f"BEGIN/COMMIT/ROLLBACK over {steps} steps); this process's CPU "
            f"{round(cpu / steps * 1000, 3)} ms per step, PostgreSQL's "
            f"{round(server / steps * 1000, 3)} ms"
        ],
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.store [--rounds N]``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="accepted; the size is fixed")
    options = parser.parse_args(argv)
    print(json.dumps(run(rounds=options.rounds), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
