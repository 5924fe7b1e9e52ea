"""``ferryman lab``: run the Hyper-V + VMM lab.

``ferryman lab serve [TOPOLOGY.yaml] --json`` prints one JSON object per host endpoint
(``host``, ``site``, ``role``, ``url``, ``auth``, ``username``, ``password``), then
``{"admin": URL}``, and serves until SIGINT or SIGTERM. Also runnable as
``python -m lab.cli serve ...``. Without a topology it serves the example one
(``deploy/lab/topology.yaml``, which the example fabric describes), with NTLM as the example
fabric logs in. On loopback by default; ``--listen 0.0.0.0`` for a container network.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import click
import yaml

from lab.examples import topology_path
from lab.server.domain import open_world
from lab.server.service import LOOPBACK, LabServer

PASSWORD_VARIABLE = "FERRYMAN_LAB_PASSWORD"  # what the example fabric's credential refers to
MAX_PASSWORD_FILE = 4096


def read_password(path: str) -> str:
    """The password in ``path``: its first line, stripped; refused when empty or huge."""
    file = Path(path)
    if not file.is_file():
        raise click.BadParameter(f"{path} is not a file", param_hint="--password-file")
    if file.stat().st_size > MAX_PASSWORD_FILE:
        raise click.BadParameter(f"{path} is larger than 4 KB", param_hint="--password-file")
    lines = file.read_text(encoding="utf-8").splitlines()
    password = lines[0].strip() if lines else ""
    if not password:
        raise click.BadParameter(f"{path} holds no password", param_hint="--password-file")
    return password


def prepared_topology(
    path: str, *, port_base: int | None, password: str | None
) -> dict[str, Any]:
    """The topology at ``path`` with ports from ``port_base`` (hosts in file order, then the
    admin API) and, when given, the fixed ``password`` instead of a generated one."""
    data: dict[str, Any] = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise click.ClickException(f"{path}: a lab topology is a mapping")
    if port_base is not None:
        hosts = data.get("hosts") or []
        for index, host in enumerate(hosts):
            host["port"] = port_base + index
        data["admin_port"] = port_base + len(hosts)
    if password is not None:
        # the topology takes a password only by reference (never as a value in a file)
        data.setdefault("credentials", {})["password"] = f"env:{PASSWORD_VARIABLE}"
    return data


@click.group(name="lab")
def lab_group() -> None:
    """The Hyper-V Replica + VMM lab: real WS-Management/PSRP endpoints."""


@lab_group.command("serve")
@click.argument("topology", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--time-scale",
    type=click.FloatRange(min=0),
    default=None,
    help="Real seconds per lab second (0.01 runs lab time 100x faster; 0 freezes it).",
)
@click.option("--json", "as_json", is_flag=True, help="Print endpoints as JSON lines.")
@click.option(
    "--auth",
    type=click.Choice(["basic", "ntlm", "https"]),
    default="ntlm",
    show_default=True,
    help="ntlm: NTLM with message encryption (as the example fabric logs in); basic: Basic "
    "over HTTP; https: Basic over TLS.",
)
@click.option(
    "--listen",
    default=LOOPBACK,
    show_default=True,
    help="Address every endpoint and the admin API listen on (0.0.0.0: every address).",
)
@click.option(
    "--advertise",
    default=None,
    help="Host name printed in the URLs (default: the listen address, or this machine's "
    "name when listening on every address).",
)
@click.option(
    "--port-base",
    type=click.IntRange(1, 65535),
    default=None,
    help="Hosts listen on PORT, PORT+1, ... in the topology's order, the admin API next "
    "(default: the topology's ports).",
)
@click.option(
    "--ephemeral-ports",
    is_flag=True,
    help="Ignore the topology's fixed ports and pick free ones (parallel labs, tests).",
)
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Log in with the password in this file (first line) instead of a generated one.",
)
@click.option(
    "--password-env",
    is_flag=True,
    help=f"Log in with the password in ${PASSWORD_VARIABLE} instead of a generated one.",
)
def serve(
    topology: str | None,
    time_scale: float | None,
    as_json: bool,
    auth: str,
    listen: str,
    advertise: str | None,
    port_base: int | None,
    ephemeral_ports: bool,
    password_file: str | None,
    password_env: bool,
) -> None:
    """Serve the lab described by TOPOLOGY (default: the example topology) until interrupted."""
    source = topology or str(topology_path())
    password: str | None = None
    if password_file is not None:
        password = read_password(password_file)
        os.environ[PASSWORD_VARIABLE] = password
    elif password_env:
        password = os.environ.get(PASSWORD_VARIABLE) or None
        if password is None:
            raise click.UsageError(f"--password-env: {PASSWORD_VARIABLE} is not set")
    with _StopSignals() as stop:
        try:
            world = open_world(
                prepared_topology(source, port_base=port_base, password=password),
                time_scale=time_scale,
            )
        except (ValueError, OSError) as exc:
            # TopologyError is a ValueError listing every problem with its place in the file.
            raise click.ClickException(f"cannot start the lab from {source}: {exc}") from exc
        try:
            server = LabServer(
                world.backend,
                world.account,
                auth=auth,
                admin_port=world.admin_port,
                fixed_ports=not ephemeral_ports,
                listen=listen,
                advertise=advertise,
            )
            try:
                server.start()
            except OSError as exc:
                raise click.ClickException(f"cannot start the lab: {exc}") from exc
            try:
                _announce(server, as_json)
                stop.wait()
            finally:
                _bounded(server.stop, "the lab's listeners")
        finally:
            _bounded(world.close, "the lab's world")


class _StopSignals:
    """SIGINT and SIGTERM as a byte on a socket pair (:func:`signal.set_wakeup_fd`), which
    :meth:`wait` blocks on. Nothing runs in a Python signal handler but a no-op: setting a
    :class:`threading.Event` there deadlocks when the signal lands while the main thread holds
    the event's lock inside ``Event.wait``."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self) -> _StopSignals:
        self._reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)
        self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        self._previous = {s: signal.signal(s, _ignore_in_python) for s in self.SIGNALS}
        return self

    def wait(self) -> None:
        """Block until a stop signal arrives (or has arrived since :meth:`__enter__`)."""
        self._reader.recv(1)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self._previous_fd)
        self._reader.close()
        self._writer.close()


def _ignore_in_python(signum: int, frame: FrameType | None) -> None:
    """The C-level handler has already written the signal to the wakeup socket."""


STOP_TIMEOUT = 10.0  # seconds a shutdown step may take before the lab exits without it


def _bounded(step: Callable[[], None], what: str) -> None:
    """Run a shutdown step in a daemon thread and wait at most :data:`STOP_TIMEOUT`: a stop
    signal must end the lab even if one listener or connection does not close."""
    thread = threading.Thread(target=step, name=f"lab-stop-{what}", daemon=True)
    thread.start()
    thread.join(STOP_TIMEOUT)
    if thread.is_alive():
        click.echo(f"lab: {what} did not stop within {STOP_TIMEOUT:g} s; exiting anyway", err=True)


def _announce(server: LabServer, as_json: bool) -> None:
    if as_json:
        for endpoint in server.endpoints.values():
            click.echo(json.dumps(endpoint.to_json()))
        click.echo(json.dumps({"admin": server.admin_url}))
    else:
        for endpoint in server.endpoints.values():
            click.echo(
                f"{endpoint.host:<10} {endpoint.site:<12} {endpoint.role:<7} "
                f"{endpoint.url}  ({endpoint.auth})"
            )
        click.echo(f"admin API  {server.admin_url}")
        click.echo(f"login      {server.account.username} (password: see --json)")
        click.echo("Serving; press Ctrl+C to stop.")
    sys.stdout.flush()


if __name__ == "__main__":
    lab_group()
