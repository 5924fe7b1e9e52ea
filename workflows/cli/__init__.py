"""The ``ferryman`` command: thin click commands that parse, call an operation and render.

Sub-commands are imported lazily, so ``ferryman plan validate`` never pays for Celery or pypsrp.
A sub-command that fails to import is shown with its error (``--debug``: with the traceback),
never hidden. Every error ends the command with one line and the documented exit status
(:class:`workflows.cli.output.Exit`); ``--debug`` or ``FERRYMAN_DEBUG=1`` adds the traceback.
"""

from __future__ import annotations

import importlib
import traceback
from typing import Any

import click

from workflows.cli.errors import describe
from workflows.cli.output import Exit, error_line, errors
from workflows.settings import debug_requested

# name -> "module:attribute" of a click command or group; add a command with one line
SUBCOMMANDS: dict[str, str] = {
    "plan": "plans.cli:plan",
    "lab": "lab.cli:lab_group",
    "dns": "workers.dns.cli:dns",
    "run": "workflows.cli.runs:run",
    "runs": "workflows.cli.runs:runs",
    "worker": "workflows.cli.services:worker_cmd",
    "flower": "workflows.cli.services:flower",
    "demo": "workflows.cli.services:demo",
    "triggers": "workflows.cli.services:triggers",
    "protect": "workflows.cli.protect:protect",
    "serve": "workflows.api.cli:serve",
    "tokens": "workflows.api.cli:tokens",
    "commands": "workflows.api.cli:commands",
    "db": "workflows.cli.db:db",
    "drills": "workflows.cli.drills:drills_group",
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


class BrokenCommand(click.Command):
    """A sub-command that could not be imported: listed in ``--help`` with the reason, and
    raising the import's own error when invoked (so it is reported, never hidden)."""

    def __init__(self, name: str, error: Exception) -> None:
        super().__init__(name, help=f"(cannot load: {type(error).__name__}: {error})")
        self.error = error

    def invoke(self, ctx: click.Context) -> Any:
        """Raise the error that stopped the import."""
        raise self.error


class LazyGroup(click.Group):
    """A group whose sub-commands are imported on first use, and whose errors are one line."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        try:
            command = _load(self.lazy[cmd_name])
        except Exception as exc:  # shown when used, with its traceback under --debug
            return BrokenCommand(cmd_name, exc)
        if isinstance(command, click.Group):
            for reference in EXTENSIONS.get(cmd_name, []):
                extra = reference.rpartition(":")[2]
                if extra not in command.commands:
                    try:
                        command.add_command(_load(reference), extra)
                    except Exception as exc:
                        command.add_command(BrokenCommand(extra, exc), extra)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            error_line("interrupted")
            raise click.exceptions.Exit(130) from None
        except Exception as exc:
            if debug_requested() or (ctx.obj or {}).get("debug"):
                errors.print(traceback.format_exc(), end="", markup=False)
            error_line(describe(exc))
            raise click.exceptions.Exit(int(Exit.FAILED)) from None


@click.group(cls=LazyGroup, lazy=SUBCOMMANDS)
@click.version_option(package_name="ferryman")
@click.option("--debug", is_flag=True, help="Show tracebacks (or set FERRYMAN_DEBUG=1).")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Ferryman: disaster-recovery orchestration for Hyper-V Replica sites.

    Exit statuses: 0 done; 1 refused or failed (bad input, wrong state, settings, a run that
    failed, was compensated or cancelled); 2 a malformed command line; 3 recorded but not yet
    sent (the broker was unreachable: the workers send it when it is back).
    """
    ctx.obj = {"debug": debug}


if __name__ == "__main__":
    main()
