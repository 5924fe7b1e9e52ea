"""Every command the deployment files start is one the real CLI accepts."""

from __future__ import annotations

import shlex
from pathlib import Path

import click
import pytest
import yaml

from workflows.cli import main

ROOT = Path(__file__).resolve().parents[2]


def compose_commands() -> list[list[str]]:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    # services built from the Ferryman image run the `ferryman` entry point with `command`
    return [s["command"] for s in services.values() if "build" in s and "command" in s]


def systemd_commands() -> list[list[str]]:
    commands: list[list[str]] = []
    for unit in sorted((ROOT / "deploy" / "systemd").glob("*.service")):
        for line in unit.read_text().splitlines():
            if line.startswith("ExecStart="):
                argv = shlex.split(line.removeprefix("ExecStart="))
                assert Path(argv[0]).name == "ferryman", unit
                commands.append(argv[1:])
    return commands


def kubernetes_commands() -> list[list[str]]:
    commands: list[list[str]] = []
    for manifest in sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(manifest.read_text()):
            containers = (
                (doc or {}).get("spec", {}).get("template", {}).get("spec", {}).get("containers")
            )
            commands.extend(c["args"] for c in containers or [] if "args" in c)
    return commands


def resolve(argv: list[str]) -> None:
    """Parse ``argv`` down to its leaf command the way click would, without running it."""
    command: click.Command = main
    ctx = click.Context(main, info_name="ferryman")
    args = list(argv)
    while isinstance(command, click.Group):
        assert args, f"{argv}: names a group, not a command"
        sub = command.get_command(ctx, args[0])
        assert sub is not None, f"{argv}: no command {args[0]!r}"
        ctx = click.Context(sub, info_name=args[0], parent=ctx)
        command, args = sub, args[1:]
    command.make_context(ctx.info_name, args, parent=ctx.parent)


COMMANDS = compose_commands() + systemd_commands() + kubernetes_commands()


def test_deployment_files_name_commands() -> None:
    names = {argv[0] for argv in COMMANDS}
    assert {"worker", "triggers", "flower", "lab"} <= names


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(a) for a in COMMANDS])
def test_each_deployed_command_parses(argv: list[str]) -> None:
    resolve(argv)


def test_a_command_the_cli_lacks_is_caught() -> None:
    with pytest.raises(AssertionError, match="no command 'consume'"):
        resolve(["runs", "consume"])
    with pytest.raises(click.UsageError):
        resolve(["worker", "--engine"])  # --site is required
