"""Fixtures of the deployment tests: a Redis and a migrated store, a worker process on them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import RedisServer
from workflows.migrations import upgrade

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def environment(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A Redis of the test's own and a migrated store: what a worker is configured with."""
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    database = f"sqlite:///{tmp_path}/ferryman.db"
    upgrade(database)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRYMAN_")}
    env.update(
        FERRYMAN_DATABASE_URL=database,
        FERRYMAN_BROKER_URL=redis.url(0),
        FERRYMAN_RESULT_BACKEND=redis.url(1),
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    try:
        yield env
    finally:
        redis.stop(kill=True)


@pytest.fixture
def worker(environment: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """``ferryman worker --site gothenburg`` in a child process; yields its node name."""
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 (the process owns it)
    process = subprocess.Popen(
        [sys.executable, "-m", "workflows.cli", "worker", "--site", "gothenburg"],
        env=environment,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    try:
        yield "ferryman-gothenburg@"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
