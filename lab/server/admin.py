"""The lab's admin API: JSON over HTTP on loopback, answered by the domain's ``admin`` call.

``GET|POST|PUT|DELETE /<path>`` with an optional JSON body becomes
``backend.admin(method, "/<path>", body)``; the reply is the returned status and JSON.
After every call the lab server re-reads which hosts are up, so a host taken down through
the API refuses connections by the time the reply arrives.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from lab.server.backend import LabBackend
from lab.server.http import LabHTTPServer
from lab.server.http_types import HttpReply

log = logging.getLogger(__name__)

JSON = "application/json"


class AdminAPI:
    """The admin HTTP application (see module docstring)."""

    def __init__(self, backend: LabBackend, after_call: Callable[[], None] | None = None) -> None:
        self.backend = backend
        self._after_call = after_call

    def __call__(
        self,
        method: str,
        path: str,
        headers: Any,
        body: bytes,
        state: dict[str, Any],
        client_ip: str,
    ) -> HttpReply:
        try:
            payload = json.loads(body) if body.strip() else None
        except ValueError as exc:
            return _json(400, {"error": f"the request body is not JSON: {exc}"})
        url = urlsplit(path)
        target = url.path + (f"?{url.query}" if url.query else "")
        try:
            status, answer = self.backend.admin(method, target, payload)
        except Exception as exc:
            log.exception("admin call %s %s failed", method, target)
            return _json(500, {"error": f"the lab failed to answer {method} {target}: {exc}"})
        finally:
            if self._after_call is not None:
                self._after_call()
        return _json(status, answer)


def _json(status: int, value: Any) -> HttpReply:
    return HttpReply(status, json.dumps(value, default=str).encode(), [], JSON)


def admin_server(api: AdminAPI, port: int = 0, host: str = "127.0.0.1") -> LabHTTPServer:
    """An HTTP server for ``api`` on ``host`` (loopback by default; not started)."""
    return LabHTTPServer(port, api, host=host)
