"""A bounded set of PSRP sessions per host, each used by one call at a time: the pool cache.

A pypsrp ``RunspacePool`` is bound to one WSMan connection and is not thread-safe, and an
NTLM-sealed session binds to its HTTP connection, so one session can only carry one call at a
time. Hyper-V cmdlets are slow (``Start-VMFailover`` takes seconds), so one session per host
would serialise a group of VMs on that host. WinRM allows several shells per user
(MaxShellsPerUser, 30 by default), so the cache keeps up to ``pools_per_host`` independent
sessions (connection + runspace pool) per endpoint:

- a call *leases* a session (:meth:`RunspacePoolCache.lease`), runs, and returns it;
- sessions are opened lazily, only when every open one is busy, and reused across tasks and
  threads (the most recently used first, so a quiet host keeps few warm sessions);
- when all ``pools_per_host`` are busy, a call waits for one (bounded by its own timeout);
- a session that failed is discarded and its slot freed; the next call opens a fresh one;
- sessions left idle for ``idle_timeout`` are closed, so a quiet worker holds no shells that
  count against the host's per-user quota (and none the server would drop on its own).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from pypsrp.powershell import RunspacePool
from pypsrp.wsman import WSMan

from workers.errors import RemoteTransientError
from workers.hyperv.connection import PsrpEndpoint
from workers.hyperv.faults import classify

log = logging.getLogger(__name__)

# Well below WinRM's MaxShellsPerUser (30), leaving room for other workers and operators.
DEFAULT_POOLS_PER_HOST = 8
MAX_SHELLS_PER_USER = 30
# Well below WinRM's shell IdleTimeout (2 h), after which the server drops a session itself.
DEFAULT_IDLE_TIMEOUT = 900.0


@dataclass(eq=False)
class PooledRunspace:
    """One open session: an HTTP connection (``wsman``) and the runspace pool on it.

    ``uses`` counts leases (a session used before may have been forgotten by the server);
    ``broken`` marks one that must not be used again.
    """

    endpoint: PsrpEndpoint
    wsman: WSMan
    pool: RunspacePool
    uses: int = 0
    broken: bool = False
    generation: int = field(default=0, repr=False)
    last_used: float = field(default=0.0, repr=False)  # the cache's clock, at release

    @classmethod
    def open(cls, endpoint: PsrpEndpoint, max_runspaces: int) -> PooledRunspace:
        """Connect and open a runspace pool; errors are raised as Ferryman errors."""
        wsman = endpoint.open_wsman()
        pool = RunspacePool(wsman, min_runspaces=1, max_runspaces=max_runspaces)
        try:
            pool.open()
        except Exception as exc:
            wsman.close()
            raise classify(exc, endpoint, "opening a PowerShell session") from exc
        _settle_environment(wsman)
        log.info("opened PSRP session on %s", endpoint)
        return cls(endpoint, wsman, pool)

    def close(self) -> None:
        """Close the pool on the server (best effort, skipped when broken) and the HTTP session."""
        try:
            if not self.broken:
                self.pool.close()
        except Exception as exc:  # closing is hygiene; a dead server cannot be helped
            log.debug("closing PSRP session on %s failed: %s", self.endpoint.host, exc)
        finally:
            self.wsman.close()


@dataclass(frozen=True)
class PoolStats:
    """Sessions of one host at one moment: ``idle + busy`` are open; ``opening`` are being
    connected; ``waiting`` calls wait for a free session."""

    idle: int
    busy: int
    opening: int
    waiting: int

    @property
    def open(self) -> int:
        """Sessions open now (idle or leased)."""
        return self.idle + self.busy


@dataclass
class _Slots:
    """The sessions of one endpoint (guarded by the cache's condition)."""

    idle: list[PooledRunspace] = field(default_factory=list)
    busy: set[PooledRunspace] = field(default_factory=set)
    opening: int = 0
    waiting: int = 0

    def taken(self) -> int:
        return len(self.busy) + self.opening


class RunspacePoolCache:
    """Up to ``pools_per_host`` sessions per endpoint, each leased to one call at a time.

    ``max_runspaces`` is how many pipelines one runspace pool may run at once on the server;
    a leased session runs one call, so 1 is enough and keeps the host's footprint small.
    ``idle_timeout`` (seconds, None: never) closes sessions nobody leased for that long,
    checked whenever a session of the same endpoint comes back; ``clock`` is for tests.
    ``opened`` counts sessions opened per host (what tests and metrics read to see reuse).
    Thread-safe. :meth:`close` closes idle sessions at once and leased ones when they come
    back; the cache stays usable afterwards (the next call opens a new session).
    """

    def __init__(
        self,
        *,
        max_runspaces: int = 1,
        pools_per_host: int = DEFAULT_POOLS_PER_HOST,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= pools_per_host <= MAX_SHELLS_PER_USER:
            raise ValueError(
                f"pools_per_host must be 1 to {MAX_SHELLS_PER_USER} (WinRM's MaxShellsPerUser), "
                f"not {pools_per_host}"
            )
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError(f"idle_timeout must be positive seconds or None, not {idle_timeout}")
        if max_runspaces < 1:
            raise ValueError(f"max_runspaces must be at least 1, not {max_runspaces}")
        self.max_runspaces = max_runspaces
        self.pools_per_host = pools_per_host
        self.idle_timeout = idle_timeout
        self._clock = clock
        self.opened: Counter[str] = Counter()
        self._slots: dict[PsrpEndpoint, _Slots] = {}
        self._cond = threading.Condition(threading.Lock())
        # Bumped by close(): sessions leased before it are closed when they come back.
        self._generation = 0

    # --- leasing ------------------------------------------------------------------------------

    @contextmanager
    def lease(
        self, endpoint: PsrpEndpoint, *, timeout: float | None = None
    ) -> Iterator[PooledRunspace]:
        """A session for ``endpoint`` for the ``with`` block; returned (or, if the block
        discarded it, forgotten) at the end."""
        entry = self.acquire(endpoint, timeout=timeout)
        try:
            yield entry
        finally:
            self.release(entry)

    def acquire(self, endpoint: PsrpEndpoint, *, timeout: float | None = None) -> PooledRunspace:
        """Lease a session: an idle one, else a new one while under the bound, else wait.

        The caller must :meth:`release` (or :meth:`discard`) it. ``timeout`` bounds the wait
        for a free session; when it passes, :class:`RemoteTransientError` is raised.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            slots = self._slots.setdefault(endpoint, _Slots())
            while True:
                if slots.idle:
                    entry = slots.idle.pop()  # the most recently used: warmest, least stale
                    slots.busy.add(entry)
                    entry.uses += 1
                    return entry
                if slots.taken() < self.pools_per_host:
                    slots.opening += 1
                    generation = self._generation
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise RemoteTransientError(
                        f"all {self.pools_per_host} PowerShell sessions to {endpoint.host} stayed "
                        f"busy for {timeout:g}s; will retry (more sessions per host, or a longer "
                        "timeout, let more calls run at once)"
                    )
                slots.waiting += 1
                try:
                    self._cond.wait(remaining)
                finally:
                    slots.waiting -= 1
        # Opening takes several round trips: done outside the lock so other hosts' calls and
        # other sessions of this host are not held up.
        try:
            entry = PooledRunspace.open(endpoint, self.max_runspaces)
        except BaseException:
            with self._cond:
                slots.opening -= 1
                self._cond.notify_all()
            raise
        entry.generation = generation
        with self._cond:
            slots.opening -= 1
            slots.busy.add(entry)
            entry.uses += 1
            self.opened[endpoint.host] += 1
        return entry

    def release(self, entry: PooledRunspace) -> None:
        """Give a leased session back for reuse (a discarded one is already gone)."""
        with self._cond:
            slots = self._slots.get(entry.endpoint)
            if slots is None or entry not in slots.busy:
                return
            slots.busy.discard(entry)
            now = self._clock()
            entry.last_used = now
            expired = self._expired(slots, now)
            if entry.broken or entry.generation != self._generation:
                expired.append(entry)
            else:
                slots.idle.append(entry)
            self._cond.notify_all()
        for old in expired:
            old.close()

    def _expired(self, slots: _Slots, now: float) -> list[PooledRunspace]:
        """Take the idle sessions unused for longer than ``idle_timeout`` out of ``slots``."""
        if self.idle_timeout is None:
            return []
        limit = self.idle_timeout
        expired = [e for e in slots.idle if now - e.last_used > limit]
        if expired:
            slots.idle[:] = [e for e in slots.idle if e not in expired]
        return expired

    def discard(self, entry: PooledRunspace) -> None:
        """Forget a session that failed and free its slot; the next call opens a new one.

        Only the HTTP side is closed: the server may no longer know the shell, and one it
        still knows is reclaimed by its idle timeout.
        """
        with self._cond:
            entry.broken = True
            slots = self._slots.get(entry.endpoint)
            if slots is not None:
                slots.busy.discard(entry)
                if entry in slots.idle:
                    slots.idle.remove(entry)
            self._cond.notify_all()
        _close_http(entry)

    def discard_idle(self, endpoint: PsrpEndpoint) -> int:
        """Discard every idle session of ``endpoint`` (after the server forgot one of them,
        e.g. a restart, the others are as stale); returns how many."""
        with self._cond:
            slots = self._slots.get(endpoint)
            if slots is None:
                return 0
            # Taken out under the lock, so no other call can lease one of them meanwhile.
            idle, slots.idle[:] = list(slots.idle), []
            for entry in idle:
                entry.broken = True
            self._cond.notify_all()
        for entry in idle:
            _close_http(entry)
        return len(idle)

    # --- inspection and shutdown --------------------------------------------------------------

    def stats(self, host: str) -> PoolStats:
        """Sessions of ``host`` (all its endpoints) right now."""
        idle = busy = opening = waiting = 0
        with self._cond:
            for endpoint, slots in self._slots.items():
                if endpoint.host == host:
                    idle += len(slots.idle)
                    busy += len(slots.busy)
                    opening += slots.opening
                    waiting += slots.waiting
        return PoolStats(idle, busy, opening, waiting)

    def close(self) -> None:
        """Close every idle session now and every leased one when it comes back (shutdown)."""
        with self._cond:
            self._generation += 1
            idle = [entry for slots in self._slots.values() for entry in slots.idle]
            for slots in self._slots.values():
                slots.idle.clear()
            self._cond.notify_all()
        for entry in idle:
            entry.close()

    def __len__(self) -> int:
        """How many sessions are open (idle or leased), over all hosts."""
        with self._cond:
            return sum(len(s.idle) + len(s.busy) for s in self._slots.values())


def _settle_environment(wsman: WSMan) -> None:
    """Stop the session re-reading proxy settings from the environment on every request.

    pypsrp builds its requests session with ``trust_env`` on and takes what it needs from the
    environment then (proxies, CA bundle); the endpoint's ``no_proxy`` already rules out any
    proxy. Left on, requests scans the whole environment for proxy variables again for every
    message (three per cmdlet), a tenth of the client's time per call.
    """
    session = getattr(getattr(wsman, "transport", None), "session", None)
    if session is not None:
        session.trust_env = False


def _close_http(entry: PooledRunspace) -> None:
    try:
        entry.wsman.close()
    except Exception as exc:
        log.debug("closing HTTP session of %s failed: %s", entry.endpoint.host, exc)
