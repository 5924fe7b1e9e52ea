"""Mapping what pypsrp and requests raise onto Ferryman's transient/permanent errors.

Retry policy reads the *type* of the error (``TransientError`` or not), so this module is the
one place that decides: connection refused/reset, timeouts, HTTP 5xx and WS-Man faults such as
``TimedOut`` are transient; a rejected login is :class:`~workers.errors.AuthenticationError`
(permanent, naming the host and the credential *reference*, never a value).
"""

from __future__ import annotations

import requests
from pypsrp import exceptions as ps_exc

from plans.errors import FerrymanError
from workers.errors import AuthenticationError, RemotePermanentError, RemoteTransientError
from workers.hyperv.connection import PsrpEndpoint

# WS-Man fault codes that are really "access denied" rather than a transport hiccup.
_ACCESS_DENIED = {5, 0x80070005}
WSMAN_TIMED_OUT = 0x80338029  # ERROR_WSMAN_OPERATION_TIMEDOUT (2150858793)


def classify(exc: BaseException, endpoint: PsrpEndpoint, doing: str) -> FerrymanError:
    """The Ferryman error for ``exc``, raised while ``doing`` (e.g. "Get-VM") on ``endpoint``."""
    where = f"{doing} on {endpoint.host} ({endpoint.url})"
    if isinstance(exc, FerrymanError):
        return exc
    if isinstance(exc, ps_exc.AuthenticationError) or (
        isinstance(exc, ps_exc.WinRMTransportError) and exc.code in (401, 403)
    ):
        return _auth_error(endpoint, where)
    if isinstance(exc, ps_exc.WSManFaultError):
        if exc.code in _ACCESS_DENIED:
            return _auth_error(endpoint, where)
        if exc.code == WSMAN_TIMED_OUT:
            return RemoteTransientError(f"{where}: WS-Man operation timed out; will retry")
        return RemoteTransientError(
            f"{where}: WS-Man fault {exc.code} ({exc.reason}); the session is reopened on retry"
        )
    if isinstance(exc, ps_exc.WinRMTransportError):
        if exc.code >= 500:
            return RemoteTransientError(f"{where}: HTTP {exc.code} from WinRM; will retry")
        return RemotePermanentError(
            f"{where}: HTTP {exc.code} from WinRM; check the endpoint URL and WinRM listener"
        )
    if isinstance(exc, requests.exceptions.SSLError):
        # A certificate the client does not trust will not become trusted by retrying.
        return RemotePermanentError(
            f"{where}: TLS handshake failed ({_reason(exc)}); check the endpoint's ca_bundle "
            "or the host's WinRM certificate"
        )
    if isinstance(exc, requests.exceptions.Timeout | TimeoutError):
        return RemoteTransientError(
            f"{where}: no answer in time ({type(exc).__name__}); will retry"
        )
    if isinstance(exc, requests.exceptions.ConnectionError | ConnectionError):
        return RemoteTransientError(
            f"{where}: connection failed ({_reason(exc)}); check that WinRM is up, will retry"
        )
    if isinstance(exc, ps_exc.SerializationError | ps_exc.FragmentError):
        return RemotePermanentError(f"{where}: malformed PSRP data ({exc}); report this host")
    if isinstance(exc, ps_exc.WinRMError | OSError):
        return RemoteTransientError(f"{where}: {type(exc).__name__}: {exc}; will retry")
    return RemotePermanentError(f"{where}: unexpected {type(exc).__name__}: {exc}")


def answer_lost(exc: BaseException) -> bool:
    """Whether ``exc``, raised while a request was being sent or answered, leaves it unknown
    whether the host acted on it: an HTTP 5xx, a reset or a read timeout. A refused or timed
    out connection, an authentication failure or a WS-Man fault mean the host never took it.
    """
    if isinstance(exc, ps_exc.WinRMTransportError):
        return exc.code >= 500
    if isinstance(exc, requests.exceptions.ConnectTimeout | ConnectionRefusedError):
        return False
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "refused" not in _reason(exc)
    return isinstance(exc, requests.exceptions.Timeout | TimeoutError | ConnectionError)


def _auth_error(endpoint: PsrpEndpoint, where: str) -> AuthenticationError:
    return AuthenticationError(
        f"{where}: {endpoint.auth.value} login as {endpoint.username!r} was rejected; fix the "
        f"password behind credential reference {endpoint.password_ref} (not retried)"
    )


def _reason(exc: BaseException) -> str:
    # requests nests urllib3's error several levels deep; the innermost text says
    # "Connection refused" or "Connection reset by peer".
    inner: BaseException | None = exc
    text = str(exc)
    for _ in range(8):  # bounded: exception chains can, rarely, form cycles
        if inner is None:
            break
        if isinstance(inner, OSError) and inner.strerror:
            return inner.strerror
        nxt = inner.__context__ or inner.__cause__
        if nxt is None and inner.args and isinstance(inner.args[0], BaseException):
            nxt = inner.args[0]
        inner = nxt
    for marker in ("refused", "reset", "aborted", "closed"):
        if marker in text.lower():
            return f"connection {marker}"
    return type(exc).__name__
