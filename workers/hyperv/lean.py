"""A leaner pypsrp: the pipeline message without a deep copy of every command.

pypsrp serialises a pipeline's commands through ``Pipeline._get_statements``, which deep-copies
every command each time it is read (twice per message: for ``Cmds`` and for ``ExtraCmds``)
because a command shared by several statements would otherwise be serialised as one object
under two parents. Ferryman's pipelines are one statement (``add_cmdlet`` after
``add_cmdlet``, or one script), where no command has two parents: each is serialised once,
so the copy only costs CPU (about a seventh of a call's client CPU, measured with
``python -m bench.client --profile``). The patched method returns the commands themselves
for a single statement and falls back to pypsrp's own copy for anything else, so the bytes
on the wire are the same.
"""

from __future__ import annotations

from typing import Any

from pypsrp.complex_objects import Pipeline

_original = Pipeline._get_statements
_installed = False


def _statements_without_copy(self: Any) -> list[list[Any]]:
    commands = list(self.commands)
    # the last command ends the statement, as pypsrp's own method sets it
    commands[-1].end_of_statement = True
    if any(command.end_of_statement for command in commands[:-1]):
        return list(_original(self))  # several statements: pypsrp's copy keeps them apart
    return [commands]


def install() -> None:
    """Replace ``Pipeline._get_statements`` once per process (idempotent)."""
    global _installed
    if not _installed:
        Pipeline._get_statements = _statements_without_copy  # type: ignore[method-assign]
        _installed = True
