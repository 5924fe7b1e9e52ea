"""RabbitMQ as the broker: the engine's and sites' queues are quorum queues, sends are
confirmed, and the worker-kill drill of tests/reliability passes on it as on Redis.

RabbitMQ runs on the machine (127.0.0.1:5672, guest/guest); each test uses a vhost of its
own, made and removed with rabbitmqctl.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.reliability.conftest import bind, lab_password, redis_server  # noqa: F401
from tests.reliability.drill import Stack, WorkerProcess
from tests.reliability.test_worker_crash import FAST_SEEDS, check, crash_trial
from tests.support.bind import BindServers
from tests.support.servers import RedisServer
from workers.app import create_app
from workflows.settings import Settings

RABBITMQCTL = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"

pytestmark = pytest.mark.skipif(
    not Path(RABBITMQCTL).exists(), reason="rabbitmqctl is not installed"
)


def rabbitmqctl(*args: str) -> str:
    done = subprocess.run(
        [RABBITMQCTL, *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture
def amqp_url() -> Iterator[str]:
    """A vhost of this test's own on the machine's RabbitMQ."""
    vhost = f"ferryman-deploy-{uuid.uuid4().hex[:10]}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    finally:
        rabbitmqctl("delete_vhost", vhost)


@dataclass
class RabbitStack(Stack):
    """The reliability drills' stack with RabbitMQ as the broker (Redis keeps the results)."""

    broker: str = ""

    def settings(self) -> Settings:
        return super().settings().model_copy(update={"broker_url": self.broker})


def queue_types(amqp_url: str) -> dict[str, str]:
    vhost = amqp_url.rsplit("/", 1)[1]
    out = rabbitmqctl("list_queues", "-p", vhost, "--quiet", "--no-table-headers", "name", "type")
    return dict(line.split("\t")[:2] for line in out.splitlines() if "\t" in line)


def test_the_app_confirms_sends_and_asks_for_quorum_queues(amqp_url: str) -> None:
    app = create_app(Settings(broker_url=amqp_url, result_backend="redis://127.0.0.1:1/1"))
    assert app.conf.broker_transport_options == {"confirm_publish": True}
    assert app.conf.task_default_queue_type == "quorum"
    assert app.conf.task_create_missing_queue_type == "quorum"


def test_worker_kills_on_rabbitmq(
    amqp_url: str,
    redis_server: RedisServer,  # noqa: F811
    bind: BindServers,  # noqa: F811
    lab_password: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    stack = RabbitStack(
        redis_server, f"sqlite:///{tmp_path}/ferryman.db", lab_password, tmp_path,
        broker=amqp_url,
    )  # fmt: skip
    started: list[WorkerProcess] = []

    def spawn(name: str) -> WorkerProcess:
        worker = WorkerProcess(stack, name)
        started.append(worker)
        return worker.start()

    try:
        worker = spawn("first")
        with stack.runtime() as runtime:
            for seed in FAST_SEEDS:
                trial, worker = crash_trial(stack, runtime, bind, worker, spawn, seed)
                check(trial, bind)
        types = queue_types(amqp_url)
        ferryman_queues = {name: kind for name, kind in types.items() if "ferryman" in name}
        assert ferryman_queues, types
        assert set(ferryman_queues.values()) == {"quorum"}, types
    finally:
        for worker in started:
            worker.kill()
