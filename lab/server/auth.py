"""HTTP authentication for the lab's WinRM endpoints: Basic, and NTLM with message encryption.

NTLM binds to the TCP connection, so each connection carries its own :class:`ConnectionAuth`.
Once NTLM completes, every message is wrapped the way WinRM does over plain HTTP
(``multipart/encrypted`` with ``application/HTTP-SPNEGO-session-encrypted`` parts).

pyspnego's NTLM acceptor reads the account database from the file named by the
``NTLM_USER_FILE`` environment variable at each step. The variable is process-wide, so each
step runs under one lock with the variable pointing at this lab's private file; that lets
several labs with different passwords run in one process (tests do). The variable is set, and
replaced, but never removed: other threads of the process iterate ``os.environ`` at any moment
(requests does on every call, looking for proxies), and a variable removed during such a pass
raises ``KeyError`` in that thread. With the lab in the same process as its clients (the demo,
the tests), that broke a client's call after it had sealed its message, and the session's next
message then failed NTLM's sequence check.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import os
import re
import struct
import tempfile
import threading
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import spnego

from lab.server.http_types import HttpReply

_NTLM_ENV_LOCK = threading.Lock()
_BOUNDARY = "Encrypted Boundary"
_PART = re.compile(rb"--\s*" + re.escape(_BOUNDARY.encode()) + rb"\r\n")
_END = re.compile(rb"--\s*" + re.escape(_BOUNDARY.encode()) + rb"--\r\n$")
SPNEGO_ENCRYPTED = "application/HTTP-SPNEGO-session-encrypted"


class AuthMode(StrEnum):
    """How an endpoint authenticates, as ``ferryman lab serve --auth`` names it."""

    BASIC = "basic"  # Basic over plain HTTP (pypsrp: auth="basic", encryption="never")
    NTLM = "ntlm"  # Negotiate/NTLM over HTTP with WinRM message encryption
    HTTPS = "https"  # Basic (or Negotiate) over TLS with a generated certificate


@dataclass(frozen=True)
class Account:
    """The lab's single login."""

    username: str
    password: str
    domain: str = "LAB"


class UserFile:
    """A private (0600) NTLM_USER_FILE for one lab; removed by :meth:`remove`."""

    def __init__(self, account: Account) -> None:
        fd, self.path = tempfile.mkstemp(prefix="ferryman-lab-ntlm-", suffix=".txt")
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            # With and without the domain, so "LAB\\ferryman" and "ferryman" both log in.
            fh.write(f"{account.domain}:{account.username}:{account.password}\n")
            fh.write(f":{account.username}:{account.password}\n")

    def remove(self) -> None:
        """Delete the file (idempotent)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


@dataclass
class ConnectionAuth:
    """Authentication state of one TCP connection."""

    authenticated: bool = False
    user: str = ""  # who authenticated, as the client named itself
    context: Any = None  # a pyspnego context once NTLM completes (or while in progress)
    encrypted: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class AuthFailed(Exception):
    """The request must be answered with ``reply`` (a 401 or 400)."""

    def __init__(self, reply: HttpReply) -> None:
        super().__init__(reply.status)
        self.reply = reply


@dataclass
class AuthResult:
    """Outcome of :meth:`Authenticator.accept` for an authenticated request."""

    body: bytes  # the SOAP request in clear text
    handshake_only: bool = False  # the request only finished NTLM (no SOAP body)


class Authenticator:
    """Checks each request against the lab's account for one auth mode."""

    def __init__(self, mode: AuthMode, account: Account, user_file: UserFile | None) -> None:
        self.mode = mode
        self.account = account
        self._user_file = user_file
        self.allow_basic = mode in (AuthMode.BASIC, AuthMode.HTTPS)
        self.allow_negotiate = mode in (AuthMode.NTLM, AuthMode.HTTPS) and user_file is not None

    def challenge_headers(self) -> list[tuple[str, str]]:
        """The WWW-Authenticate headers of a bare 401."""
        headers = []
        if self.allow_negotiate:
            headers.append(("WWW-Authenticate", "Negotiate"))
        if self.allow_basic:
            headers.append(("WWW-Authenticate", 'Basic realm="WSMAN"'))
        return headers

    def _unauthorized(self, extra: list[tuple[str, str]] | None = None) -> AuthFailed:
        return AuthFailed(
            HttpReply(401, b"", extra if extra is not None else self.challenge_headers())
        )

    def accept(self, state: ConnectionAuth, headers: Any, body: bytes) -> AuthResult:
        """Authenticate (or continue authenticating) one request; return its clear body."""
        authz = headers.get("Authorization", "")
        scheme, _, token = authz.partition(" ")
        scheme_l = scheme.lower()
        if scheme_l == "basic" and self.allow_basic:
            state.user = self._check_basic(token)
            state.authenticated = True
            return AuthResult(body)
        if scheme_l in ("negotiate", "ntlm") and self.allow_negotiate:
            return self._negotiate_step(state, token.strip(), body, headers.get("Content-Type", ""))
        if state.authenticated and state.encrypted:
            return AuthResult(self.unwrap(state, headers.get("Content-Type", ""), body))
        if state.authenticated and self.mode is AuthMode.HTTPS and state.context is not None:
            return AuthResult(body)
        raise self._unauthorized()

    def _check_basic(self, token: str) -> str:
        try:
            user, _, password = base64.b64decode(token).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            raise self._unauthorized() from None
        name = user.split("\\", 1)[-1].split("@", 1)[0]
        ok_user = hmac.compare_digest(name.lower(), self.account.username.lower())
        ok_password = hmac.compare_digest(password, self.account.password)
        if not (ok_user and ok_password):
            raise self._unauthorized()
        return user

    def _negotiate_step(
        self, state: ConnectionAuth, token: str, body: bytes, content_type: str
    ) -> AuthResult:
        assert self._user_file is not None
        try:
            in_token = base64.b64decode(token)
        except ValueError:
            raise self._unauthorized() from None
        with _NTLM_ENV_LOCK:
            if os.environ.get("NTLM_USER_FILE") != self._user_file.path:
                os.environ["NTLM_USER_FILE"] = self._user_file.path  # left set: see above
            try:
                if state.context is None or state.authenticated:
                    # A new handshake on this connection starts over.
                    state.context = spnego.server(protocol="negotiate")
                    state.authenticated = False
                    state.encrypted = False
                out_token = state.context.step(in_token)
            except Exception:
                state.context = None
                # A bare "Negotiate" with no token tells pypsrp the handshake is over: it
                # then raises AuthenticationError for the 401, as with real WinRM.
                raise self._unauthorized([("WWW-Authenticate", "Negotiate")]) from None
        if not state.context.complete:
            value = "Negotiate " + base64.b64encode(out_token or b"").decode()
            raise self._unauthorized([("WWW-Authenticate", value)])
        state.authenticated = True
        state.user = str(getattr(state.context, "client_principal", "") or "")
        state.encrypted = self.mode is AuthMode.NTLM
        headers = []
        if out_token:
            headers.append(
                ("WWW-Authenticate", "Negotiate " + base64.b64encode(out_token).decode())
            )
        state.extra["final_headers"] = headers
        if not body:
            return AuthResult(b"", handshake_only=True)
        if state.encrypted:
            return AuthResult(self.unwrap(state, content_type, body))
        return AuthResult(body)

    @staticmethod
    def unwrap(state: ConnectionAuth, content_type: str, body: bytes) -> bytes:
        """Decrypt a ``multipart/encrypted`` WinRM message."""
        if not content_type.startswith("multipart/encrypted"):
            raise AuthFailed(HttpReply(400, b"", []))
        parts = [p for p in _PART.split(body) if p]
        message = b""
        for i in range(0, len(parts) - 1, 2):
            payload = _END.sub(b"", parts[i + 1])
            wrapped = payload.replace(b"\tContent-Type: application/octet-stream\r\n", b"")
            header_len = struct.unpack("<i", wrapped[:4])[0]
            header = wrapped[4 : 4 + header_len]
            try:
                message += state.context.unwrap_winrm(header, wrapped[4 + header_len :])
            except Exception:
                raise AuthFailed(HttpReply(400, b"", [])) from None
        return message

    @staticmethod
    def wrap(state: ConnectionAuth, message: bytes) -> tuple[str, bytes]:
        """Encrypt a reply; returns (Content-Type, body)."""
        header, data, padding = state.context.wrap_winrm(message)
        wrapped = struct.pack("<i", len(header)) + header + data
        length = len(message) + padding
        head = "\r\n".join(
            [
                f"--{_BOUNDARY}",
                f"\tContent-Type: {SPNEGO_ENCRYPTED}",
                f"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length={length}",
                f"--{_BOUNDARY}",
                "\tContent-Type: application/octet-stream",
                "",
            ]
        ).encode()
        body = head + wrapped + f"--{_BOUNDARY}--\r\n".encode()
        content_type = f'multipart/encrypted;protocol="{SPNEGO_ENCRYPTED}";boundary="{_BOUNDARY}"'
        return content_type, body
