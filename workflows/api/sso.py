"""Single sign-on through a trusted reverse proxy (off unless configured).

A proxy that authenticates users (OIDC, SAML, Kerberos) passes the user's name in a header;
Ferryman believes that header only from the proxy's own addresses:

``FERRYMAN_API_TRUSTED_HEADER``
    The header naming the user, e.g. ``X-Remote-User``. Unset: sign-on by header is off.
``FERRYMAN_API_TRUSTED_PROXIES``
    Comma-separated addresses or networks of the proxy, e.g. ``127.0.0.1,10.0.0.0/24``;
    required with the header. A request from anywhere else is judged by its token alone.
``FERRYMAN_API_TRUSTED_ROLES``
    Comma-separated ``USER=ROLE`` pairs; ``*=ROLE`` gives every other user a role. A user
    without a role is refused (403). Required with the header.

A bearer token in the same request wins over the header. A state-changing request signed on
by the header must come from the console's own origin, as one signed on by the cookie.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass

from plans.errors import ConfigurationError
from workflows.settings import Settings
from workflows.tokens import Principal, Role

HEADER = "FERRYMAN_API_TRUSTED_HEADER"
PROXIES = "FERRYMAN_API_TRUSTED_PROXIES"
ROLES = "FERRYMAN_API_TRUSTED_ROLES"
USER_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@\\-]{0,127}$")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Refused(Exception):
    """The header names a user Ferryman will not sign on; the message says why."""


@dataclass(frozen=True)
class TrustedHeader:
    """Which header names the user, which addresses may send it, and each user's role."""

    header: str
    proxies: tuple[Network, ...]
    roles: Mapping[str, Role]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TrustedHeader | None:
        """The configuration of the ``FERRYMAN_*`` variables of ``environ``."""
        return cls.from_settings(Settings.from_env(environ))

    @classmethod
    def from_settings(cls, settings: Settings) -> TrustedHeader | None:
        """The configuration of ``settings`` (None: off); raises ConfigurationError saying
        which variable to fix."""
        env = {
            HEADER: settings.api_trusted_header,
            PROXIES: settings.api_trusted_proxies,
            ROLES: settings.api_trusted_roles,
        }
        header = env.get(HEADER, "").strip()
        if not header:
            return None
        if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", header):
            raise ConfigurationError(
                f"{HEADER} {header!r}: give a header name such as X-Remote-User"
            )
        if header.lower() in ("authorization", "cookie", "host", "origin", "referer"):
            raise ConfigurationError(f"{HEADER} {header!r}: choose a header of its own")
        proxies: list[Network] = []
        for part in filter(None, (p.strip() for p in env.get(PROXIES, "").split(","))):
            try:
                proxies.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                raise ConfigurationError(
                    f"{PROXIES}: {part!r} is not an address or network (e.g. 10.0.0.0/24)"
                ) from None
        if not proxies:
            raise ConfigurationError(
                f"{HEADER} is set but {PROXIES} is not: name the proxy's addresses"
            )
        roles: dict[str, Role] = {}
        for pair in filter(None, (p.strip() for p in env.get(ROLES, "").split(","))):
            user, equals, role = (s.strip() for s in pair.partition("="))
            if not equals or not user:
                raise ConfigurationError(f"{ROLES}: {pair!r} is not USER=ROLE")
            try:
                roles[user] = Role(role)
            except ValueError:
                raise ConfigurationError(
                    f"{ROLES}: {pair!r}: role {role!r} is not one of "
                    + ", ".join(r.value for r in Role)
                ) from None
        if not roles:
            raise ConfigurationError(
                f"{HEADER} is set but {ROLES} is not: map users to roles (alice=administrator,"
                " *=viewer)"
            )
        return cls(header, tuple(proxies), roles)

    def trusts(self, address: str | None) -> bool:
        """Whether a request from ``address`` may sign on by the header."""
        if not address:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.proxies)

    def principal(self, user: str) -> Principal:
        """The principal the header's ``user`` stands for (raises :class:`Refused`)."""
        user = user.strip()
        if not USER_PATTERN.match(user):
            raise Refused(f"the {self.header} header does not hold a user name")
        role = self.roles.get(user) or self.roles.get("*")
        if role is None:
            raise Refused(f"{user} has no role ({ROLES} gives none)")
        return Principal(user, role, "sign-on")
