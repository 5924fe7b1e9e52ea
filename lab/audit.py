"""The audit log: every mutating call the lab answered, with its outcome.

Tests read it (``GET /audit``) to prove a run changed each VM exactly once, and that a
redelivered task did nothing the second time.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class AuditEntry:
    """One mutating call (per VM it acted on): lab time, host, cmdlet, VM, parameters, outcome.

    ``outcome`` is ``ok``, ``error:<FullyQualifiedErrorId>`` or ``fault:<kind>``. ``vm`` is
    the VM's name (for DNS cmdlets the record name; None for scripts).
    """

    seq: int
    time: str
    host: str
    cmdlet: str
    vm: str | None
    parameters: dict[str, Any]
    outcome: str
    user: str = ""
    # False when the call left the VM as it was (e.g. Start-VM on a running VM).
    changed: bool = True
    # An injected transport fault that lost the answer of a call that took effect.
    fault: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The entry as JSON-ready data."""
        return asdict(self)


class AuditLog:
    """A thread-safe, append-only (until cleared) list of :class:`AuditEntry`."""

    def __init__(self) -> None:
        self._entries: list[AuditEntry] = []
        self._lock = threading.Lock()
        self._seq = 0

    def record(
        self,
        *,
        time: str,
        host: str,
        cmdlet: str,
        vm: str | None,
        parameters: dict[str, Any],
        outcome: str,
        user: str = "",
        changed: bool = True,
        fault: str | None = None,
    ) -> AuditEntry:
        """Append one entry and return it."""
        with self._lock:
            self._seq += 1
            entry = AuditEntry(
                self._seq, time, host, cmdlet, vm, parameters, outcome, user, changed, fault
            )
            self._entries.append(entry)
        return entry

    def entries(
        self, *, host: str | None = None, vm: str | None = None, cmdlet: str | None = None
    ) -> list[AuditEntry]:
        """Entries in order, filtered by host, VM and cmdlet (case-insensitive) when given."""
        with self._lock:
            entries = list(self._entries)

        def keep(e: AuditEntry) -> bool:
            return (
                (host is None or e.host.lower() == host.lower())
                and (vm is None or (e.vm or "").lower() == vm.lower())
                and (cmdlet is None or e.cmdlet.lower() == cmdlet.lower())
            )

        return [e for e in entries if keep(e)]

    def clear(self) -> int:
        """Forget every entry; returns how many there were."""
        with self._lock:
            count = len(self._entries)
            self._entries.clear()
        return count
