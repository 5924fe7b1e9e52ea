"""An initial replication's progress, live: the worker records percent and bytes as it reads
the primary (throttled), and ``ferryman runs show [--json]``, ``runs follow --json`` and the
run's report show them rising to 100 % as the lab's (frozen) clock moves the copy on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from tests.protection.conftest import Sites
from workers.executors import context as step_context
from workers.executors.errors import StepFailed
from workers.executors.protection import enable_replication, initial_replication
from workers.progress import StepProgress
from workflows import report
from workflows.compiler import _all_hosts
from workflows.progress import snapshot, step_progress, wait_for
from workflows.protection import compile_protection
from workflows.statuses import TERMINAL_RUN, RunStatus, StepStatus
from workflows.store import Database, repository
from workflows.waiting import wait_until

pytestmark = pytest.mark.integration
KEY = "protect/crm-01/initial_replication"
TOTAL = 60 * 1024**3  # crm-01's disks: 60 GB at 10 Gbit/s take 51.5 lab seconds to copy


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "workflows", "runs", *args]


def _env(db_url: str) -> dict[str, str]:
    env = {**os.environ, "FERRYMAN_DATABASE_URL": db_url}
    for name in ("FERRYMAN_BROKER_URL", "FERRYMAN_RESULT_BACKEND"):
        env.pop(name, None)
    return env


def _read_lines(process: subprocess.Popen[str], into: list[dict[str, Any]]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        into.append(json.loads(line))


def _percents(lines: list[dict[str, Any]]) -> list[float]:
    return [ln["progress"]["percent"] for ln in list(lines) if ln.get("event") == "step_progress"]


def _recorded(db: Database, run_id: str) -> dict[str, Any] | None:
    with db.session() as session:
        return step_progress(repository.get_step(session, run_id=run_id, key=KEY))


def _reaches(db: Database, run_id: str, test: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The step's recorded progress once ``test`` holds for it (the worker polls the lab)."""
    found = wait_until(
        lambda: (lambda p: p if p is not None and test(p) else None)(_recorded(db, run_id)),
        timeout=60,
        interval=0.05,
    )
    assert found is not None, f"progress stayed at {_recorded(db, run_id)}"
    return found


def test_initial_replication_progress_rises_live_to_100(
    frozen_sites: Sites, tmp_path: Path
) -> None:
    sites = frozen_sites
    db = sites.runtime.db
    url = sites.runtime.engine.settings.database_url
    compiled = compile_protection(sites.bundle.fabric, sites.reports(), vms=["crm-01"])
    assert compiled is not None
    run = sites.runtime.engine.start_compiled(sites.bundle, compiled, requested_by="test")
    follow = subprocess.Popen(
        _cli("follow", run.id, "--json", "--interval", "0.1"),
        env=_env(url),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: list[dict[str, Any]] = []
    reader = threading.Thread(target=_read_lines, args=(follow, lines), daemon=True)
    reader.start()
    try:
        # Started, and the lab's clock frozen: nothing sent yet.
        first = _reaches(db, run.id, lambda p: p["state"] == "InitialReplicationInProgress")
        assert first["percent"] == 0.0 and first["bytes_transferred"] == 0
        assert first["bytes_total"] == TOTAL
        # ``runs follow`` shows it too (before the clock moves on, however slowly it started)
        assert wait_until(lambda: _percents(lines) or None, timeout=60, interval=0.05) == [0.0]

        # 20 of its 51.5 lab seconds: 38.8 % sent.
        assert sites.lab.admin("POST", "/time/advance", {"seconds": 20})[0] == 200
        second = _reaches(db, run.id, lambda p: p["percent"] > 0)
        assert 38 <= second["percent"] <= 39
        assert second["bytes_transferred"] == pytest.approx(TOTAL * 20 / 51.54, rel=0.01)

        shown = subprocess.run(
            _cli("show", run.id, "--json"),
            env=_env(url),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert shown.returncode == 0, shown.stderr
        step = next(s for s in json.loads(shown.stdout)["steps"] if s["key"] == KEY)
        assert step["status"] == "running" and step["progress"] == second

        table = Console(width=200, record=True)
        table.print(snapshot(db, run.id))
        text = table.export_text()
        assert f"… {second['percent']:.0f}%" in text
        assert f"crm-01 initial replication: {second['percent']:.1f}% (" in text
        assert "GB of 60.0 GB sent, InitialReplicationInProgress)" in text
        with db.session() as session:  # the API's run view is the report
            (reported,) = [s for s in report.build(session, run.id)["steps"] if s["key"] == KEY]
        assert reported["result"]["progress"] == second

        assert sites.lab.admin("POST", "/time/advance", {"seconds": 20})[0] == 200
        third = _reaches(db, run.id, lambda p: p["percent"] > second["percent"])
        assert 77 <= third["percent"] <= 78

        assert sites.lab.admin("POST", "/time/advance", {"seconds": 20})[0] == 200
        done = wait_for(db, run.id, TERMINAL_RUN, timeout=120, interval=0.05)
        follow.wait(timeout=120)
        reader.join(timeout=60)
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    assert done.status == RunStatus.SUCCEEDED, done.error
    final = _recorded(db, run.id)
    assert final is not None and final["percent"] == 100.0
    assert final["bytes_transferred"] == final["bytes_total"] == TOTAL
    with db.session() as session:
        result = repository.get_step(session, run_id=run.id, key=KEY).result
    assert result is not None and result["state"] == "Replicating" and result["bytes"] == TOTAL

    assert follow.returncode == 0, lines
    seen = _percents(lines)
    assert seen[0] == 0.0 and seen == sorted(seen) and len(set(seen)) >= 3, seen
    assert {ln["step"] for ln in lines if ln.get("event") == "step_progress"} == {KEY}
    assert lines[-1]["status"] == "succeeded"


def test_progress_writes_are_throttled_and_the_last_figures_kept_on_failure(
    frozen_sites: Sites,
) -> None:
    """One write, then figures held back until the interval passes; a failure writes them."""
    sites = frozen_sites
    db = sites.runtime.db
    compiled = compile_protection(sites.bundle.fabric, sites.reports(), vms=["crm-01"])
    assert compiled is not None
    engine = sites.runtime.engine
    run = engine.start_compiled(sites.bundle, compiled, requested_by="test")
    _reaches(db, run.id, lambda p: p["state"] == "InitialReplicationInProgress")
    assert sites.lab.admin("POST", "/time/advance", {"seconds": 60})[0] == 200
    wait_for(db, run.id, TERMINAL_RUN, timeout=120, interval=0.05)

    # A step of that run as a worker holds it: running, owned by delivery "d1".
    with db.session() as session:
        step = repository.get_step(session, run_id=run.id, key=KEY)
        step.status, step.task_id, step.result = StepStatus.RUNNING.value, "d1", None
        session.add(step)
    writer = StepProgress(db, step, "d1", interval=3600.0)
    writer.report({"percent": 10.0})
    assert _recorded(db, run.id) == {"percent": 10.0}
    writer.report({"percent": 20.0})  # within the interval: held back
    assert _recorded(db, run.id) == {"percent": 10.0}
    with pytest.raises(RuntimeError), writer:
        raise RuntimeError("the step failed")
    assert _recorded(db, run.id) == {"percent": 20.0}
    # Another delivery's writer never touches the step.
    StepProgress(db, step, "d2").report({"percent": 99.0})
    assert _recorded(db, run.id) == {"percent": 20.0}


def test_a_resumed_initial_replication_keeps_its_total_and_percent(frozen_sites: Sites) -> None:
    """A step started again (its worker died) reads the backlog left, not the whole copy:
    the figures its earlier start recorded keep the total, so it goes on from 58 %, not 0 %."""
    sites = frozen_sites
    compiled = compile_protection(sites.bundle.fabric, sites.reports(), vms=["crm-01"])
    assert compiled is not None
    enable, initial = compiled.stages[0].units[0].steps
    short = replace(initial, params=initial.params.model_copy(update={"timeout": 0.2}))
    hosts = _all_hosts(sites.bundle.fabric, list(sites.bundle.fabric.sites))
    first: list[dict[str, Any]] = []
    ctx = step_context("r", "protect", "failover", hosts, poll_interval=0.02)
    ctx.on_progress = first.append
    enable_replication(ctx, enable)
    with pytest.raises(StepFailed, match="did not finish"):
        initial_replication(ctx, short)  # gives up waiting, as a killed worker stops
    assert first[-1]["percent"] == 0.0 and first[-1]["bytes_total"] == TOTAL
    assert sites.lab.admin("POST", "/time/advance", {"seconds": 30})[0] == 200

    again: list[dict[str, Any]] = []
    resumed = step_context("r", "protect", "failover", hosts, attempt=2, poll_interval=0.02)
    resumed.on_progress, resumed.last_progress = again.append, first[-1]
    with ThreadPoolExecutor(1) as pool:
        done = pool.submit(initial_replication, resumed, initial)
        assert wait_until(lambda: again or None, timeout=60, interval=0.02)
        assert sites.lab.admin("POST", "/time/advance", {"seconds": 30})[0] == 200
        outcome = done.result(timeout=60)
    assert again[0]["bytes_total"] == TOTAL
    assert 58 <= again[0]["percent"] <= 59  # 30 of 51.5 lab seconds
    assert outcome.result["progress"]["percent"] == 100.0
    assert outcome.result["progress"]["bytes_total"] == TOTAL
