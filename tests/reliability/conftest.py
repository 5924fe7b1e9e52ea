"""Fixtures of the reliability tests: servers of their own, worker processes, the lab password."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.reliability.drill import PASSWORD_VARIABLE, Stack, WorkerProcess
from tests.support.bind import BindServers, bind_pair
from tests.support.servers import RedisServer

SpawnWorker = Callable[[str], WorkerProcess]


@pytest.fixture
def lab_password(monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh random lab password, in this process's environment for the lab to read."""
    password = secrets.token_urlsafe(18)
    monkeypatch.setenv(PASSWORD_VARIABLE, password)
    return password


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, with the append-only file on."""
    server = RedisServer(tmp_path / "redis", appendonly=True)
    server.start()
    try:
        yield server
    finally:
        server.stop(kill=True)


@pytest.fixture(scope="module")
def bind() -> Iterator[BindServers]:
    """BIND9 primary + secondary serving corp.example, shared by a module's tests."""
    with bind_pair() as servers:
        yield servers


@pytest.fixture
def stack(redis_server: RedisServer, tmp_path: Path, lab_password: str) -> Stack:
    """Redis, a SQLite store in the test's directory and the lab password."""
    return Stack(redis_server, f"sqlite:///{tmp_path}/ferryman.db", lab_password, tmp_path)


@pytest.fixture
def spawn_worker(stack: Stack) -> Iterator[SpawnWorker]:
    """``spawn_worker(name)`` starts a worker process; all are killed at the end of the test."""
    started: list[WorkerProcess] = []

    def spawn(name: str) -> WorkerProcess:
        worker = WorkerProcess(stack, name)
        started.append(worker)
        return worker.start()

    yield spawn
    for worker in started:
        worker.kill()
