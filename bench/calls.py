"""A record of every cmdlet the lab answered: host, cmdlet, VM, start and end (monotonic).

The lab's own audit log keeps mutating calls only; a benchmark needs reads too (to count the
calls a run makes per VM and to find when each VM's work really began and ended), so
:func:`recording` wraps the lab domain's ``invoke`` for the lab the benchmark itself started.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from lab.hyperv.hostscripts import WAIT_FOR_ADDRESS
from workers.hyperv.hyperv import WAIT_FOR_ADDRESS_LABEL

_VM_PARAMETERS = ("vmname", "name")


@dataclass(frozen=True)
class Call:
    """One pipeline the lab ran: its first cmdlet, the VM it names, and when."""

    host: str
    cmdlet: str
    vm: str | None
    start: float
    end: float


class CallLog:
    """Thread-safe list of :class:`Call` with the summaries benchmarks need."""

    def __init__(self) -> None:
        self._calls: list[Call] = []
        self._lock = threading.Lock()

    def add(self, call: Call) -> None:
        """Record one call."""
        with self._lock:
            self._calls.append(call)

    def calls(self) -> list[Call]:
        """Every call so far, in completion order."""
        with self._lock:
            return list(self._calls)

    def clear(self) -> None:
        """Forget every call (between two measured runs on one lab)."""
        with self._lock:
            self._calls.clear()

    def per_vm(self) -> dict[str, list[Call]]:
        """Calls by VM (a test VM "<VM> - Test" counts for its VM), in start order."""
        grouped: dict[str, list[Call]] = defaultdict(list)
        for call in sorted(self.calls(), key=lambda c: c.start):
            if call.vm:
                grouped[call.vm.removesuffix(" - Test")].append(call)
        return dict(grouped)

    def cmdlet_counts(self) -> dict[str, int]:
        """How many times each cmdlet ran."""
        return dict(Counter(call.cmdlet for call in self.calls()))

    def calls_per_vm(self) -> float:
        """The mean number of calls per VM."""
        grouped = self.per_vm()
        return sum(len(c) for c in grouped.values()) / len(grouped) if grouped else 0.0


def _vm_of(commands: Sequence[Any]) -> str | None:
    for name, value in getattr(commands[0], "parameters", ()) if commands else ():
        if str(name).lower() in _VM_PARAMETERS and isinstance(value, str):
            return value
    return None


def _name_of(commands: Sequence[Any]) -> str:
    """The first cmdlet's name; a script's text is named by what it is."""
    if not commands:
        return "?"
    name = str(getattr(commands[0], "name", "?"))
    if getattr(commands[0], "is_script", False):
        return WAIT_FOR_ADDRESS_LABEL if name == WAIT_FOR_ADDRESS else "Script"
    return name


@contextmanager
def recording(lab: Any) -> Iterator[CallLog]:
    """Record every pipeline ``lab`` (a ``lab.world.Lab``) runs while the block lasts."""
    log = CallLog()
    original = lab.invoke

    def invoke(host: str, commands: Sequence[Any], **kwargs: Any) -> Any:
        start = time.monotonic()
        try:
            return original(host, commands, **kwargs)
        finally:
            name = _name_of(commands)
            log.add(Call(host, name, _vm_of(commands), start, time.monotonic()))

    # An instance attribute shadows the method for the server's backend, which calls
    # ``lab.invoke``; deleting it restores the class's method.
    lab.invoke = invoke
    try:
        yield log
    finally:
        del lab.invoke
