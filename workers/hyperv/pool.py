"""One open PSRP runspace pool per host, shared by every call and thread: the pool cache.

Opening a runspace pool costs several WS-Man round trips (and an NTLM handshake), so workers
keep one per endpoint and reuse it. pypsrp is not thread-safe and an NTLM-sealed session binds
to its HTTP connection, so every request on one pool goes through that pool's lock; calls still
overlap because a call takes the lock per request, not for its whole run (see ``psrp.py``).
A pool that failed is discarded and the next call opens a fresh one.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass, field

from pypsrp.powershell import RunspacePool
from pypsrp.wsman import WSMan

from workers.hyperv.connection import PsrpEndpoint
from workers.hyperv.faults import classify

log = logging.getLogger(__name__)


class FairLock:
    """A first-come, first-served lock.

    ``threading.Lock`` lets a thread that releases and re-acquires in a loop (a call polling a
    long-running cmdlet) starve the others; tickets make every waiting call take its turn.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._next_ticket = 0
        self._serving = 0

    def __enter__(self) -> FairLock:
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            while ticket != self._serving:
                self._cond.wait()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._serving += 1
            self._cond.notify_all()


@dataclass(eq=False)
class PooledRunspace:
    """An open runspace pool plus the lock that serialises requests on it."""

    endpoint: PsrpEndpoint
    wsman: WSMan
    pool: RunspacePool
    lock: FairLock = field(default_factory=FairLock)
    uses: int = 0
    broken: bool = False

    @classmethod
    def open(cls, endpoint: PsrpEndpoint, max_runspaces: int) -> PooledRunspace:
        """Connect and open a pool; errors are raised as Ferryman errors."""
        wsman = endpoint.open_wsman()
        pool = RunspacePool(wsman, min_runspaces=1, max_runspaces=max_runspaces)
        try:
            pool.open()
        except Exception as exc:
            wsman.close()
            raise classify(exc, endpoint, "opening a PowerShell session") from exc
        log.info("opened PSRP session on %s", endpoint)
        return cls(endpoint, wsman, pool)

    def close(self) -> None:
        """Close the pool on the server (best effort) and the HTTP session."""
        with self.lock:
            try:
                if not self.broken:
                    self.pool.close()
            except Exception as exc:  # closing is hygiene; a dead server cannot be helped
                log.debug("closing PSRP session on %s failed: %s", self.endpoint.host, exc)
            finally:
                self.wsman.close()


class RunspacePoolCache:
    """Open runspace pools keyed by endpoint; thread-safe; reopens a pool marked broken.

    ``max_runspaces`` is how many pipelines one pool may run at once on the server.
    ``opened`` counts pools opened per host (what tests and metrics read to see reuse).
    """

    def __init__(self, *, max_runspaces: int = 8) -> None:
        self.max_runspaces = max_runspaces
        self.opened: Counter[str] = Counter()
        self._entries: dict[PsrpEndpoint, PooledRunspace] = {}
        self._open_locks: dict[PsrpEndpoint, threading.Lock] = {}
        self._lock = threading.Lock()

    def acquire(self, endpoint: PsrpEndpoint) -> PooledRunspace:
        """The open pool for ``endpoint``, opening one if there is none (once, not per thread)."""
        with self._lock:
            entry = self._entries.get(endpoint)
            if entry is not None and not entry.broken:
                entry.uses += 1
                return entry
            open_lock = self._open_locks.setdefault(endpoint, threading.Lock())
        with open_lock:
            # Another thread may have opened it while this one waited.
            with self._lock:
                entry = self._entries.get(endpoint)
                if entry is not None and not entry.broken:
                    entry.uses += 1
                    return entry
            entry = PooledRunspace.open(endpoint, self.max_runspaces)
            with self._lock:
                self._entries[endpoint] = entry
                self.opened[endpoint.host] += 1
                entry.uses += 1
            return entry

    def discard(self, entry: PooledRunspace) -> None:
        """Forget a pool that failed; the next :meth:`acquire` opens a new one."""
        with self._lock:
            entry.broken = True
            if self._entries.get(entry.endpoint) is entry:
                del self._entries[entry.endpoint]
        try:
            entry.wsman.close()
        except Exception as exc:
            log.debug("closing HTTP session of %s failed: %s", entry.endpoint.host, exc)

    def close(self) -> None:
        """Close every open pool (worker shutdown)."""
        with self._lock:
            entries = list(self._entries.values())
            self._entries.clear()
        for entry in entries:
            entry.close()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
