"""A small threaded HTTP/1.1 server for the lab: keep-alive, Content-Length on every reply.

WinRM clients keep one TCP connection per session and NTLM binds to it, so every reply —
401s included — carries Content-Length and the connection stays open. An application can
ask for the connection to be dropped without an answer (an injected "reset").
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lab.server.http_types import HttpReply

log = logging.getLogger(__name__)


class DropConnection(Exception):
    """Close the TCP connection at once (with a reset) instead of answering."""


App = Callable[[str, str, Any, bytes, dict[str, Any], str], HttpReply]
"""``app(method, path, headers, body, connection_state, client_ip) -> HttpReply``."""


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
    ) -> None:
        self.app = app
        self.ssl_context = ssl_context
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        super().__init__((host, port), _Handler)

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
        thread = threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name=f"lab-http-{self.port}",
        )
        thread.start()
        return thread

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
        length = int(self.headers.get("Content-Length") or 0)
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
