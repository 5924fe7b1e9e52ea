"""The ``ferryman`` command: the composition root that wires the packages together.

Sub-commands are imported lazily, so ``ferryman plan validate`` never pays for Celery or pypsrp
and a broken optional part cannot stop the others from working.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

# name -> "module:attribute" of a click command or group
SUBCOMMANDS: dict[str, str] = {
    "plan": "plans.cli:plan",
    "lab": "lab.cli:lab_group",
    "dns": "workers.dns.cli:dns",
    "run": "workflows.console:run",
    "runs": "workflows.console:runs",
    "worker": "workflows.console:worker_cmd",
    "flower": "workflows.console:flower",
    "demo": "workflows.console:demo",
    "triggers": "workflows.console:triggers",
    "serve": "workflows.api.cli:serve",
    "tokens": "workflows.api.cli:tokens",
}

# commands added to another package's group when it is loaded: group -> ["module:attribute"]
EXTENSIONS: dict[str, list[str]] = {
    "plan": ["workflows.readiness:check"],
}


def _load(reference: str) -> click.Command:
    module_name, _, attribute = reference.partition(":")
    command = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(command, click.Command):
        raise TypeError(f"{reference} is not a click command")
    return command


def _unavailable(name: str, exc: Exception) -> click.Command:
    """A stand-in that says why a sub-command cannot load, instead of breaking every command."""

    def explain() -> None:
        raise click.ClickException(f"'{name}' is unavailable in this installation: {exc}")

    return click.Command(name, callback=explain, help=f"(unavailable: {exc})")


class LazyGroup(click.Group):
    """A group whose sub-commands are imported on first use."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            try:
                command = _load(self.lazy[cmd_name])
            except (ImportError, AttributeError, TypeError) as exc:
                return _unavailable(cmd_name, exc)
            if isinstance(command, click.Group):
                for reference in EXTENSIONS.get(cmd_name, []):
                    extra = reference.rpartition(":")[2]
                    if extra in command.commands:
                        continue
                    try:
                        command.add_command(_load(reference), extra)
                    except ImportError:  # an optional extension must not break the group
                        continue
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, lazy=SUBCOMMANDS)
@click.version_option(package_name="ferryman")
def main() -> None:
    """Ferryman: disaster-recovery orchestration for Hyper-V Replica sites."""


if __name__ == "__main__":
    main()
