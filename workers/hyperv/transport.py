"""pypsrp's HTTP transport with a lean path for the messages of an established connection.

pypsrp sends every WS-Man message through ``requests``: a ``Request`` prepared (settings merged,
hooks, cookies, auth), an adapter, urllib3's pool and retry logic, and ``http.client``'s
response parsing through the ``email`` package -- close to half of a call's client CPU
(``python -m bench.client --profile``) for three messages on one keep-alive connection.

:class:`LeanTransport` is pypsrp's ``_TransportHTTP`` that lets pypsrp and ``requests`` do
everything they do until a message has gone out and been answered on a connection: building
the session, connecting (TLS and its certificate checks included), authenticating (NTLM or
Kerberos with its channel binding, Basic, CredSSP), setting up message sealing. It then keeps
that connection, taken out of urllib3's pool, with the request line and headers ``requests``
sent on it, and sends each next message there itself: the message is sealed by pypsrp's own
``WinRMEncryption`` (the connection's security context) as before, the request is the same
bytes ``requests`` would write (the same headers in the same order, the new Content-Type and
Content-Length), and the reply is read as HTTP/1.1 (Content-Length, chunked, or up to the
close) and handled as pypsrp's ``_send_request`` handles it: unsealed, a 401 is pypsrp's
``AuthenticationError``, another 4xx/5xx its ``WinRMTransportError`` with the code and text.

Whatever the path cannot tell apart from what ``requests`` does goes back to ``requests``: a
kept connection that the server closed (or that holds unread bytes) goes back to the pool
before the next message, so urllib3 opens a new one and pypsrp authenticates it as it always
did (a sealed message on a new NTLM connection is refused with HTTP 400, which the runner
treats as a stale session). Errors are raised as ``requests`` raises them, so
:mod:`workers.hyperv.faults` reads them the same way: no answer in time is ``ReadTimeout``
(pypsrp's retry of a Receive included), a reset or a close before the reply is a
``ConnectionError`` (the answer lost), a broken reply body a ``ChunkedEncodingError``, a TLS
failure an ``SSLError``. ``tests/workers/hyperv/test_transport.py`` compares the bytes on the
wire with those ``requests`` sends, for each auth mode.
"""

from __future__ import annotations

import errno
import http.client
import logging
import re
import ssl
import time
from typing import Any
from urllib.parse import urlsplit

import requests
from pypsrp._utils import to_string, to_unicode
from pypsrp.exceptions import AuthenticationError, WinRMTransportError
from pypsrp.wsman import WSMan, _TransportHTTP
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers
from urllib3.exceptions import ProtocolError, ReadTimeoutError
from urllib3.exceptions import SSLError as Urllib3SSLError
from urllib3.util.wait import wait_for_read

log = logging.getLogger("pypsrp.wsman")  # pypsrp's own logger: the same lines as before

_MAX_HEAD = 65536  # bytes of status line and headers, as http.client's line limits allow
_ENCRYPTED = ("multipart/encrypted;", "multipart/x-multi-encrypted;")
_BOUNDARY = re.compile("boundary=[" '|\\"](.*)[' '|\\"]')  # pypsrp's expression
_SEND_ERRORS_READ_ON = (errno.EPROTOTYPE, errno.ECONNRESET)  # urllib3 reads the reply anyway


class _Reply:
    """One HTTP response: status, headers (names lower-case, repeats joined) and body."""

    __slots__ = ("body", "close", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes, close: bool) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.close = close


class _BodyError(Exception):
    """The reply's head was read, its body broke (``requests`` reports that differently)."""


class LeanTransport(_TransportHTTP):
    """``_TransportHTTP`` that sends on its established connection without ``requests``."""

    _connection: Any = None  # urllib3's HTTPConnection, out of its pool while kept here
    _pool: Any = None  # the urllib3 pool the last request went through
    _head: tuple[bytes, list[tuple[bytes, bytes]]] | None = None  # request line + headers

    @classmethod
    def of(cls, wsman: WSMan) -> WSMan:
        """``wsman`` with its (unused) transport made a :class:`LeanTransport`."""
        transport = cls.__new__(cls)
        transport.__dict__.update(wsman.transport.__dict__)
        wsman.transport = transport
        return wsman

    # --- pypsrp's entry points ------------------------------------------------------------------

    def send(
        self,
        message: bytes,
        *,
        retries_on_read_timeout: int = 0,
        timeout: int | float | tuple[int | float, int | float] | None = None,
    ) -> bytes:
        connection = self._ready()
        if connection is None:
            return super().send(
                message, retries_on_read_timeout=retries_on_read_timeout, timeout=timeout
            )
        try:
            return self._exchange(connection, message, timeout)
        except requests.ReadTimeout as exc:
            # pypsrp's own handling of a read timeout: retry the same message while allowed,
            # with a new security context (the next attempt goes through requests)
            log.exception("%s during WSMan request - attempt %d", type(exc).__name__, 0)
            if retries_on_read_timeout == 0:
                raise
            self.encryption = None
            time.sleep(self.reconnection_backoff)
            return super().send(
                message, retries_on_read_timeout=retries_on_read_timeout - 1, timeout=timeout
            )

    def _send_request(
        self,
        request: requests.PreparedRequest,
        timeout: int | float | tuple[int | float, int | float] | None = None,
    ) -> bytes:
        self._give_back()  # requests sends on the pool's connection: the kept one goes back
        content = super()._send_request(request, timeout)
        # answered through requests: keep that connection and the request's head
        self._head = _head_of(request)
        self._keep()
        return content

    def _build_session(self) -> requests.Session:
        session = super()._build_session()
        session.hooks["response"].append(self._remember_pool)
        return session

    def close(self) -> None:
        self._drop()
        super().close()

    # --- the kept connection --------------------------------------------------------------------

    def _remember_pool(self, response: requests.Response, **_: Any) -> requests.Response:
        self._pool = getattr(response.raw, "_pool", None)
        return response

    def _keep(self) -> None:
        """Take the connection the last request used (idle in its pool now) out of the pool."""
        pool = self._pool
        if pool is None or self._connection is not None:
            return
        try:
            connection = pool._get_conn()
        except Exception:  # a closed pool: nothing to keep
            return
        if getattr(connection, "sock", None) is None:
            pool._put_conn(connection)  # a fresh or closed one: urllib3 connects it when used
            return
        self._connection = connection

    def _ready(self) -> Any:
        """The kept connection if the next message can go on it, else None (with the
        connection back in its pool, where urllib3 reconnects it if the server closed it)."""
        connection = self._connection
        if connection is None:
            return None
        sock = connection.sock
        if (
            self._head is None
            or self.session is None
            or (self.wrap_required and self.encryption is None)
            or sock is None
            or wait_for_read(sock, timeout=0.0)  # closed by the server, or unasked-for bytes
        ):
            self._give_back()
            return None
        return connection

    def _give_back(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and self._pool is not None:
            self._pool._put_conn(connection)
        elif connection is not None:
            connection.close()

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
            if self._pool is not None:
                self._pool._put_conn(connection)  # the pool's slot; closed, it reconnects

    # --- one exchange ---------------------------------------------------------------------------

    def _exchange(self, connection: Any, message: bytes, timeout: Any) -> bytes:
        """Send ``message`` on ``connection`` and return the reply's content, as pypsrp's
        ``send`` + ``_send_request`` do through requests."""
        if log.isEnabledFor(logging.DEBUG):
            log.debug("Sending message on attempt 0: %s", message.decode("utf-8"))
        if self.wrap_required:
            assert self.encryption is not None
            content_type, payload = self.encryption.wrap_message(message)
            protocol = self.encryption.protocol
            content_type = f'{content_type};protocol="{protocol}";boundary="Encrypted Boundary"'
        else:
            payload = message
            content_type = "application/soap+xml;charset=UTF-8"
        assert self._head is not None
        request_line, headers = self._head
        lines = [request_line]
        for name, value in headers:
            lower = name.lower()
            if lower == b"content-type":
                value = content_type.encode("latin-1")
            elif lower == b"content-length":
                value = str(len(payload)).encode("ascii")
            lines.append(name + b": " + value)
        lines.append(b"")
        lines.append(payload)
        read_timeout = _read_timeout(
            timeout if timeout is not None else (self.connection_timeout, self.read_timeout)
        )
        try:
            reply = _round_trip(connection.sock, b"\r\n".join(lines), read_timeout, self.endpoint)
        except BaseException:
            self._drop()
            raise
        if reply.close:
            self._drop()
        return self._content(reply)

    def _content(self, reply: _Reply) -> bytes:
        content_type = reply.headers.get("content-type", "")
        if content_type.startswith(_ENCRYPTED):
            match = _BOUNDARY.search(content_type)
            assert match is not None and self.encryption is not None
            content = self.encryption.unwrap_message(reply.body, to_unicode(match.group(1)))
            text: str | None = to_string(content)
        else:
            content = reply.body
            text = None  # written only when read: an error, or pypsrp's debug log
        if 400 <= reply.status < 600:
            if reply.status == 401:
                raise AuthenticationError(
                    f"Failed to authenticate the user {self.username} with {self.auth}"
                )
            if text is None:
                text = _text(reply) if content else ""
            raise WinRMTransportError("http", reply.status, text)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("Received message: %s" % (text if text is not None else _text(reply)))
        return content


def _head_of(request: requests.PreparedRequest) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The request line, Host and headers ``requests`` (through urllib3 and http.client) sent
    for ``request``, in their order, as bytes."""
    parts = urlsplit(str(request.url))
    host = _host_header(parts.hostname or "", parts.port, parts.scheme)
    headers = [(b"Host", host)]
    for name, value in request.headers.items():
        if name.lower() == "host":
            continue
        raw = value if isinstance(value, bytes) else str(value).encode("latin-1")
        headers.append((name.encode("latin-1"), raw))
    return f"POST {request.path_url} HTTP/1.1".encode("latin-1"), headers


def _host_header(hostname: str, port: int | None, scheme: str) -> bytes:
    """The Host header http.client writes for a connection to ``hostname:port``."""
    hostname = hostname.rstrip(".")  # urllib3 writes a name without the root's dot
    try:
        host = hostname.encode("ascii")
    except UnicodeEncodeError:
        host = hostname.encode("idna")
    if ":" in hostname:
        host = b"[" + host.split(b"%", 1)[0] + b"]"  # an IPv6 address, without its zone
    default = 443 if scheme == "https" else 80
    if port is None or port == default:
        return host
    return host + b":" + str(port).encode("ascii")


def _read_timeout(timeout: Any) -> float | None:
    if isinstance(timeout, tuple):
        return timeout[1]
    return timeout


def _round_trip(sock: Any, request: bytes, timeout: float | None, url: str) -> _Reply:
    """Send ``request`` and read its reply; errors raised as requests raises them."""
    try:
        sock.settimeout(timeout)
        sock.sendall(request)
    except ssl.SSLError as exc:
        raise requests.exceptions.SSLError(Urllib3SSLError(exc)) from exc
    except OSError as exc:
        # urllib3 reads the reply after these (the server may have answered and closed)
        if not isinstance(exc, BrokenPipeError) and exc.errno not in _SEND_ERRORS_READ_ON:
            raise _aborted(exc) from exc
    try:
        return _read_reply(sock)
    except _BodyError as broken:
        cause = broken.__cause__
        if isinstance(cause, TimeoutError):
            raise requests.ConnectionError(
                ReadTimeoutError(None, url, "Read timed out.")  # type: ignore[arg-type]
            ) from cause
        if isinstance(cause, ssl.SSLError):
            raise requests.exceptions.SSLError(Urllib3SSLError(cause)) from cause
        error = ProtocolError(f"Connection broken: {cause!r}", cause)
        raise requests.exceptions.ChunkedEncodingError(error) from cause
    except TimeoutError as exc:
        raise requests.ReadTimeout(
            ReadTimeoutError(None, url, f"Read timed out. (read timeout={timeout})")  # type: ignore[arg-type]
        ) from exc
    except ssl.SSLError as exc:
        raise requests.exceptions.SSLError(Urllib3SSLError(exc)) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise _aborted(exc) from exc


def _aborted(exc: BaseException) -> requests.ConnectionError:
    return requests.ConnectionError(ProtocolError("Connection aborted.", exc))


def _read_reply(sock: Any) -> _Reply:
    """Read one HTTP/1.1 reply (skipping 1xx ones) from ``sock``."""
    buffer = b""
    while True:
        end = buffer.find(b"\r\n\r\n")
        while end < 0:
            if len(buffer) > _MAX_HEAD:
                raise http.client.LineTooLong("header line")
            chunk = sock.recv(65536)
            if not chunk:
                if buffer:
                    raise http.client.BadStatusLine(repr(buffer[:80]))
                raise http.client.RemoteDisconnected(
                    "Remote end closed connection without response"
                )
            buffer += chunk
            end = buffer.find(b"\r\n\r\n")
        head, buffer = buffer[:end].decode("iso-8859-1"), buffer[end + 4 :]
        lines = head.split("\r\n")
        status, version = _status(lines[0])
        if 100 <= status < 200:
            continue  # an interim reply: the real one follows, as http.client reads it
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                continue
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        try:
            body, rest, closed = _read_body(sock, status, headers, buffer)
        except (OSError, http.client.HTTPException) as exc:
            raise _BodyError from exc
        connection = headers.get("connection", "").lower()
        close = (
            closed
            or bool(rest)  # bytes nobody asked for: the connection cannot be trusted
            or "close" in connection
            or (version == "HTTP/1.0" and "keep-alive" not in connection)
        )
        return _Reply(status, headers, body, close)


def _status(line: str) -> tuple[int, str]:
    version, _, rest = line.partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/") or len(code) != 3 or not code.isdigit():
        raise http.client.BadStatusLine(line)
    return int(code), version


def _read_body(
    sock: Any, status: int, headers: dict[str, str], buffer: bytes
) -> tuple[bytes, bytes, bool]:
    """The body, the bytes read past it, and whether the server closed the connection."""
    if status in (204, 304):
        return b"", buffer, False
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return _read_chunked(sock, buffer)
    length_text = headers.get("content-length")
    if length_text is None:
        chunks = [buffer]
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks), b"", True
    try:
        length = int(length_text.split(",")[0])
    except ValueError:
        raise http.client.HTTPException(f"invalid Content-Length {length_text!r}") from None
    chunks, have = [buffer], len(buffer)
    while have < length:
        chunk = sock.recv(max(65536, length - have))
        if not chunk:
            raise http.client.IncompleteRead(b"".join(chunks), length - have)
        chunks.append(chunk)
        have += len(chunk)
    data = b"".join(chunks)
    return data[:length], data[length:], False


def _read_chunked(sock: Any, buffer: bytes) -> tuple[bytes, bytes, bool]:
    body: list[bytes] = []

    def line() -> bytes:
        nonlocal buffer
        while (end := buffer.find(b"\r\n")) < 0:
            chunk = sock.recv(65536)
            if not chunk:
                raise http.client.IncompleteRead(b"".join(body))
            buffer += chunk
        text, buffer = buffer[:end], buffer[end + 2 :]
        return text

    def exactly(count: int) -> bytes:
        nonlocal buffer
        while len(buffer) < count:
            chunk = sock.recv(65536)
            if not chunk:
                raise http.client.IncompleteRead(b"".join(body), count - len(buffer))
            buffer += chunk
        data, buffer = buffer[:count], buffer[count:]
        return data

    while True:
        size_text = line().split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise http.client.IncompleteRead(b"".join(body)) from None
        if size == 0:
            while line():  # trailers, up to the empty line
                pass
            return b"".join(body), buffer, False
        body.append(exactly(size))
        exactly(2)  # the chunk's CRLF


def _text(reply: _Reply) -> str:
    """The reply's body as requests' ``Response.text`` decodes it (for an error's text)."""
    response = requests.Response()
    response._content = reply.body
    response.headers = CaseInsensitiveDict(reply.headers)
    response.encoding = get_encoding_from_headers(response.headers)
    return response.text


def lean(wsman: WSMan) -> WSMan:
    """``wsman`` sending on its established connection without requests' per-request work."""
    return LeanTransport.of(wsman)

