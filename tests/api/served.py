"""A real ``ferryman serve`` process on Redis, with the lab and a site worker in the test process.

The worker here and the server process share the SQLite store and a private redis-server; the
plan files name the lab's endpoints. Tokens are made in the store before the server starts.
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.api.conftest import SITES, make_tokens, settings_for, write_plans
from tests.support.servers import RedisServer, free_port
from workers.embedded import Runtime, build_runtime, worker
from workers.tasks import default_executor
from workflows.demo import PASSWORD_VARIABLE, lab_topology
from workflows.migrations import upgrade
from workflows.tokens import Role

START_TIMEOUT = 60.0


def until(check: Callable[[], Any], *, timeout: float = 90.0, what: str = "") -> Any:
    """Poll ``check()`` until it returns something true; that value, or TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


@dataclass
class Served:
    """The server's URL, a token per role, the lab and the private Redis."""

    url: str
    tokens: dict[Role, str]
    lab: Any
    redis: RedisServer
    runtime: Runtime
    process: subprocess.Popen[bytes]
    log: Path

    def client(self, role: Role | None = None) -> httpx.Client:
        """An HTTP client, authenticated as ``role`` when given."""
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def status(self, run_id: str) -> str:
        """The run's status as the API reports it."""
        with self.client(Role.VIEWER) as client:
            answer = client.get(f"/api/v1/runs/{run_id}")
        assert answer.status_code == 200, answer.text
        return str(answer.json()["run"]["status"])

    def settle(self, run_id: str, *statuses: str) -> str:
        """Wait (bounded) until the run is in one of ``statuses``; returns it."""
        return str(
            until(
                lambda: (s := self.status(run_id)) in statuses and s,
                what=f"run {run_id} to be {' or '.join(statuses)}",
            )
        )

    def test_vms(self) -> list[str]:
        """Test VMs the lab holds now."""
        status, state = self.lab.admin("GET", "/state")
        assert status == 200
        return sorted(vm["name"] for vm in state["vms"] if vm.get("test_of"))


@contextmanager
def served(directory: Path) -> Iterator[Served]:
    """Redis, the lab, a worker here and ``ferryman serve`` in a process of its own."""
    from lab.testing import running_lab
    from workers.hyperv.psrp import shared_cache

    redis = RedisServer(directory / "redis")
    redis.start()
    database_url = f"sqlite:///{directory}/ferryman.db"
    settings = settings_for(
        database_url,
        broker_url=redis.url(),
        result_backend=redis.url(),
        visibility_timeout=600,
    )
    upgrade(database_url)  # as a deployment does before its workers and server start
    runtime = build_runtime(settings, default_executor(poll_interval=0.1))
    options = dict(runtime.app.conf.result_backend_transport_options or {})
    options["retry_policy"] = {"max_retries": 1, "interval_start": 0, "interval_step": 0.1}
    runtime.app.conf.result_backend_transport_options = options
    port = free_port()
    log = directory / "serve.log"
    try:
        with (
            running_lab(lab_topology(), auth="ntlm") as lab,
            worker(runtime, SITES, concurrency=12, gate_interval=0.5),
        ):
            os.environ[PASSWORD_VARIABLE] = lab.password
            urls = {name: endpoint.url for name, endpoint in lab.endpoints.items()}
            plans = write_plans(directory / "plans", urls).parent
            tokens = make_tokens(runtime, "served")
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("FERRYMAN_")},
                "FERRYMAN_DATABASE_URL": database_url,
                "FERRYMAN_BROKER_URL": redis.url(),
                "FERRYMAN_RESULT_BACKEND": redis.url(),
                "FERRYMAN_PLAN_PATHS": str(plans),
                PASSWORD_VARIABLE: lab.password,
            }
            with open(log, "wb") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", "workflows", "serve", "--port", str(port)],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            url = f"http://127.0.0.1:{port}"
            try:
                until(
                    lambda: _answers(url, process, log),
                    timeout=START_TIMEOUT,
                    what="ferryman serve to answer /healthz",
                )
                yield Served(url, tokens, lab, redis, runtime, process, log)
            finally:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)
                shared_cache().close()
                os.environ.pop(PASSWORD_VARIABLE, None)
    finally:
        runtime.db.dispose()
        gc.collect()  # result finalisers talk to Redis: run them while it is still there
        redis.stop()


def _answers(url: str, process: subprocess.Popen[bytes], log: Path) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"ferryman serve exited {process.returncode}: {log.read_text()}")
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
