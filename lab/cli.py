"""``ferryman lab``: run the Hyper-V + VMM lab on loopback.

``ferryman lab serve TOPOLOGY.yaml --json`` prints one JSON object per host endpoint
(``host``, ``site``, ``role``, ``url``, ``auth``, ``username``, ``password``), then
``{"admin": URL}``, and serves until SIGINT or SIGTERM. Also runnable as
``python -m lab.cli serve ...``.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from types import FrameType

import click

from lab.testing import running_lab


@click.group(name="lab")
def lab_group() -> None:
    """The Hyper-V Replica + VMM lab: real WS-Management/PSRP endpoints on 127.0.0.1."""


@lab_group.command("serve")
@click.argument("topology", type=click.Path(exists=True, dir_okay=False))
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
    default="basic",
    show_default=True,
    help="basic: Basic over HTTP; ntlm: NTLM with message encryption; https: Basic over TLS.",
)
@click.option(
    "--ephemeral-ports",
    is_flag=True,
    help="Ignore the topology's fixed ports and pick free ones (parallel labs, tests).",
)
def serve(
    topology: str, time_scale: float | None, as_json: bool, auth: str, ephemeral_ports: bool
) -> None:
    """Serve the lab described by TOPOLOGY until interrupted."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            context = running_lab(
                topology, auth=auth, time_scale=time_scale, fixed_ports=not ephemeral_ports
            )
            handle = context.__enter__()
        except (ValueError, OSError) as exc:
            # TopologyError is a ValueError listing every problem with its place in the file.
            raise click.ClickException(f"cannot start the lab from {topology}: {exc}") from exc
        try:
            if as_json:
                for endpoint in handle.endpoints.values():
                    click.echo(json.dumps(endpoint.to_json()))
                click.echo(json.dumps({"admin": handle.admin_url}))
            else:
                for endpoint in handle.endpoints.values():
                    click.echo(
                        f"{endpoint.host:<10} {endpoint.site:<12} {endpoint.role:<7} "
                        f"{endpoint.url}  ({endpoint.auth})"
                    )
                click.echo(f"admin API  {handle.admin_url}")
                click.echo(f"login      {handle.server.account.username} (password: see --json)")
                click.echo("Serving; press Ctrl+C to stop.")
            sys.stdout.flush()
            stop.wait()
        finally:
            context.__exit__(None, None, None)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    lab_group()
