"""PsrpRunner: :class:`~workers.powershell.PowerShellRunner` over the real pypsrp client.

Every call is a typed pipeline: ``add_cmdlet`` + ``add_parameter`` (switches as ``True``), never
script text built from strings; :meth:`PsrpRunner.run_script` is for operator-written scripts
from a plan and for the fixed text of the host-side address wait
(``hyperv.WAIT_FOR_ADDRESS_SCRIPT``), and passes their parameters as parameters too.

Each call leases one of the host's sessions (see ``pool.py``) for its whole run, so calls on
one host run side by side, up to the cache's ``pools_per_host``; a long-running cmdlet holds
only its own session.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pypsrp.complex_objects import PSInvocationState
from pypsrp.exceptions import AuthenticationError as AuthenticationFailed
from pypsrp.exceptions import WinRMTransportError, WSManFaultError
from pypsrp.powershell import PowerShell

from plans.errors import ConfigurationError, FerrymanError
from workers.errors import CmdletFailed, OutcomeUnknown, RemoteTransientError
from workers.hyperv import lean
from workers.hyperv.connection import PsrpEndpoint
from workers.hyperv.faults import WSMAN_TIMED_OUT, answer_lost, classify
from workers.hyperv.objects import error_from_record, output_object
from workers.hyperv.pool import (
    DEFAULT_POOLS_PER_HOST,
    MAX_SHELLS_PER_USER,
    PooledRunspace,
    RunspacePoolCache,
)
from workers.powershell import PSResult

log = logging.getLogger(__name__)
lean.install()  # one-statement pipelines are serialised without pypsrp's deep copy

DEFAULT_TIMEOUT = 600.0

# How many sessions the process-wide cache keeps per host (1..30); default 8.
SESSIONS_PER_HOST_VARIABLE = "FERRYMAN_PSRP_SESSIONS_PER_HOST"

_shared_cache: RunspacePoolCache | None = None
_shared_lock = threading.Lock()
_configured_sessions: int | None = None  # from Settings, set by the composition root


def configure_sessions_per_host(value: int) -> None:
    """Size the shared cache from the settings (``Settings.psrp_sessions_per_host``); takes
    effect when the cache is built, before the first call."""
    global _configured_sessions
    _configured_sessions = value


def shared_cache() -> RunspacePoolCache:
    """The process-wide pool cache, shared by all runners: up to
    ``FERRYMAN_PSRP_SESSIONS_PER_HOST`` sessions per host (built on first use)."""
    global _shared_cache
    with _shared_lock:
        if _shared_cache is None:
            pools = _configured_sessions or sessions_per_host(os.environ)
            _shared_cache = RunspacePoolCache(pools_per_host=pools)
        return _shared_cache


def _forget_shared_cache() -> None:
    """In a forked child (a prefork worker), start with no sessions: the parent's sockets and
    NTLM contexts are the parent's, and two processes must never talk on one connection."""
    global _shared_cache, _shared_lock
    _shared_cache = None
    _shared_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_shared_cache)


def sessions_per_host(environ: Mapping[str, str]) -> int:
    """The sessions-per-host setting from ``environ``; a bad value is a ConfigurationError."""
    raw = environ.get(SESSIONS_PER_HOST_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_POOLS_PER_HOST
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_SHELLS_PER_USER:
        raise ConfigurationError(
            f"{SESSIONS_PER_HOST_VARIABLE}={raw!r}: give a whole number from 1 to "
            f"{MAX_SHELLS_PER_USER} (WinRM's MaxShellsPerUser; keep room for other workers)"
        )
    return value


class PsrpRunner:
    """Runs cmdlets on one host (``endpoint``) through a leased session of ``cache``.

    ``timeout`` (per call, seconds) bounds the whole call, including the wait for a free
    session; when it passes, the pipeline is stopped on the server and
    :class:`RemoteTransientError` is raised. ``poll_interval`` is the WS-Man OperationTimeout
    of each Receive: how often the call looks at its deadline while a cmdlet runs.
    """

    def __init__(
        self,
        endpoint: PsrpEndpoint,
        *,
        cache: RunspacePoolCache | None = None,
        default_timeout: float = DEFAULT_TIMEOUT,
        poll_interval: float = 0.5,
    ) -> None:
        self.endpoint = endpoint
        self.cache = cache if cache is not None else shared_cache()
        self.default_timeout = default_timeout
        self.poll_interval = poll_interval

    @property
    def host(self) -> str:
        """The host name this runner talks to (as the fabric names it)."""
        return self.endpoint.host

    def run(
        self,
        cmdlet: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        switches: Sequence[str] = (),
        timeout: float | None = None,
    ) -> PSResult:
        """Invoke one cmdlet with named parameters and switches; see PowerShellRunner.run."""
        return self.run_pipeline([(cmdlet, parameters or {}, switches)], timeout=timeout)

    def run_pipeline(
        self,
        commands: Sequence[tuple[str, Mapping[str, Any], Sequence[str]]],
        *,
        timeout: float | None = None,
    ) -> PSResult:
        """Invoke typed cmdlets chained into one pipeline (``A | B``) in one runspace, so
        live objects flow from one to the next; see PowerShellRunner.run_pipeline."""
        if not commands:
            raise ValueError("a pipeline needs at least one cmdlet")

        def build(ps: PowerShell) -> None:
            # add_cmdlet after add_cmdlet, without add_statement: one pipeline, not two.
            for cmdlet, parameters, switches in commands:
                ps.add_cmdlet(cmdlet)
                for name, value in parameters.items():
                    ps.add_parameter(name, _wire_value(value))
                for switch in switches:
                    ps.add_parameter(switch, True)

        label = " | ".join(cmdlet for cmdlet, _, _ in commands)
        return self._invoke(build, label, timeout)

    def run_script(
        self,
        script: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> PSResult:
        """Run operator-written script text; its ``param()`` block receives ``parameters``."""

        def build(ps: PowerShell) -> None:
            ps.add_script(script)
            for name, value in (parameters or {}).items():
                ps.add_parameter(name, _wire_value(value))

        return self._invoke(build, "script", timeout)

    def close(self) -> None:
        """Close every pooled session of this runner's cache (worker shutdown)."""
        self.cache.close()

    def _invoke(
        self, build: Callable[[PowerShell], None], label: str, timeout: float | None
    ) -> PSResult:
        limit = self.default_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        for attempt in (1, 2):
            remaining = max(0.0, deadline - time.monotonic())
            with self.cache.lease(self.endpoint, timeout=remaining) as entry:
                ps = PowerShell(entry.pool)
                build(ps)
                try:
                    ps.begin_invoke()
                except Exception as exc:
                    self.cache.discard(entry)
                    # A reused session the server no longer knows (it restarted, or dropped an
                    # idle shell or connection) is refused before anything runs: open a fresh
                    # one once. The host's other idle sessions are as old, so they go too.
                    # Other failures may have started the cmdlet, so they are not repeated.
                    if attempt == 1 and entry.uses > 1 and _session_refused(exc):
                        dropped = self.cache.discard_idle(self.endpoint)
                        log.info(
                            "PSRP session on %s is gone (%s); reopening (%d idle dropped)",
                            self.host,
                            exc,
                            dropped,
                        )
                        continue
                    error = classify(exc, self.endpoint, label)
                    if isinstance(error, RemoteTransientError) and answer_lost(exc):
                        # the Command went out and its answer did not come back
                        error = self._unknown(label, error)
                    raise error from exc
                return self._finish(entry, ps, label, deadline, limit)
        raise AssertionError("unreachable")  # pragma: no cover

    def _finish(
        self, entry: PooledRunspace, ps: PowerShell, label: str, deadline: float, limit: float
    ) -> PSResult:
        try:
            while ps.state == PSInvocationState.RUNNING:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._stop(entry, ps)
                    raise self._unknown(
                        label,
                        f"did not finish within {limit:g}s and was stopped (raise the action's "
                        "timeout if it needs longer)",
                    )
                wait = max(0.2, min(self.poll_interval, remaining))
                try:
                    # pypsrp annotates int but writes PT{n}S, where fractions are valid.
                    ps.poll_invoke(timeout=wait)  # type: ignore[arg-type]
                except WSManFaultError as exc:
                    # pypsrp itself swallows only the decimal form of TimedOut.
                    if exc.code != WSMAN_TIMED_OUT:
                        raise
        except FerrymanError:
            raise
        except Exception as exc:
            self.cache.discard(entry)
            error = classify(exc, self.endpoint, label)
            if isinstance(error, RemoteTransientError):
                # the host took the Command: whatever broke since, it may have run
                error = self._unknown(label, error)
            raise error from exc
        self._close_pipeline(ps)
        return self._result(ps, label)

    def _result(self, ps: PowerShell, label: str) -> PSResult:
        errors = [error_from_record(record) for record in ps.streams.error]
        if ps.state == PSInvocationState.FAILED:
            # The terminating error is the last record (pypsrp appends the pipeline state's).
            last = errors[-1] if errors else None
            fq_id = last.fully_qualified_error_id if last else ""
            message = last.message if last else "the pipeline failed without an error record"
            raise CmdletFailed(
                f"{label} failed on {self.host}: {message} [{fq_id or 'no error id'}]",
                host=self.host,
                cmdlet=label,
                fully_qualified_error_id=fq_id,
                category=last.category if last else "",
                target=last.target if last else "",
            )
        if ps.state == PSInvocationState.STOPPED:
            raise self._unknown(label, "was stopped by the server")
        output = [output_object(item) for item in ps.output]
        return PSResult(output=output, errors=errors, had_errors=bool(errors))

    def _unknown(self, label: str, cause: object) -> OutcomeUnknown:
        """The error for a command the host took and whose outcome Ferryman cannot know."""
        text = str(cause).removesuffix("; will retry").removesuffix(", will retry")
        return OutcomeUnknown(
            f"outcome unknown on {self.host}: {label} was sent, then {text}",
            host=self.host,
            doing=label,
        )

    def _stop(self, entry: PooledRunspace, ps: PowerShell) -> None:
        try:
            ps.stop()
        except Exception as exc:
            # The session is in an unknown state after a failed stop: start afresh.
            log.warning("stopping a timed-out pipeline on %s failed: %s", self.host, exc)
            self.cache.discard(entry)

    def _close_pipeline(self, ps: PowerShell) -> None:
        # Terminating the finished command frees its server-side resources; a long-lived pool
        # would otherwise accumulate them up to WinRM's per-user operation quota.
        try:
            ps.close()
        except Exception as exc:
            log.debug("closing a finished pipeline on %s failed: %s", self.host, exc)


def _session_refused(exc: BaseException) -> bool:
    """True when the server refused a request on a stale session without running anything:
    a WS-Man fault (unknown shell), HTTP 400 (an NTLM-sealed message it cannot unseal on a
    new connection) or a 401 (the connection's login was lost)."""
    if isinstance(exc, WSManFaultError | AuthenticationFailed):
        return True
    return isinstance(exc, WinRMTransportError) and exc.code == 400


def _wire_value(value: Any) -> Any:
    """A parameter value pypsrp can serialise: tuples become lists, datetimes ISO text."""
    if isinstance(value, tuple | set | frozenset):
        return [_wire_value(v) for v in value]
    if isinstance(value, list):
        return [_wire_value(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value
