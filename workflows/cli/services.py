"""Long-running commands: ``ferryman worker``, ``triggers``, ``flower`` and ``demo``."""

from __future__ import annotations

import ipaddress
import os

import click

from plans.errors import ConfigurationError
from workflows.cli.output import Exit, console, say, stop
from workflows.cli.runs import settings
from workflows.runtime import serve_triggers, serve_worker, start_flower

LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")
FLOWER_DEFAULT_ADDRESS = "127.0.0.1"
FLOWER_DEFAULT_PORT = "5555"


@click.command("worker")
@click.option("--site", "sites", multiple=True, required=True, help="Site whose queue to take.")
@click.option("--concurrency", default=None, type=int, help="Threads (default from settings).")
@click.option("--engine/--no-engine", default=True, help="Also take the engine queue.")
@click.option("--loglevel", default="INFO")
def worker_cmd(
    sites: tuple[str, ...], concurrency: int | None, engine: bool, loglevel: str
) -> None:
    """A Celery worker (threads pool) for sites' queues and, by default, the engine queue."""
    serve_worker(settings(), sites, concurrency=concurrency, engine_queue=engine, loglevel=loglevel)


def _option_value(args: list[str], name: str) -> str | None:
    """The value of ``--name=V`` or ``--name V`` in Flower's arguments (the last one wins)."""
    value: str | None = None
    for index, arg in enumerate(args):
        if arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
        elif arg == f"--{name}" and index + 1 < len(args):
            value = args[index + 1]
    return value


def is_loopback(address: str) -> bool:
    """Whether ``address`` (Flower's ``--address``) listens on loopback only."""
    host = address.strip().strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "" (every address), a name that may resolve anywhere


def flower_arguments(args: list[str], *, authenticated: bool) -> list[str]:
    """Flower's arguments: loopback and port 5555 unless given; refused beyond loopback
    without authentication (a ConfigurationError says what to set)."""
    result = list(args)
    address = _option_value(result, "address")
    if address is None:
        result.insert(0, f"--address={FLOWER_DEFAULT_ADDRESS}")
        address = FLOWER_DEFAULT_ADDRESS
    if _option_value(result, "port") is None:
        result.insert(0, f"--port={FLOWER_DEFAULT_PORT}")  # first: never inside a "--x V" pair
    if _option_value(result, "basic-auth") is not None or _option_value(result, "basic_auth"):
        raise ConfigurationError(
            "pass Flower's credentials as FERRYMAN_FLOWER_BASIC_AUTH or "
            "FERRYMAN_FLOWER_BASIC_AUTH_FILE, not on the command line (anyone can read it)"
        )
    oauth = _option_value(result, "auth") is not None
    if not is_loopback(address) and not (authenticated or oauth):
        raise ConfigurationError(
            f"Flower would listen on {address or 'every address'} without authentication: set "
            "FERRYMAN_FLOWER_BASIC_AUTH_FILE (user:password), pass --auth for OAuth, or keep "
            "the default loopback address"
        )
    return result


@click.command(
    "flower", context_settings={"ignore_unknown_options": True, "allow_extra_args": True}
)
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
def flower(flower_args: tuple[str, ...]) -> None:
    """Flower (Celery's web monitor) on the configured broker; extra arguments go to it.

    Listens on 127.0.0.1:5555 unless --address / --port say otherwise; beyond loopback it
    needs authentication (FERRYMAN_FLOWER_BASIC_AUTH[_FILE], or --auth for OAuth).
    """
    loaded = settings(store=False)
    authenticated = loaded.flower_basic_auth is not None or bool(
        os.environ.get("FLOWER_BASIC_AUTH") or os.environ.get("FLOWER_AUTH")
    )
    args = flower_arguments(list(flower_args), authenticated=authenticated)
    start_flower(loaded, args, os.environ)  # type: ignore[arg-type]


@click.command("demo")
@click.option("--no-live", is_flag=True, help="Print tables instead of a live view.")
@click.option("--timeout", default=120.0, help="Seconds to wait for each run.")
def demo(no_live: bool, timeout: float) -> None:
    """The example plan's test failover and cleanup against the lab, all in this process."""
    from workflows.demo import run_demo

    result = run_demo(console=console, live=not no_live, timeout=timeout)
    stop(Exit.DONE if result.ok else Exit.FAILED)


@click.command("triggers")
@click.option("--poll", default=1.0, help="Seconds between checks for a stop request.")
def triggers(poll: float) -> None:
    """Start runs from JSON messages on the ferryman.runs queue (until interrupted).

    Plans come from FERRYMAN_PLAN_PATHS; refused messages go to ferryman.runs.dead with the
    reason.
    """
    serve_triggers(settings(), poll=poll, announce=lambda line: say(line))
