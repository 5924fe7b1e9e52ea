"""A small threaded HTTP/1.1 server for the lab: keep-alive, Content-Length on every reply.

WinRM clients keep one TCP connection per session and NTLM binds to it, so every reply —
401s included — carries Content-Length and the connection stays open. An application can
ask for the connection to be dropped without an answer (an injected "reset").

A request's body is read only once it is known to be wanted: a missing, negative or garbled
Content-Length is answered 400, a chunked body 411, a body over the server's limit 413, and an
application may answer from the headers alone (:class:`BeforeBody`, e.g. a 401 to a request
without credentials). A reply sent without reading the body closes the connection, so the
unread bytes can never be taken for the next request.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.utils
import http.client
import logging
import re
import selectors
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from lab.server.http_types import HttpReply

log = logging.getLogger(__name__)


class DropConnection(Exception):
    """Close the TCP connection at once (with a reset) instead of answering."""


App = Callable[[str, str, Any, bytes, dict[str, Any], str], HttpReply]
"""``app(method, path, headers, body, connection_state, client_ip) -> HttpReply``."""

# socketserver's choice of selector for its accept loop.
_SELECTOR: Any = getattr(selectors, "PollSelector", selectors.SelectSelector)

MAX_BODY = 1024 * 1024  # bytes; the default for servers whose app sets no limit of its own


class BeforeBody(Protocol):
    """An application that may answer from the headers, before the body is read."""

    def before_body(
        self, method: str, path: str, headers: Any, length: int, state: dict[str, Any]
    ) -> HttpReply | None:
        """A reply to send without reading the ``length``-byte body, or None to read it."""


def content_length(headers: Any) -> int | None:
    """The request's Content-Length (0 when absent), or None when it is not one number >= 0."""
    values = headers.get_all("Content-Length") if hasattr(headers, "get_all") else None
    if values is None:
        single = headers.get("Content-Length")
        values = [] if single is None else [single]
    if not values:
        return 0
    if len({v.strip() for v in values}) != 1:
        return None  # two different lengths: request smuggling territory
    text = values[0].strip()
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        return None
    return int(text)


# A header line the email parser reads as one field "Name: value" and nothing else: a name of
# the characters its header pattern allows, then printable ASCII, spaces and tabs, then CRLF.
_SIMPLE_FIELD = re.compile(rb"([\x21-\x39\x3b-\x7e]+):[ \t]*([\x20-\x7e\t]*)\r\n")


class Headers:
    """A request's header fields, read the way ``http.client.HTTPMessage`` reads them: the
    fields in order (:meth:`items`), case-insensitive :meth:`get` (the first field of a name)
    and :meth:`get_all`. Built by :func:`read_headers` when every line is a plain field; a
    lookup is one dict read instead of the email message's pass over every field.
    """

    __slots__ = ("_fields", "_first")

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        self._fields = fields
        first: dict[str, str] = {}
        for name, value in fields:
            first.setdefault(name.lower(), value)
        self._first = first

    def get(self, name: str, failobj: Any = None) -> Any:
        """The first value of field ``name``, or ``failobj``."""
        return self._first.get(name.lower(), failobj)

    def get_all(self, name: str, failobj: Any = None) -> Any:
        """Every value of field ``name`` in order, or ``failobj`` when there is none."""
        key = name.lower()
        values = [value for field, value in self._fields if field.lower() == key]
        return values or failobj

    def __getitem__(self, name: str) -> str | None:
        return self._first.get(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first

    def __len__(self) -> int:
        return len(self._fields)

    def __iter__(self) -> Iterator[str]:
        return iter([name for name, _ in self._fields])

    def keys(self) -> list[str]:
        """The field names in order."""
        return [name for name, _ in self._fields]

    def values(self) -> list[str]:
        """The field values in order."""
        return [value for _, value in self._fields]

    def items(self) -> list[tuple[str, str]]:
        """The fields in order."""
        return list(self._fields)

    def __str__(self) -> str:
        return "".join(f"{name}: {value}\n" for name, value in self._fields) + "\n"


def read_headers(fp: Any) -> Headers | http.client.HTTPMessage:
    """``http.client.parse_headers(fp)``: the same fields, limits and errors, read faster.

    The lines are read by ``http.client`` itself (its line-length and header-count limits and
    errors). When every line is a plain ``Name: value`` field (:data:`_SIMPLE_FIELD`, as every
    WinRM client sends), the fields are kept as the email parser would store them (the value
    without its leading blanks and line end) in a :class:`Headers`; a folded, malformed or
    non-ASCII line sends the whole block through the email parser as before. Only the header
    fields are the application's: the lab never reads the (empty) body part of the message.
    """
    lines = http.client._read_headers(fp)  # type: ignore[attr-defined]
    fields = []
    for line in lines[:-1]:
        match = _SIMPLE_FIELD.fullmatch(line)
        if match is None:
            text = b"".join(lines).decode("iso-8859-1")
            parsed: http.client.HTTPMessage = email.parser.Parser(
                _class=http.client.HTTPMessage
            ).parsestr(text)
            return parsed
        name, value = match.groups()
        fields.append((name.decode("ascii"), value.decode("ascii")))
    return Headers(fields)


class LabHTTPServer(ThreadingHTTPServer):
    """Thread-per-connection server bound to 127.0.0.1 that can close all its connections."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    # socketserver's default backlog of 5 resets bursts of new connections (50 clients opening
    # pools at once); http.sys, which serves WinRM on Windows, queues far more.
    request_queue_size = 512

    def __init__(
        self,
        port: int,
        app: App,
        ssl_context: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
        max_body: int = MAX_BODY,
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.ssl_context = ssl_context
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        # The accept loop sleeps until a connection or a byte on this pair (see shutdown).
        self._wake_read, self._wake_write = socket.socketpair()
        self._stopping = False
        self._not_serving = threading.Event()
        self._not_serving.set()
        try:
            super().__init__((host, port), _Handler)
        except BaseException:
            self._wake_read.close()
            self._wake_write.close()
            raise

    @property
    def port(self) -> int:
        """The bound TCP port."""
        return int(self.server_address[1])

    def finish_request(self, request: Any, client_address: Any) -> None:
        # TLS handshake in the connection's own thread, never in the accept loop.
        if self.ssl_context is not None:
            try:
                request = self.ssl_context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return
        with self._conn_lock:
            self._connections.add(request)
        try:
            super().finish_request(request, client_address)
        finally:
            with self._conn_lock:
                self._connections.discard(request)
            with contextlib.suppress(OSError):
                request.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s ended with an error", client_address, exc_info=True)

    def close_connections(self) -> None:
        """Reset every open connection (a host going down)."""
        with self._conn_lock:
            conns = list(self._connections)
        for conn in conns:
            reset(conn)

    def start(self) -> threading.Thread:
        """Serve in a daemon thread; returns the thread."""
        self._not_serving.clear()
        thread = threading.Thread(target=self._serve, daemon=True, name=f"lab-http-{self.port}")
        thread.start()
        return thread

    def _serve(self) -> None:
        """``serve_forever`` without its timed wake-ups: with dozens of hosts, each polling
        20 times a second so that it stops quickly, an idle lab kept a core busy for a few
        ms of every second. :meth:`shutdown` wakes the loop through a socket pair instead."""
        try:
            with _SELECTOR() as selector:
                selector.register(self, selectors.EVENT_READ)
                selector.register(self._wake_read, selectors.EVENT_READ)
                while not self._stopping:
                    ready = selector.select()
                    if self._stopping:
                        break
                    if any(key.fileobj is self for key, _ in ready):
                        self._handle_request_noblock()  # type: ignore[attr-defined]
                    self.service_actions()
        finally:
            self._not_serving.set()

    def shutdown(self) -> None:
        """Stop the accept loop and wait for it (at once when it never started)."""
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_write.send(b"\0")
        self._not_serving.wait()

    def server_close(self) -> None:
        super().server_close()
        self._wake_read.close()
        self._wake_write.close()

    def stop(self) -> None:
        """Stop accepting, close the listening socket, then reset open connections."""
        self.shutdown()
        self.server_close()
        self.close_connections()


def reset(conn: socket.socket) -> None:
    """Close ``conn`` so the peer sees a reset rather than an orderly close."""
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        conn.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Buffered writes put headers and body in one segment: two small writes meet the
    # client's delayed ACK (Nagle) and cost ~40 ms per request.
    wbufsize = 256 * 1024
    server: LabHTTPServer

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.state: dict[str, Any] = {}

    def parse_request(self) -> bool:
        """``BaseHTTPRequestHandler.parse_request`` (CPython 3.11) with the header block read by
        :func:`read_headers` instead of the email parser; everything else as there."""
        self.command = None  # type: ignore[assignment]  # set in case of error on the first line
        self.request_version = version = self.default_request_version
        self.close_connection = True
        requestline = str(self.raw_requestline, "iso-8859-1")  # type: ignore[attr-defined]
        requestline = requestline.rstrip("\r\n")
        self.requestline = requestline
        words = requestline.split()
        if len(words) == 0:
            return False
        if len(words) >= 3:  # Enough to determine protocol version
            version = words[-1]
            try:
                if not version.startswith("HTTP/"):
                    raise ValueError
                base_version_number = version.split("/", 1)[1]
                version_number = base_version_number.split(".")
                if len(version_number) != 2:
                    raise ValueError
                if any(not component.isdigit() for component in version_number):
                    raise ValueError("non digit in http version")
                if any(len(component) > 10 for component in version_number):
                    raise ValueError("unreasonable length http version")
                numbers = int(version_number[0]), int(version_number[1])
            except (ValueError, IndexError):
                self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request version ({version!r})")
                return False
            if numbers >= (1, 1) and self.protocol_version >= "HTTP/1.1":
                self.close_connection = False
            if numbers >= (2, 0):
                self.send_error(
                    HTTPStatus.HTTP_VERSION_NOT_SUPPORTED,
                    f"Invalid HTTP version ({base_version_number})",
                )
                return False
            self.request_version = version
        if not 2 <= len(words) <= 3:
            self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request syntax ({requestline!r})")
            return False
        command, path = words[:2]
        if len(words) == 2:
            self.close_connection = True
            if command != "GET":
                self.send_error(HTTPStatus.BAD_REQUEST, f"Bad HTTP/0.9 request type ({command!r})")
                return False
        self.command, self.path = command, path
        if self.path.startswith("//"):
            self.path = "/" + self.path.lstrip("/")  # Reduce to a single /
        try:
            self.headers = read_headers(self.rfile)  # type: ignore[assignment]
        except http.client.LineTooLong as err:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long", str(err))
            return False
        except http.client.HTTPException as err:
            self.send_error(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers", str(err)
            )
            return False
        conntype = self.headers.get("Connection", "")
        if conntype.lower() == "close":
            self.close_connection = True
        elif conntype.lower() == "keep-alive" and self.protocol_version >= "HTTP/1.1":
            self.close_connection = False
        expect = self.headers.get("Expect", "")
        return not (
            expect.lower() == "100-continue"
            and self.protocol_version >= "HTTP/1.1"
            and self.request_version >= "HTTP/1.1"
            and not self.handle_expect_100()
        )

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._refuse(HttpReply(411, b"send the body with a Content-Length", [], "text/plain"))
            return
        length = content_length(self.headers)
        if length is None:
            self._refuse(HttpReply(400, b"invalid Content-Length", [], "text/plain"))
            return
        early = getattr(self.server.app, "before_body", None)
        if early is not None:
            reply = early(method, self.path, self.headers, length, self.state)
            if reply is not None:
                if length:
                    self._refuse(reply)
                else:
                    self._send(reply)
                return
        if length > self.server.max_body:
            self._refuse(HttpReply(413, b"request body too large", [], "text/plain"))
            return
        body = self.rfile.read(length) if length else b""
        try:
            reply = self.server.app(
                method, self.path, self.headers, body, self.state, self.client_address[0]
            )
        except DropConnection:
            self.close_connection = True
            reset(self.connection)
            return
        except Exception:
            log.exception("lab HTTP handler failed")
            reply = HttpReply(500, b"", [], "text/plain")
        self._send(reply)

    def _refuse(self, reply: HttpReply) -> None:
        """Answer without reading the body, then close: its bytes are still on the wire."""
        self.close_connection = True
        reply.headers = [*reply.headers, ("Connection", "close")]
        self._send(reply)

    def _send(self, reply: HttpReply) -> None:
        """What ``send_response``, ``send_header`` and ``end_headers`` write (the status line,
        Server, Date, the reply's headers, Content-Type unless a bare 401, Content-Length),
        built in one buffer and written with the body in one call."""
        if self.request_version == "HTTP/0.9":
            self._send_headers_one_by_one(reply)
            return
        status = reply.status
        if log.isEnabledFor(logging.DEBUG):
            self.log_request(status)
        known = self.responses.get(status)
        lines = [
            f"{self.protocol_version} {status} {known[0] if known else ''}\r\n"
            f"Server: {self.version_string()}\r\nDate: {_http_date()}\r\n"
        ]
        for name, value in reply.headers:
            lines.append(f"{name}: {value}\r\n")
            if name.lower() == "connection":
                if value.lower() == "close":
                    self.close_connection = True
                elif value.lower() == "keep-alive":
                    self.close_connection = False
        if reply.body or status != 401:
            lines.append(f"Content-Type: {reply.content_type}\r\n")
        lines.append(f"Content-Length: {len(reply.body)}\r\n\r\n")
        head = "".join(lines).encode("latin-1", "strict")
        self.wfile.write(head + reply.body if reply.body else head)
        self.wfile.flush()

    def _send_headers_one_by_one(self, reply: HttpReply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        if reply.body or reply.status != 401:
            self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if reply.body:
            self.wfile.write(reply.body)
        self.wfile.flush()


_date: tuple[int, str] = (0, "")


def _http_date() -> str:
    """``BaseHTTPRequestHandler.date_time_string()``, formatted once a second."""
    global _date
    now = int(time.time())
    second, text = _date
    if second != now:
        text = email.utils.formatdate(now, usegmt=True)
        _date = (now, text)
    return text
