"""Authenticating a request: a bearer token, or the console's cookie holding one.

A request without a valid token is answered 401 and one whose role lacks the permission 403,
before anything changes. The console keeps the token in an HttpOnly, SameSite=Strict cookie;
a state-changing request authenticated by that cookie must also come from the console's own
origin, so a page elsewhere cannot forge one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from workflows.tokens import Permission, Principal, authenticate

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


def current_principal(request: Request) -> Principal:
    """The authenticated principal of ``request`` (401 without a valid token)."""
    token, from_cookie = _token(request)
    if token is None:
        raise HTTPException(
            401,
            "authentication required: send 'Authorization: Bearer TOKEN'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    with request.app.state.services.db.session() as session:
        principal = authenticate(session, token)
    if principal is None:
        raise HTTPException(401, "unknown or revoked token", headers={"WWW-Authenticate": "Bearer"})
    if from_cookie and request.method not in SAFE_METHODS and not _same_origin(request):
        raise HTTPException(403, "cross-site request refused: use the console's own pages")
    return principal


Caller = Annotated[Principal, Depends(current_principal)]


def needs(permission: Permission) -> Callable[[Principal], Principal]:
    """A dependency that lets the request through only with ``permission``."""

    def check(principal: Caller) -> Principal:
        if not principal.may(permission):
            raise HTTPException(
                403,
                f"{principal.name} has role {principal.role.value}, which does not grant "
                f"{permission.value}",
            )
        return principal

    return check


Reader = Annotated[Principal, Depends(needs(Permission.READ))]
Administrator = Annotated[Principal, Depends(needs(Permission.ADMINISTER))]
