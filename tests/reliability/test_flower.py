"""Flower, the operators' dashboard, on the broker of real worker processes: ``ferryman flower``
lists the worker and every task of a run with its final state, and shows no secret.

Flower learns of tasks from Celery's events (``task-sent`` from the engine, ``task-received``,
``task-started`` and ``task-succeeded`` from the workers) and of workers from their
heartbeats, so this checks that Ferryman's processes send what Flower needs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

import pytest

from tests.reliability.conftest import SpawnWorker
from tests.reliability.drill import (
    PASSWORD_VARIABLE,
    ROOT,
    Stack,
    planned_run,
)
from tests.support.bind import BindServers, free_port
from tests.support.servers import wait_for
from workflows.compiler import CompiledRun
from workflows.steps import TASK_ADVANCE, TASK_VM
from workflows.store import repository


def fetch(url: str) -> tuple[int, bytes]:
    """GET ``url`` (loopback, no proxy); returns the status and body."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except OSError:
        return 0, b""


def tasks_of(base: str, run_id: str) -> dict[str, dict[str, Any]]:
    """Flower's tasks (``/api/tasks``) whose arguments name ``run_id``."""
    status, body = fetch(f"{base}/api/tasks?limit=10000")
    if status != 200:
        return {}
    tasks: dict[str, dict[str, Any]] = json.loads(body)
    return {uuid: task for uuid, task in tasks.items() if run_id in str(task.get("kwargs"))}


def test_flower_lists_the_worker_and_every_task_of_a_run(
    stack: Stack, bind: BindServers, spawn_worker: SpawnWorker, lab_password: str
) -> None:
    worker = spawn_worker("flower")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in stack.env().items() if k != PASSWORD_VARIABLE}
    # Flower 2 serves its JSON API only with authentication or this explicit opt-in.
    env["FLOWER_UNAUTHENTICATED_API"] = "true"
    log_path = stack.directory / "flower.log"
    with open(log_path, "wb") as log:
        flower = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "workflows.cli",
                "flower",
                "--address=127.0.0.1",
                f"--port={port}",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            lambda: fetch(f"{base}/healthcheck") == (200, b"OK"),
            timeout=60,
            what=f"Flower on port {port} ({log_path})",
        )
        with planned_run(stack, bind) as (runtime, run), runtime.db.session() as session:
            compiled = CompiledRun.from_json(repository.get_run(session, run_id=run.id).compiled)
        units = sum(1 for stage in compiled.stages for unit in stage.units if unit.vm)
        assert units >= 7  # the example plan's seven VMs, at least one unit each

        def all_vm_units_succeeded() -> bool:
            states = Counter(
                task["state"] for task in tasks_of(base, run.id).values() if task["name"] == TASK_VM
            )
            return states == Counter({"SUCCESS": units})

        wait_for(all_vm_units_succeeded, timeout=30, what="Flower to see every unit succeed")
        tasks = tasks_of(base, run.id)
        names = Counter(task["name"] for task in tasks.values())
        assert names[TASK_VM] == units and names[TASK_ADVANCE] >= 1
        # each task carries where it ran and when it was received, started and finished
        for task in tasks.values():
            if task["name"] == TASK_VM:
                assert task["worker"].startswith("reliability-"), task
                assert task["received"] and task["started"] and task["succeeded"], task
        status, body = fetch(f"{base}/api/workers?refresh=1")
        assert status == 200
        assert [name for name in json.loads(body) if name.startswith("reliability-")]
        status, page = fetch(f"{base}/tasks")
        assert status == 200 and b"<html" in page.lower()
        assert lab_password.encode() not in json.dumps(tasks).encode()
    finally:
        flower.terminate()
        try:
            flower.wait(timeout=15)
        except subprocess.TimeoutExpired:
            flower.kill()
        worker.stop()
    if flower.returncode not in (0, -15):
        pytest.fail(f"Flower exited with {flower.returncode}: {log_path.read_text()[-2000:]}")
