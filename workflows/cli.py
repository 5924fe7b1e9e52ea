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
    "lab": "lab.cli:lab",
    "dns": "workers.dns.cli:dns",
}


class LazyGroup(click.Group):
    """A group whose sub-commands are imported on first use."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module_name, _, attribute = self.lazy[cmd_name].partition(":")
            command = getattr(importlib.import_module(module_name), attribute)
            if not isinstance(command, click.Command):
                raise TypeError(f"{self.lazy[cmd_name]} is not a click command")
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, lazy=SUBCOMMANDS)
@click.version_option(package_name="ferryman")
def main() -> None:
    """Ferryman: disaster-recovery orchestration for Hyper-V Replica sites."""


if __name__ == "__main__":
    main()
