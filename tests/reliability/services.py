"""Throwaway servers for the reliability tests: redis-server and a PostgreSQL cluster.

Each runs from a temporary directory on a free loopback port, so a test can kill and restart
it without touching the machine's shared Redis or PostgreSQL.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from glob import glob
from pathlib import Path

import redis

from tests.support.bind import free_port

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 30.0


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
        raise RuntimeError("PostgreSQL server binaries are missing: apt-get install postgresql")
    return found[-1]


@dataclass
class PostgresCluster:
    """A PostgreSQL cluster of the test's own (initdb in a temp dir), run as user postgres.

    PostgreSQL refuses to run as root, so every command runs through ``runuser -u postgres``.
    """

    directory: Path
    port: int = field(default_factory=free_port)
    user: str = "postgres"

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
