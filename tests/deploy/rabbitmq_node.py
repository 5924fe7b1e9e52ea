"""A RabbitMQ node of a test's own: its own node name, AMQP and distribution ports on
127.0.0.1, Erlang cookie, database and logs in a temporary folder, so a drill can stop and
start it without touching the machine's shared node on 5672.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

from tests.support.servers import LOOPBACK, free_port

SCRIPTS = Path("/usr/lib/rabbitmq/bin")
START_TIMEOUT = 90.0


def installed() -> bool:
    """Whether rabbitmq-server can be run here."""
    return (SCRIPTS / "rabbitmq-server").exists() and shutil.which("erl") is not None


class RabbitNode:
    """``rabbitmq-server`` with everything of its own; :meth:`restart` keeps its data."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.name = f"ferryman-{uuid.uuid4().hex[:8]}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.ctl_port = free_port()  # the CLI tools' own distribution port
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "enabled_plugins").write_text("[].\n")  # no management plugin, no ports
        (directory / "rabbitmq-env.conf").write_text("")  # not the machine's node's settings
        (directory / "rabbitmq.conf").write_text(f"listeners.tcp.local = {LOOPBACK}:{self.port}\n")

    def url(self, vhost: str = "") -> str:
        return f"amqp://guest:guest@{LOOPBACK}:{self.port}/{vhost}"

    def env(self) -> dict[str, str]:
        d = self.directory
        return {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(d),  # the Erlang cookie is made here
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": LOOPBACK,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CTL_DIST_PORT_MIN": str(self.ctl_port),
            "RABBITMQ_CTL_DIST_PORT_MAX": str(self.ctl_port),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_PID_FILE": str(d / "rabbitmq.pid"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "ERL_EPMD_ADDRESS": LOOPBACK,
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """``rabbitmqctl -n NODE ARGS`` against this node; its output, or RuntimeError."""
        done = subprocess.run(
            [str(SCRIPTS / "rabbitmqctl"), "-n", self.name, *args],
            env=self.env(), capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def start(self) -> None:
        """Start the node and wait until it has booted (bounded)."""
        with (self.directory / "server.log").open("ab") as log:
            self.process = subprocess.Popen(
                [str(SCRIPTS / "rabbitmq-server")],
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        problem = ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                problem = f"rabbitmq-server exited {self.process.returncode}"
                break
            try:  # fails at once until the node has registered with epmd
                self.ctl("await_startup", "--timeout", "30", timeout=60)
                return
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                problem = str(exc).splitlines()[0]
            time.sleep(1)
        log_text = (self.directory / "server.log").read_text(errors="replace")[-3000:]
        self.stop(kill=True)
        raise RuntimeError(f"RabbitMQ node {self.name} did not start: {problem}\n{log_text}")

    def stop(self, *, kill: bool = False) -> None:
        """Stop the node: ``rabbitmqctl stop`` (an orderly shutdown) or SIGKILL, like a crash."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        else:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.ctl("stop")
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)

    def restart(self, *, kill: bool = False) -> None:
        """Stop and start again on the same ports with the same data."""
        self.stop(kill=kill)
        self.start()

    def add_vhost(self, vhost: str) -> str:
        """A vhost guest may use; its AMQP URL."""
        self.ctl("add_vhost", vhost)
        self.ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        return self.url(vhost)
