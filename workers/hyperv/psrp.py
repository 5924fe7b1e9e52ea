"""PsrpRunner: :class:`~workers.powershell.PowerShellRunner` over the real pypsrp client.

Every call is a typed pipeline: ``add_cmdlet`` + ``add_parameter`` (switches as ``True``), never
script text built from strings; :meth:`PsrpRunner.run_script` is only for operator-written
scripts from a plan, and passes their parameters as parameters too.

Calls share the host's pooled runspace (see ``pool.py``). A call takes the pool's lock per
WS-Man request and polls with a short OperationTimeout, so concurrent calls on one host
interleave instead of queueing behind a long-running cmdlet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pypsrp.complex_objects import PSInvocationState
from pypsrp.exceptions import AuthenticationError as AuthenticationFailed
from pypsrp.exceptions import WinRMTransportError, WSManFaultError
from pypsrp.powershell import PowerShell

from plans.errors import FerrymanError
from workers.errors import CmdletFailed, RemoteTransientError
from workers.hyperv.connection import PsrpEndpoint
from workers.hyperv.faults import WSMAN_TIMED_OUT, classify
from workers.hyperv.objects import error_from_record, output_object
from workers.hyperv.pool import PooledRunspace, RunspacePoolCache
from workers.powershell import PSResult

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 600.0

_shared_cache = RunspacePoolCache()


def shared_cache() -> RunspacePoolCache:
    """The process-wide pool cache: one runspace pool per host for all runners."""
    return _shared_cache


class PsrpRunner:
    """Runs cmdlets on one host (``endpoint``) through a cached pypsrp runspace pool.

    ``timeout`` (per call, seconds) bounds the whole call; when it passes, the pipeline is
    stopped on the server and :class:`RemoteTransientError` is raised. ``poll_interval`` is
    the WS-Man OperationTimeout of each Receive, i.e. the longest time one call holds the
    pool's lock while waiting for output.
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

        def build(ps: PowerShell) -> None:
            ps.add_cmdlet(cmdlet)
            for name, value in (parameters or {}).items():
                ps.add_parameter(name, _wire_value(value))
            for switch in switches:
                ps.add_parameter(switch, True)

        return self._invoke(build, cmdlet, timeout)

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
            entry = self.cache.acquire(self.endpoint)
            ps = PowerShell(entry.pool)
            build(ps)
            try:
                with entry.lock:
                    ps.begin_invoke()
            except Exception as exc:
                self.cache.discard(entry)
                # A reused session the server no longer knows (it restarted, or dropped an idle
                # shell or connection) is refused before anything runs: open a fresh one once.
                # Other failures may have started the cmdlet, so they are not repeated.
                if attempt == 1 and entry.uses > 1 and _session_refused(exc):
                    log.info("PSRP session on %s is gone (%s); reopening", self.host, exc)
                    continue
                raise classify(exc, self.endpoint, label) from exc
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
                    raise RemoteTransientError(
                        f"{label} on {self.host} did not finish within {limit:g}s and was "
                        "stopped; will retry (raise the action's timeout if it needs longer)"
                    )
                wait = max(0.2, min(self.poll_interval, remaining))
                with entry.lock:
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
            raise classify(exc, self.endpoint, label) from exc
        self._close_pipeline(entry, ps)
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
            raise RemoteTransientError(
                f"{label} on {self.host} was stopped by the server; will retry"
            )
        output = [output_object(item) for item in ps.output]
        return PSResult(output=output, errors=errors, had_errors=bool(errors))

    def _stop(self, entry: PooledRunspace, ps: PowerShell) -> None:
        with entry.lock:
            try:
                ps.stop()
            except Exception as exc:
                # The session is in an unknown state after a failed stop: start afresh.
                log.warning("stopping a timed-out pipeline on %s failed: %s", self.host, exc)
                self.cache.discard(entry)

    def _close_pipeline(self, entry: PooledRunspace, ps: PowerShell) -> None:
        # Terminating the finished command frees its server-side resources; a long-lived pool
        # would otherwise accumulate them up to WinRM's per-user operation quota.
        with entry.lock:
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
