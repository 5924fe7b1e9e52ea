"""The servers tests and benchmarks start for themselves: Redis, PostgreSQL, BIND and the lab.

One place for all of them, so every test area and ``bench/`` starts a server the same way,
from a temporary directory on a loopback port, never touching the machine's shared Redis or
PostgreSQL. A server that can pick its own port does (the lab listens on ephemeral ports and
reports them); redis-server, PostgreSQL and BIND need a port named up front, so they get one
:func:`free_port` found free (for TCP and UDP alike) and a start that finds it taken is tried
again on another.

- :class:`RedisServer` / :func:`redis_server`: a private redis-server (append-only on request,
  restartable on its port and data for broker-restart drills);
- :class:`PostgresCluster` / :func:`postgres_server`: a private cluster (``initdb`` as user
  postgres when running as root), restartable and stoppable like a crash;
- :func:`bind_pair`: a primary and a secondary BIND9 with TSIG (``tests/support/bind.py``);
- :func:`lab_server`: the Hyper-V lab over real WS-Management/PSRP on ephemeral ports.
"""

from __future__ import annotations

import gc
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from glob import glob
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from plans.errors import ConfigurationError

if TYPE_CHECKING:
    from tests.support.bind import BindServers

__all__ = [
    "LOOPBACK",
    "PostgresCluster",
    "RedisServer",
    "bind_pair",
    "free_port",
    "lab_server",
    "postgres_bin",
    "postgres_server",
    "redis_server",
    "wait_for",
]

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 30.0
START_ATTEMPTS = 3  # a port found free can be taken before the server binds it


def free_port(address: str = LOOPBACK) -> int:
    """A port free for both TCP and UDP on ``address`` (DNS needs both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((address, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((address, port))
                except OSError:
                    continue
                return port
    raise RuntimeError(f"no free TCP+UDP port on {address}")


def wait_for(condition: object, *, timeout: float, interval: float = 0.05, what: str = "") -> None:
    """Poll ``condition()`` until it is true; raise TimeoutError naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what or condition}")


@dataclass
class RedisServer:
    """A redis-server of the test's own; ``appendonly`` keeps its data across restarts."""

    directory: Path
    appendonly: bool = False
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        """The ``redis://`` URL of database ``db``."""
        return f"redis://{LOOPBACK}:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        """A redis-py client (short timeouts: the server may be down on purpose)."""
        return redis.Redis(host=LOOPBACK, port=self.port, db=db, socket_timeout=5)

    def start(self) -> None:
        """Start (or start again, on the same port and data directory) and wait for PING."""
        self.directory.mkdir(parents=True, exist_ok=True)
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115 (the process owns it)
        command = [
            shutil.which("redis-server") or "redis-server",
            "--bind", LOOPBACK,
            "--port", str(self.port),
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            # every write on disk before the reply: a restart loses nothing acknowledged
            "--appendfsync", "always",
            "--protected-mode", "yes",
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for(self._pong, timeout=START_TIMEOUT, what=f"redis-server on port {self.port}")

    def _pong(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited: {(self.directory / 'redis.log').read_text()}")
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (AOF flushed) or SIGKILL; wait for the process to go."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def postgres_bin(name: str) -> str:
    """The newest installed PostgreSQL's ``name`` binary (initdb, pg_ctl, ...)."""
    found = sorted(glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise ConfigurationError(
            "PostgreSQL server binaries are missing: apt-get install postgresql"
        )
    return found[-1]


@dataclass
class PostgresCluster:
    """A PostgreSQL cluster of the test's own (initdb in a temp dir), run as user postgres.

    PostgreSQL refuses to run as root, so every command runs through ``runuser -u postgres``.
    """

    directory: Path
    port: int = field(default_factory=free_port)
    user: str = "postgres"
    options: str = ""  # more server settings (``-c name=value ...``)

    @property
    def data(self) -> Path:
        """The cluster's data directory."""
        return self.directory / "data"

    def url(self, database: str = "postgres") -> str:
        """A ``postgresql://`` URL (trust authentication on loopback)."""
        return f"postgresql://{self.user}@{LOOPBACK}:{self.port}/{database}"

    def _as_postgres(self, *command: str) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", self.user, "--"] if os.geteuid() == 0 else []
        done = subprocess.run(
            [*prefix, *command], capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {done.stderr or done.stdout}")
        return done

    def init(self) -> None:
        """Create the cluster (trust auth, loopback only)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.directory, self.user, self.user)
        self._as_postgres(
            postgres_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", self.user,
            "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        """Start on the cluster's port and wait until it accepts connections."""
        options = f"-c listen_addresses={LOOPBACK} -c port={self.port} -k {self.directory}"
        options += f" {self.options}" if self.options else ""
        self._as_postgres(
            postgres_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.directory / "pg.log"),
            "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop (``fast``: abort sessions; ``immediate``: like a crash, recovery at start)."""
        self._as_postgres(postgres_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        """Whether the server answers ``pg_isready``."""
        done = subprocess.run(
            [postgres_bin("pg_isready"), "-h", LOOPBACK, "-p", str(self.port)],
            capture_output=True,
            check=False,
        )
        return done.returncode == 0

    def pid(self) -> int:
        """The postmaster's process id (the first line of ``postmaster.pid``)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])


@contextmanager
def redis_server(
    directory: Path | None = None, *, appendonly: bool = False
) -> Iterator[RedisServer]:
    """A private redis-server for the block (in ``directory``, else a temporary one)."""
    if shutil.which("redis-server") is None:
        raise ConfigurationError("redis-server is not installed (apt-get install redis-server)")
    with tempfile.TemporaryDirectory(prefix="ferryman-redis-") as scratch:
        server = RedisServer(directory or Path(scratch), appendonly=appendonly)
        _start(server)
        try:
            yield server
        finally:
            # results nobody holds any more unsubscribe while the server still answers, not in
            # a later collection after it has gone (Celery's AsyncResult.__del__)
            gc.collect()
            server.stop()


@contextmanager
def postgres_server(
    directory: Path | None = None, *, fsync: bool = True
) -> Iterator[PostgresCluster]:
    """A private PostgreSQL cluster for the block (in ``directory``, else a temporary one);
    ``fsync=False`` for benchmarks, whose figures should not wait on the disk."""
    with tempfile.TemporaryDirectory(prefix="ferryman-pg-") as scratch:
        os.chmod(scratch, 0o755)  # the server runs as user postgres, who must reach its data
        cluster = PostgresCluster(
            directory or Path(scratch) / "cluster", options="" if fsync else "-c fsync=off"
        )
        cluster.init()
        _start(cluster)
        try:
            yield cluster
        finally:
            if cluster.running():
                cluster.stop()


def _start(server: RedisServer | PostgresCluster) -> None:
    """Start ``server``; if its port was taken meanwhile, start it again on another."""
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            server.start()
            return
        except (RuntimeError, TimeoutError):
            if attempt == START_ATTEMPTS:
                raise
            if isinstance(server, RedisServer):
                server.stop(kill=True)
            server.port = free_port()


@contextmanager
def bind_pair(*, notify: bool = True, attempts: int = 3) -> Iterator[BindServers]:
    """A primary and a secondary BIND9 with TSIG for the block (``tests/support/bind.py``)."""
    from tests.support import bind

    with bind.bind_pair(notify=notify, attempts=attempts) as servers:
        yield servers


@contextmanager
def lab_server(
    topology: Any = None, *, auth: str = "basic", time_scale: float | None = None
) -> Iterator[Any]:
    """The Hyper-V lab for the block, on ports it picks itself (``deploy/lab/topology.yaml``
    without its fixed ports unless ``topology`` is given); yields ``lab.testing.LabHandle``."""
    from lab.testing import running_lab
    from workflows.demo import lab_topology

    with running_lab(
        lab_topology() if topology is None else topology, auth=auth, time_scale=time_scale
    ) as lab:
        yield lab
