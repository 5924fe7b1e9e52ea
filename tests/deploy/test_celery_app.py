"""Celery's own tools find Ferryman's app where Celery users look: ``celery -A workers``."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.support.servers import wait_for

ROOT = Path(__file__).resolve().parents[2]
CELERY = str(Path(sys.executable).with_name("celery"))


def celery(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CELERY, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("app", ["workers", "workers.app"])
def test_inspect_ping_answers_from_a_ferryman_worker(
    app: str, environment: dict[str, str], worker: str, tmp_path: Path
) -> None:
    replies: list[str] = []

    def pong() -> bool:
        done = celery("-A", app, "inspect", "ping", "-t", "2", env=environment, cwd=tmp_path)
        replies.append(done.stdout + done.stderr)
        return done.returncode == 0

    wait_for(pong, timeout=90, interval=1, what="a worker answering celery inspect ping")
    assert worker in replies[-1] and "pong" in replies[-1]


def test_events_shows_the_worker(environment: dict[str, str], worker: str, tmp_path: Path) -> None:
    assert shutil.which(CELERY) is not None
    dump = subprocess.Popen(
        [CELERY, "-A", "workers", "events", "--dump"],
        env=environment,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: list[str] = []

    def read() -> None:
        assert dump.stdout is not None
        seen.extend(dump.stdout)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        # the worker announces itself ("started"), then sends a heartbeat every two seconds
        wait_for(
            lambda: any(worker in line for line in seen),
            timeout=90,
            interval=0.5,
            what=f"{worker} in celery events",
        )
    finally:
        dump.terminate()
        dump.wait(timeout=20)
        reader.join(timeout=10)


def test_the_app_is_configured_from_the_environment(environment: dict[str, str]) -> None:
    code = "import workers; print(workers.celery.conf.broker_url, workers.celery.main)"
    done = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == [environment["FERRYMAN_BROKER_URL"], "ferryman"]
