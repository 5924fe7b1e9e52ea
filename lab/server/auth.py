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


_NTLM_SIGN = 0x00000010
_NTLM_SEAL = 0x00000020
_NTLM_ESS = 0x00080000  # extended session security
_NTLM_KEY_EXCH = 0x40000000
_SIGNATURE_VERSION = b"\x01\x00\x00\x00"


class NtlmSeal:
    """NTLM message confidentiality with extended session security (MS-NLMP 3.4.4.2), the
    sealing a WinRM client and Windows use, for one established context.

    pyspnego computes the same bytes, but rebuilds the negotiated flags and goes through
    several layers on every message; this keeps the context's two RC4 streams, signing keys
    and sequence numbers, taken over from pyspnego once its handshake is complete
    (:meth:`adopt`), and does only the cipher and HMAC-MD5 calls. Once taken over, the
    pyspnego context must not seal or unseal again (its copies of the streams and sequence
    numbers would fall behind).
    """

    def __init__(
        self,
        flags: int,
        cipher_out: Any,
        cipher_in: Any,
        sign_key_out: bytes,
        sign_key_in: bytes,
        seq_out: int,
        seq_in: int,
    ) -> None:
        self._key_exch = bool(flags & _NTLM_KEY_EXCH)
        self._out = cipher_out.update
        self._in = cipher_in.update
        self._sign_out = sign_key_out
        self._sign_in = sign_key_in
        self._seq_out = seq_out
        self._seq_in = seq_in

    @classmethod
    def adopt(cls, context: Any) -> NtlmSeal | None:
        """The sealing state of a complete pyspnego NTLM (or Negotiate over NTLM) acceptor,
        or None when it is anything else (then pyspnego keeps sealing)."""
        inner = getattr(context, "_context", context)
        if type(inner).__name__ != "NTLMProxy" or not getattr(inner, "complete", False):
            return None
        try:
            flags = int(inner._context_attr)
            handle_out, handle_in = inner._handle_out, inner._handle_in
            cipher_out, cipher_in = handle_out._handle, handle_in._handle
            sign_out, sign_in = inner._sign_key_out, inner._sign_key_in
            seq_out = inner._NTLMProxy__seq_num_out
            seq_in = inner._NTLMProxy__seq_num_in
        except AttributeError:
            return None
        wanted = _NTLM_SIGN | _NTLM_SEAL | _NTLM_ESS
        if (
            flags & wanted != wanted
            or handle_out is handle_in
            or not (isinstance(sign_out, bytes) and isinstance(sign_in, bytes))
            or not (isinstance(seq_out, int) and isinstance(seq_in, int))
        ):
            return None
        return cls(flags, cipher_out, cipher_in, sign_out, sign_in, seq_out, seq_in)

    def wrap(self, message: bytes) -> tuple[bytes, bytes]:
        """Seal one message: (signature, sealed message)."""
        seq = self._seq_out.to_bytes(4, "little")
        self._seq_out += 1
        sealed = self._out(message)
        checksum = hmac.digest(self._sign_out, seq + message, "md5")[:8]
        if self._key_exch:
            checksum = self._out(checksum)
        return _SIGNATURE_VERSION + checksum + seq, sealed

    def unwrap(self, signature: bytes, sealed: bytes) -> bytes:
        """Unseal one message and check its signature and sequence number (ValueError)."""
        seq = self._seq_in.to_bytes(4, "little")
        self._seq_in += 1
        message = self._in(sealed)
        checksum = hmac.digest(self._sign_in, seq + message, "md5")[:8]
        if self._key_exch:
            checksum = self._in(checksum)
        if not hmac.compare_digest(_SIGNATURE_VERSION + checksum + seq, signature):
            raise ValueError("NTLM message signature does not match")
        return message


@dataclass
class ConnectionAuth:
    """Authentication state of one TCP connection."""

    authenticated: bool = False
    user: str = ""  # who authenticated, as the client named itself
    context: Any = None  # a pyspnego context once NTLM completes (or while in progress)
    encrypted: bool = False
    # The context's message sealing, taken over when NTLM completes (None: pyspnego's own).
    seal: NtlmSeal | None = None
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
                    state.seal = None
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
        if state.encrypted:
            state.seal = NtlmSeal.adopt(state.context)
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
                if state.seal is not None:
                    message += state.seal.unwrap(header, wrapped[4 + header_len :])
                else:
                    message += state.context.unwrap_winrm(header, wrapped[4 + header_len :])
            except Exception:
                raise AuthFailed(HttpReply(400, b"", [])) from None
        return message

    @staticmethod
    def wrap(state: ConnectionAuth, message: bytes) -> tuple[str, bytes]:
        """Encrypt a reply; returns (Content-Type, body)."""
        if state.seal is not None:
            header, data = state.seal.wrap(message)
            padding = 0
        else:
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
