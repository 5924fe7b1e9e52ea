"""One lab host's WinRM endpoint: its HTTP listener, authentication and WinRM shells.

A host that is down in the domain has no listener, so clients get "connection refused" as
from a powered-off server; its open connections are reset when it goes down.
"""

from __future__ import annotations

import base64
import logging
import ssl
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lab.objects import Command, InvokeResult, TransportFault
from lab.server import wsman
from lab.server.auth import Authenticator, AuthFailed, ConnectionAuth
from lab.server.backend import HostSpec, LabBackend
from lab.server.http import DropConnection, LabHTTPServer
from lab.server.http_types import HttpReply
from lab.server.psrp import Invoker, PipelineThreads, Shell, ShellClosed
from lab.server.wsman import NS, Action, Request, WSManFault

log = logging.getLogger(__name__)

PSRP_RESOURCE_PREFIX = "http://schemas.microsoft.com/powershell/"
IDLE_TIMEOUT = 7200.0  # seconds, WinRM's default shell IdleTimeOut
MAX_ENVELOPE_SIZE = 500 * 1024  # bytes; WinRM's default MaxEnvelopeSizekb is 500
# NTLM message encryption wraps an envelope in a multipart body with a signature and headers;
# the HTTP body may exceed the envelope inside it by this much.
ENCRYPTION_OVERHEAD = 4096

# Child elements by their expanded names: ``find`` and ``findall`` then scan the children in
# C instead of compiling a prefixed path with the namespace map on every call.
_RSP_SHELL = f"{{{NS['rsp']}}}Shell"
_RSP_COMMAND_LINE = f"{{{NS['rsp']}}}CommandLine"
_RSP_ARGUMENTS = f"{{{NS['rsp']}}}Arguments"
_RSP_SEND = f"{{{NS['rsp']}}}Send"
_RSP_STREAM = f"{{{NS['rsp']}}}Stream"
_RSP_RECEIVE = f"{{{NS['rsp']}}}Receive"
_RSP_DESIRED_STREAM = f"{{{NS['rsp']}}}DesiredStream"
_RSP_SIGNAL = f"{{{NS['rsp']}}}Signal"
_RSP_CODE = f"{{{NS['rsp']}}}Code"
_RSP_INPUT_STREAMS = f"{{{NS['rsp']}}}InputStreams"
_RSP_OUTPUT_STREAMS = f"{{{NS['rsp']}}}OutputStreams"
_CREATION_XML = f"{{{NS['pwsh']}}}creationXml"


@dataclass
class EndpointStats:
    """Counters the tests read (and a bench could)."""

    requests: int = 0
    timed_out_receives: int = 0
    largest_reply: int = 0  # bytes of the largest SOAP reply, before encryption


class HostService:
    """The WS-Management service of one host: shells and their pipelines."""

    def __init__(self, spec: HostSpec, backend: LabBackend, authenticator: Authenticator) -> None:
        self.spec = spec
        self.backend = backend
        self.auth = authenticator
        self.address = ""
        self.shells: dict[str, Shell] = {}
        self._lock = threading.Lock()
        self.stats = EndpointStats()
        self.idle_timeout = IDLE_TIMEOUT
        self.max_envelope_size = MAX_ENVELOPE_SIZE
        self.pipeline_threads = PipelineThreads(f"lab-pipeline-{spec.host}")

    # -- HTTP entry point --------------------------------------------------------------------

    def before_body(
        self, method: str, path: str, headers: Any, length: int, state: dict[str, Any]
    ) -> HttpReply | None:
        """Answer what the headers already settle, without reading the body.

        A request on a connection that has not authenticated and carries no credentials gets
        its 401 at once (WinRM answers before reading, so an anonymous client cannot make it
        buffer megabytes); a body larger than MaxEnvelopeSize (plus encryption framing) gets
        WinRM's 413 fault.
        """
        if method != "POST" or path.rstrip("/").lower() != "/wsman":
            return None
        conn = state.setdefault("auth", ConnectionAuth())
        if not conn.authenticated and not headers.get("Authorization"):
            return HttpReply(401, b"", self.auth.challenge_headers())
        if length > self.max_envelope_size + ENCRYPTION_OVERHEAD:
            return self._too_large()
        return None

    def _too_large(self) -> HttpReply:
        fault = wsman.envelope_too_large(self.max_envelope_size)
        return HttpReply(413, wsman.fault_envelope(fault, "", self.spec.host))

    def __call__(
        self,
        method: str,
        path: str,
        headers: Any,
        body: bytes,
        state: dict[str, Any],
        client_ip: str,
    ) -> HttpReply:
        if method != "POST" or path.rstrip("/").lower() != "/wsman":
            return HttpReply(404, b"", [], "text/plain")
        conn = state.setdefault("auth", ConnectionAuth())
        try:
            accepted = self.auth.accept(conn, headers, body)
        except AuthFailed as failed:
            return failed.reply
        final_headers = conn.extra.pop("final_headers", [])
        if accepted.handshake_only:
            return HttpReply(200, b"", final_headers)
        if len(accepted.body) > self.max_envelope_size:
            return self._too_large()
        try:
            status, soap = self.handle_soap(accepted.body, client_ip, conn.user)
        except TransportFault as fault:
            if fault.kind == "reset":
                raise DropConnection() from fault
            status, soap = 500, b""
        if conn.encrypted and soap:
            content_type, payload = self.auth.wrap(conn, soap)
            return HttpReply(status, payload, final_headers, content_type)
        return HttpReply(status, soap, final_headers)

    def handle_soap(self, body: bytes, client_ip: str, user: str = "") -> tuple[int, bytes]:
        """Answer one SOAP request; returns (HTTP status, envelope)."""
        with self._lock:
            self.stats.requests += 1
        relates_to = ""
        try:
            request = wsman.parse_request(body)
            relates_to = request.message_id
            reply = self._dispatch(request, client_ip, user)
            status = 200
        except WSManFault as fault:
            if fault.code is wsman.FaultCode.TIMED_OUT:
                with self._lock:
                    self.stats.timed_out_receives += 1
            reply = wsman.fault_envelope(fault, relates_to, self.spec.host)
            status = 500
        with self._lock:
            self.stats.largest_reply = max(self.stats.largest_reply, len(reply))
        return status, reply

    # -- actions -----------------------------------------------------------------------------

    def _dispatch(self, req: Request, client_ip: str, user: str) -> bytes:
        if req.action == Action.CREATE.value:
            return self._create(req, client_ip, user)
        shell = self._shell(req)
        if req.action == Action.COMMAND.value:
            return self._command(req, shell)
        if req.action == Action.SEND.value:
            return self._send(req, shell)
        if req.action == Action.RECEIVE.value:
            return self._receive(req, shell)
        if req.action == Action.SIGNAL.value:
            return self._signal(req, shell)
        if req.action == Action.DELETE.value:
            with self._lock:
                self.shells.pop(shell.shell_id, None)
            shell.close()
            return wsman.empty_response(Action.DELETE, req.message_id)
        raise WSManFault(
            wsman.FaultCode.ACTION_NOT_SUPPORTED,
            "a:ActionNotSupported",
            f"The action {req.action} is not supported by the lab.",
        )

    def _shell(self, req: Request) -> Shell:
        with self._lock:
            shell = self.shells.get(req.shell_id)
        if shell is None:
            raise wsman.shell_not_found(req.shell_id)
        shell.touch()
        return shell

    def _reap_idle(self) -> None:
        """Close shells a client abandoned (no request for ``idle_timeout`` seconds)."""
        now = time.monotonic()
        with self._lock:
            idle = [s for s in self.shells.values() if now - s.last_used > self.idle_timeout]
            for shell in idle:
                del self.shells[shell.shell_id]
        for shell in idle:
            log.info("closing shell %s on %s: idle", shell.shell_id, self.spec.host)
            shell.close()

    def _create(self, req: Request, client_ip: str, user: str) -> bytes:
        self._reap_idle()
        if not req.resource_uri.startswith(PSRP_RESOURCE_PREFIX):
            raise WSManFault(
                wsman.FaultCode.ACTION_NOT_SUPPORTED,
                "w:InvalidResourceURI",
                "The lab serves PowerShell remoting (PSRP) shells only; cmd shells are not "
                "simulated.",
            )
        shell_el = req.body.find(_RSP_SHELL)
        if shell_el is None:
            raise WSManFault(
                wsman.FaultCode.INVALID_PARAMETER, "w:SchemaValidationError", "no Shell"
            )
        shell_id = (shell_el.attrib.get("ShellId") or str(uuid.uuid4())).upper()
        creation = shell_el.find(_CREATION_XML)
        shell = Shell(
            shell_id, self._invoker_for(user), req.payload_budget(), self.pipeline_threads
        )
        if creation is not None and creation.text:
            shell.open(base64.b64decode(creation.text))
        with self._lock:
            self.shells[shell_id] = shell
        return wsman.create_response(
            req.message_id,
            address=self.address,
            resource_uri=req.resource_uri,
            shell_id=shell_id,
            owner=self.auth.account.username,
            client_ip=client_ip,
            input_streams=_text(shell_el, _RSP_INPUT_STREAMS) or "stdin pr",
            output_streams=_text(shell_el, _RSP_OUTPUT_STREAMS) or "stdout",
        )

    def _invoker_for(self, user: str) -> Invoker:
        def invoke(commands: Sequence[Command]) -> InvokeResult:
            return self.backend.invoke(self.spec.host, commands, user=user)

        return invoke

    def _command(self, req: Request, shell: Shell) -> bytes:
        line = req.body.find(_RSP_COMMAND_LINE)
        if line is None:
            raise WSManFault(
                wsman.FaultCode.INVALID_PARAMETER, "w:SchemaValidationError", "no CommandLine"
            )
        command_id = line.attrib.get("CommandId", "")
        data = b"".join(base64.b64decode(a.text or "") for a in line.findall(_RSP_ARGUMENTS))
        try:
            run = shell.command(command_id, data)
        except ShellClosed:
            raise wsman.shell_not_found(req.shell_id) from None
        # Most cmdlets finish at once; waiting briefly lets an injected transport fault hit
        # this very request, as it would on a real host.
        run.done.wait(timeout=min(0.5, req.operation_timeout))
        fault = shell.take_fault(run)
        if fault is not None:
            raise fault
        return wsman.command_response(req.message_id, run.command_id)

    def _send(self, req: Request, shell: Shell) -> bytes:
        send = req.body.find(_RSP_SEND)
        streams = send.findall(_RSP_STREAM) if send is not None else []
        try:
            for stream in streams:
                shell.send(stream.attrib.get("CommandId"), base64.b64decode(stream.text or ""))
        except ShellClosed:
            raise wsman.shell_not_found(req.shell_id) from None
        return wsman.empty_response(Action.SEND, req.message_id)

    def _receive(self, req: Request, shell: Shell) -> bytes:
        # ``find("rsp:Receive/rsp:DesiredStream")``: the first under any Receive
        desired = next(
            (
                found
                for receive in req.body
                if receive.tag == _RSP_RECEIVE
                and (found := receive.find(_RSP_DESIRED_STREAM)) is not None
            ),
            None,
        )
        command_id = desired.attrib.get("CommandId") if desired is not None else None
        try:
            reply = shell.receive(command_id, req.payload_budget(), req.operation_timeout)
        except ShellClosed:
            raise wsman.shell_not_found(req.shell_id) from None
        if reply is None:
            raise wsman.timed_out()
        return wsman.receive_response(req.message_id, reply)

    def _signal(self, req: Request, shell: Shell) -> bytes:
        signal = req.body.find(_RSP_SIGNAL)
        if signal is None:
            raise WSManFault(
                wsman.FaultCode.INVALID_PARAMETER, "w:SchemaValidationError", "no Signal"
            )
        code = _text(signal, _RSP_CODE)
        command_id = signal.attrib.get("CommandId", "")
        if command_id:
            shell.signal(command_id, terminate=code.lower() == wsman.SIGNAL_TERMINATE.lower())
        return wsman.empty_response(Action.SIGNAL, req.message_id)

    def close_all(self) -> None:
        """Close every shell (the host went down or the lab stops)."""
        with self._lock:
            shells = list(self.shells.values())
            self.shells.clear()
        for shell in shells:
            shell.close()
        self.pipeline_threads.stop()


def _text(parent: ET.Element, tag: str) -> str:
    el = parent.find(tag)
    return (el.text or "").strip() if el is not None else ""


class HostEndpoint:
    """The listener of one host; it exists only while the host is up."""

    def __init__(
        self,
        spec: HostSpec,
        backend: LabBackend,
        authenticator: Authenticator,
        ssl_context: ssl.SSLContext | None = None,
        port: int = 0,
    ) -> None:
        self.spec = spec
        self.service = HostService(spec, backend, authenticator)
        self.ssl_context = ssl_context
        self.port = port
        self.listen = "127.0.0.1"  # the address to bind (LabServer sets it)
        self.advertise = "127.0.0.1"  # the host name clients use in the URL
        self._server: LabHTTPServer | None = None
        self._lock = threading.Lock()

    @property
    def scheme(self) -> str:
        """``https`` or ``http``."""
        return "https" if self.ssl_context is not None else "http"

    @property
    def url(self) -> str:
        """The WinRM URL, e.g. ``http://127.0.0.1:41234/wsman``."""
        return f"{self.scheme}://{self.advertise}:{self.port}/wsman"

    @property
    def listening(self) -> bool:
        """True while the host accepts connections."""
        return self._server is not None

    def up(self) -> None:
        """Start listening (on the same port as before, once one was chosen)."""
        with self._lock:
            if self._server is not None:
                return
            server = LabHTTPServer(
                self.port,
                self.service,
                self.ssl_context,
                host=self.listen,
                max_body=self.service.max_envelope_size + ENCRYPTION_OVERHEAD,
            )
            self.port = server.port
            self.service.address = self.url
            server.start()
            self._server = server

    def down(self) -> None:
        """Stop listening, reset open connections and forget the host's shells."""
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.stop()
        self.service.close_all()
