"""What the commands print and the exit statuses they return.

The console never interprets markup or emoji codes: names, messages and errors come from plans,
hosts and operators and print exactly as written (a VM named ``[/]`` or ``:smile:`` is just
text). Styling is applied with :class:`rich.text.Text` spans, never by formatting markup.
"""

from __future__ import annotations

import enum
import sys
from typing import Any

from rich.console import Console
from rich.text import Text


class Exit(enum.IntEnum):
    """Exit statuses, as documented in the README (``ferryman`` exit statuses)."""

    DONE = 0  # the command did what it was asked (a run succeeded, or waits at a gate)
    FAILED = 1  # refused (bad input, wrong state, configuration) or the run failed
    USAGE = 2  # click's own status for a malformed command line
    NOT_DISPATCHED = 3  # recorded in the store, not yet sent: the broker was unreachable


def make_console(stderr: bool = False) -> Console:
    """A console that prints data literally (no markup, no emoji codes, no highlighting)."""
    return Console(stderr=stderr, markup=False, emoji=False, highlight=False)


console = make_console()
errors = make_console(stderr=True)


def styled(*parts: Any) -> Text:
    """Text from plain strings and (text, style) pairs; nothing in them is read as markup."""
    return Text.assemble(*[(str(p[0]), p[1]) if isinstance(p, tuple) else str(p) for p in parts])


def say(*parts: Any) -> None:
    """Print one line built with :func:`styled`."""
    console.print(styled(*parts), soft_wrap=True)  # one line; the terminal wraps it


def error_line(message: str) -> None:
    """``error: message`` on standard error."""
    errors.print(styled(("error:", "bold red"), " ", message), soft_wrap=True)


def notice(message: str) -> None:
    """A notice on standard error (something derived or worth knowing, not an error)."""
    errors.print(styled(("note:", "yellow"), " ", message), soft_wrap=True)


def stop(status: Exit) -> None:
    """Leave with ``status``."""
    sys.exit(int(status))
