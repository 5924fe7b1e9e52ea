"""Authenticating a request: a bearer token, or the console's cookie holding one.

With single sign-on configured (:mod:`workflows.api.sso`), a request from the trusted proxy
without a token is signed on by the proxy's header instead. A request without a valid token
is answered 401 and one whose role lacks the permission 403, before anything changes; each
refusal is written to the audit trail (event ``access_denied``: the principal when known,
method, path, status and the permission with the roles granting it; never the token), those
of unauthenticated requests at most once a minute per address and reason, with a count of
those held back (:class:`DenialThrottle`). The console keeps the token in an HttpOnly,
SameSite=Strict cookie; a state-changing request authenticated by that cookie must also come
from the console's own origin, so a page elsewhere cannot forge one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from workflows.api.sso import Refused, TrustedHeader
from workflows.store import AuditEvent
from workflows.tokens import GRANTS, Permission, Principal, Role, authenticate

log = logging.getLogger(__name__)
DENIED = "access_denied"

COOKIE = "ferryman_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _token(request: Request) -> tuple[str | None, bool]:
    """The presented token and whether it came from the cookie."""
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise HTTPException(
                401,
                "send the token as 'Authorization: Bearer TOKEN'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return value.strip(), False
    cookie = request.cookies.get(COOKIE)
    return (cookie, True) if cookie else (None, False)


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return False
    host = request.headers.get("host", "")
    scheme, _, rest = origin.partition("://")
    return scheme in ("http", "https") and rest.split("/", 1)[0] == host


class DenialThrottle:
    """Refusals of requests nobody signed in for reach the audit trail at most once per
    client address and reason every ``window`` seconds, and at most ``burst`` of them per
    window in all; the ones held back are counted into the next one written (``repeated``).

    Anyone who can reach the port can send unauthenticated requests, so writing each would let
    them fill the audit trail and load the store; a refusal of a signed-in principal is always
    written. Kept in memory (``capacity`` addresses), per process.
    """

    def __init__(
        self,
        window: float = 60.0,
        *,
        burst: int = 100,
        capacity: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window, self.burst, self.capacity, self.clock = window, burst, capacity, clock
        self._last: OrderedDict[tuple[str, str], tuple[float, int]] = OrderedDict()
        self._written: list[float] = []
        self._held = 0  # refused by the overall cap, carried into the next one written
        self._lock = threading.Lock()

    def admit(self, client: str, reason: str) -> int | None:
        """None to hold this refusal back; otherwise how many like it were held back since
        the last one written."""
        key = (client, reason)
        with self._lock:
            now = self.clock()
            last = self._last.get(key)
            if last is not None and now - last[0] < self.window:
                self._last[key] = (last[0], last[1] + 1)
                return None
            self._written = [at for at in self._written if now - at < self.window]
            if len(self._written) >= self.burst:
                self._held += 1
                return None
            repeated = (last[1] if last is not None else 0) + self._held
            self._held = 0
            self._written.append(now)
            self._last[key] = (now, 0)
            self._last.move_to_end(key)
            while len(self._last) > self.capacity:
                self._last.popitem(last=False)
            return repeated


def record_denial(
    request: Request,
    status: int,
    reason: str,
    *,
    principal: Principal | None = None,
    needed: Permission | None = None,
) -> None:
    """Write a refused request to the audit trail (a failure to write it is logged, and the
    refusal stands)."""
    principal = principal or getattr(request.state, "principal", None)
    repeated = 0
    throttle: DenialThrottle | None = getattr(request.app.state, "denials", None)
    if principal is None and throttle is not None:
        client = request.client.host if request.client else ""
        admitted = throttle.admit(client, reason)
        if admitted is None:
            return
        repeated = admitted
    data = {
        "method": request.method,
        "path": request.url.path,
        "status": status,
        "principal": principal.name if principal else None,
        "role": principal.role.value if principal else None,
        "needed": needed.value if needed else None,
        "roles": [r.value for r in Role if needed in GRANTS[r]] if needed else None,
        "reason": reason,
        "repeated": repeated,
    }
    where = f"{request.method} {request.url.path}"
    try:
        with request.app.state.services.db.session() as session:
            session.add(
                AuditEvent(
                    run_id="",
                    event=DENIED,
                    actor=principal.actor if principal else "",
                    message=f"{where} refused ({status}): {reason}",
                    data=data,
                )
            )
    except Exception:  # the refusal is answered whatever the store does
        log.exception("could not record the refusal of %s", where)


def authenticated(request: Request, *, audit: bool = True) -> Principal:
    """The authenticated principal of ``request`` (401 without a valid token); ``audit``:
    write a refusal to the audit trail (the console's sign-in check does not)."""

    def refuse(status: int, reason: str, principal: Principal | None = None) -> HTTPException:
        if audit:
            record_denial(request, status, reason, principal=principal)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return HTTPException(status, reason, headers=headers)

    try:
        token, from_cookie = _token(request)
    except HTTPException as exc:
        raise refuse(exc.status_code, str(exc.detail)) from None
    if token is None:
        trusted: TrustedHeader | None = request.app.state.services.trusted
        user = request.headers.get(trusted.header) if trusted is not None else None
        if trusted is not None and user is not None:
            if not trusted.trusts(request.client.host if request.client else None):
                raise refuse(401, f"the {trusted.header} header is believed only from the proxy")
            try:
                signed_on = trusted.principal(user)
            except Refused as exc:
                raise refuse(403, str(exc)) from None
            if request.method not in SAFE_METHODS and not _same_origin(request):
                raise refuse(
                    403, "cross-site request refused: use the console's own pages", signed_on
                )
            request.state.principal = signed_on
            return signed_on
        raise refuse(401, "authentication required: send 'Authorization: Bearer TOKEN'")
    with request.app.state.services.db.session() as session:
        principal = authenticate(session, token)
    if principal is None:
        raise refuse(401, "unknown or revoked token")
    if from_cookie and request.method not in SAFE_METHODS and not _same_origin(request):
        raise refuse(403, "cross-site request refused: use the console's own pages", principal)
    request.state.principal = principal
    return principal


def current_principal(request: Request) -> Principal:
    """The authenticated principal of ``request`` (401 without a valid token)."""
    return authenticated(request)


Caller = Annotated[Principal, Depends(current_principal)]


def needs(permission: Permission) -> Callable[[Request, Principal], Principal]:
    """A dependency that lets the request through only with ``permission``."""

    def check(request: Request, principal: Caller) -> Principal:
        if not principal.may(permission):
            reason = (
                f"{principal.name} has role {principal.role.value}, which does not grant "
                f"{permission.value}"
            )
            record_denial(request, 403, reason, principal=principal, needed=permission)
            raise HTTPException(403, reason)
        return principal

    return check


Reader = Annotated[Principal, Depends(needs(Permission.READ))]
Administrator = Annotated[Principal, Depends(needs(Permission.ADMINISTER))]
