"""Who may do what: roles, the principal behind a request, and the API's bearer tokens.

Four roles, each a set of permissions (not a ladder: an approver decides gates but starts
nothing): a *viewer* reads; an *operator* runs test failovers and their cleanup; an *approver*
decides gates; an *administrator* may do everything, including planned and unplanned failovers,
commit, reverse and tokens. A principal is a name with a role and how it was authenticated;
its :attr:`Principal.actor` is what runs, gates and the audit trail record, never a name the
caller typed.

Tokens are 256 random bits shown once at creation; the store keeps only their SHA-256 digest.
"""

from __future__ import annotations

import enum
import getpass
import hashlib
import re
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, select

from plans.errors import FerrymanError
from workflows.store.tables import ApiToken, utcnow

TOKEN_PREFIX = "fm_"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class Role(enum.StrEnum):
    """What a principal is allowed to do."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    APPROVER = "approver"
    ADMINISTRATOR = "administrator"


class Permission(enum.StrEnum):
    """One kind of action; each role grants a set of them."""

    READ = "read"
    TEST = "test"  # test failovers, their cleanup, cancel/resume/compensate of test runs
    DECIDE = "decide"  # approve or reject a gate
    FAILOVER = "failover"  # planned/unplanned failovers, commit, reverse, cancel-failover
    ADMINISTER = "administer"  # tokens, protection changes


GRANTS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset({Permission.READ}),
    Role.OPERATOR: frozenset({Permission.READ, Permission.TEST}),
    Role.APPROVER: frozenset({Permission.READ, Permission.DECIDE}),
    Role.ADMINISTRATOR: frozenset(Permission),
}


class TokenError(FerrymanError):
    """A token cannot be made, found or revoked as asked."""


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: its name, role and how it proved who it is."""

    name: str
    role: Role
    via: str  # "token", "local CLI", ...

    @property
    def actor(self) -> str:
        """What runs, gates and the audit trail record as the one who acted."""
        return f"{self.name} ({self.role.value} via {self.via})"

    def may(self, permission: Permission) -> bool:
        """Whether this principal's role grants ``permission``."""
        return permission in GRANTS[self.role]


def local_administrator() -> Principal:
    """The principal of the CLI used on this host: a named local administrator."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for the uid (some containers)
        user = "uid-unknown"
    return Principal(f"{user}@{socket.gethostname()}", Role.ADMINISTRATOR, "local CLI")


def local_actor(on_behalf_of: str | None = None) -> str:
    """What the CLI records as the one who acted: the local administrator, followed by the
    name given with ``--by`` (for whom it acts), which never replaces the principal."""
    actor = local_administrator().actor
    if on_behalf_of and on_behalf_of != "cli":
        return f"{actor} for {on_behalf_of[:60]}"
    return actor


def digest(token: str) -> str:
    """The SHA-256 hex digest under which a token is stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(
    session: Session, *, name: str, role: Role | str, created_by: str
) -> tuple[ApiToken, str]:
    """Make a token for ``name``; returns its row and the token (the only time it exists)."""
    if not NAME_PATTERN.match(name):
        raise TokenError(
            f"token name {name!r}: use 1-64 letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit"
        )
    try:
        role = Role(role)
    except ValueError:
        raise TokenError(
            f"unknown role {role!r}: use one of {', '.join(r.value for r in Role)}"
        ) from None
    if session.exec(select(ApiToken).where(ApiToken.name == name)).first() is not None:
        raise TokenError(f"a token named {name!r} exists; revoke it first or choose another name")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        name=name,
        role=role.value,
        digest=digest(token),
        prefix=token[:10],
        created_by=created_by,
    )
    session.add(row)
    session.flush()
    return row, token


def list_tokens(session: Session) -> list[ApiToken]:
    """Every token, revoked ones included, oldest first."""
    return list(session.exec(select(ApiToken).order_by(ApiToken.id)))  # type: ignore[arg-type]


def revoke_token(session: Session, *, name: str) -> ApiToken:
    """Revoke the token called ``name``: it authenticates nobody from now on."""
    row = session.exec(select(ApiToken).where(ApiToken.name == name)).first()
    if row is None:
        raise TokenError(f"no token named {name!r} (ferryman tokens list shows them)")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.add(row)
    return row


def authenticate(session: Session, token: str, *, now: datetime | None = None) -> Principal | None:
    """The principal a presented token stands for; None for an unknown or revoked token."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    row = session.exec(select(ApiToken).where(ApiToken.digest == digest(token))).first()
    if row is None or row.revoked_at is not None:
        return None
    row.last_used_at = now or utcnow()
    session.add(row)
    return Principal(row.name, Role(row.role), "token")
