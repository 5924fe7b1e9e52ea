"""The lean transport sends what requests sends and fails as requests fails."""

from __future__ import annotations

import dataclasses
import re
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from pypsrp.exceptions import AuthenticationError, WinRMTransportError

from plans.errors import FerrymanError
from workers.hyperv import faults, transport
from workers.hyperv.connection import AuthMethod
from workers.hyperv.pool import RunspacePoolCache
from workers.hyperv.psrp import PsrpRunner

from .lab_double import Site, serve_site


@pytest.fixture(params=["basic", "ntlm"])
def site(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    yield from serve_site(request.param, monkeypatch)


def _record_sends(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    sent: list[bytes] = []
    for cls in (socket.socket, ssl.SSLSocket):
        original = cls.sendall

        def recording(self: Any, data: Any, *args: Any, _original: Any = original) -> Any:
            sent.append(bytes(data))
            return _original(self, data, *args)

        monkeypatch.setattr(cls, "sendall", recording)
    return sent


def _header(lines: list[bytes], name: bytes) -> bytes | None:
    for line in lines:
        key, _, value = line.partition(b": ")
        if key.lower() == name:
            return value
    return None


@pytest.fixture(params=["basic", "ntlm", "https", "https-ntlm"])
def wire_site(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    mode = str(request.param)
    for site in serve_site(mode.removesuffix("-ntlm"), monkeypatch):
        endpoint = site.endpoint()
        if mode == "https-ntlm":  # Negotiate over TLS: no sealing, the channel bound to the cert
            endpoint = dataclasses.replace(endpoint, auth=AuthMethod.NTLM)
        yield PsrpRunner(endpoint, cache=site.cache)


@pytest.mark.integration
def test_messages_after_the_first_go_out_as_the_bytes_requests_sends(
    wire_site: PsrpRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = _record_sends(monkeypatch)
    for _ in range(3):
        assert wire_site.run("Get-VM", {"Name": "sql-01"}).output[0]["Name"] == "sql-01"
    heads: list[list[bytes]] = []
    lean = 0
    for data in sent:
        if not data.startswith(b"POST "):
            continue  # a body requests sent after its head
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        if body:  # head and body in one write: the lean path
            lean += 1
            assert _header(lines, b"content-length") == str(len(body)).encode()
        authorization = _header(lines, b"authorization") or b""
        if authorization.lower().startswith((b"negotiate", b"ntlm")):
            continue  # the NTLM handshake, done by pypsrp and requests
        if _header(lines, b"content-length") == b"0":
            continue  # pypsrp's empty request that opens NTLM
        heads.append([re.sub(rb"^(Content-Length: )\d+$", rb"\1N", x) for x in lines])
    assert lean >= 6  # the second and third calls' Command, Receive and Signal at least
    assert len(heads) > lean  # and the session's first messages went through requests
    assert all(head == heads[0] for head in heads)  # same request line and headers, in order


def _outcome(
    site: Site, cache: RunspacePoolCache, hurt: Callable[[], None], heal: Callable[[], None]
) -> Any:
    runner = site.runner(cache=cache)
    runner.run("Get-VM", {"Name": "sql-01"})
    hurt()
    try:
        runner.run("Get-VM", {"Name": "sql-01"})
        error: Any = None
    except FerrymanError as exc:
        error = (type(exc).__name__, re.sub(r":\d+/", ":PORT/", str(exc)))
    heal()
    assert runner.run("Get-VM", {"Name": "sql-01"}).output[0]["Name"] == "sql-01"
    return error, cache.opened["hv-got-1"]


@pytest.mark.integration
@pytest.mark.parametrize("fault", ["http500", "reset", "restart", "down"])
def test_a_fault_on_the_lean_path_ends_as_it_does_through_requests(
    site: Site, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    def hurt() -> None:
        if fault == "restart":
            site.bounce("hv-got-1")  # the kept connection is reset, the shell forgotten
        elif fault == "down":
            site.backend.down.add("hv-got-1")
            site.server.sync_hosts()
        else:
            site.backend.faults["hv-got-1"] = [fault]

    def heal() -> None:
        site.backend.down.clear()
        site.server.sync_hosts()

    lean_cache = RunspacePoolCache()
    try:
        lean = _outcome(site, lean_cache, hurt, heal)
        kept = [e.wsman.transport for e in lean_cache._slots[site.endpoint()].idle]
        assert kept and all(isinstance(t, transport.LeanTransport) for t in kept)
        assert all(getattr(t, "_connection", None) is not None for t in kept)  # on the lean path
    finally:
        lean_cache.close()
    monkeypatch.setattr(transport, "lean", lambda wsman: wsman)  # pypsrp's transport as is
    plain_cache = RunspacePoolCache()
    try:
        plain = _outcome(site, plain_cache, hurt, heal)
    finally:
        plain_cache.close()
    assert lean == plain
    if fault in ("http500", "reset"):
        assert lean[0] is not None and lean[0][0] == "OutcomeUnknown"


# --- one exchange against a scripted server --------------------------------------------------


def _exchange(reply: bytes, *, close_after: bool = True, timeout: float = 2.0) -> Any:
    """Send a request over a socket pair whose other end answers ``reply`` and closes."""
    ours, theirs = socket.socketpair()

    def serve() -> None:
        theirs.recv(65536)
        if reply:
            theirs.sendall(reply)
        if close_after:
            theirs.close()

    server = threading.Thread(target=serve)
    server.start()
    try:
        return transport._round_trip(ours, b"POST / HTTP/1.1\r\n\r\n", timeout, "http://h/wsman")
    finally:
        server.join()
        ours.close()
        if not close_after:
            theirs.close()


def test_replies_are_read_by_length_by_chunks_or_to_the_close() -> None:
    by_length = _exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", close_after=False)
    assert (by_length.status, by_length.body, by_length.close) == (200, b"hello", False)
    chunked = _exchange(
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 500 Err\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nTrailer: t\r\n\r\n"
    )
    assert (chunked.status, chunked.body, chunked.close) == (500, b"abcde", True)
    to_close = _exchange(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it")
    assert (to_close.body, to_close.close) == (b"all of it", True)
    extra = _exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA")
    assert (extra.body, extra.close) == (b"ok", True)  # bytes nobody asked for


def test_a_reply_that_never_comes_or_breaks_is_raised_as_requests_raises_it() -> None:
    with pytest.raises(requests.ConnectionError) as closed:
        _exchange(b"")
    assert faults.answer_lost(closed.value)  # the request went out: its outcome is unknown
    with pytest.raises(requests.ReadTimeout) as late:
        _exchange(b"", close_after=False, timeout=0.2)
    assert faults.answer_lost(late.value)
    with pytest.raises(requests.ConnectionError):
        _exchange(b"garbage\r\n\r\n")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        _exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")


def _content(status: int, body: bytes, content_type: str) -> bytes:
    lean = transport.LeanTransport("h", ssl=False, auth="basic", username="u", password="p",
                                   encryption="never")  # fmt: skip
    headers = {"content-type": content_type} if content_type else {}
    return lean._content(transport._Reply(status, headers, body, False))


def test_statuses_are_pypsrps_errors_with_the_text_requests_would_decode() -> None:
    assert _content(200, b"<s:Envelope/>", "application/soap+xml;charset=UTF-8") == (
        b"<s:Envelope/>"
    )
    with pytest.raises(AuthenticationError):
        _content(401, b"", "")
    with pytest.raises(WinRMTransportError) as error:
        _content(500, "fault \u00e9".encode(), "application/soap+xml;charset=UTF-8")
    assert (error.value.code, error.value.response_text) == (500, "fault \u00e9")
    with pytest.raises(WinRMTransportError) as latin:
        _content(400, "\u00e9".encode("latin-1"), "text/plain")
    assert (latin.value.code, latin.value.response_text) == (400, "\u00e9")


def test_the_host_header_is_the_one_http_client_writes() -> None:
    assert transport._host_header("hv-1.example.", 5985, "http") == b"hv-1.example:5985"
    assert transport._host_header("hv-1", 443, "https") == b"hv-1"
    assert transport._host_header("fe80::1%eth0", 5986, "https") == b"[fe80::1]:5986"


def test_a_read_timeout_on_the_kept_connection_is_retried_as_pypsrp_retries_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lean = transport.LeanTransport("h", ssl=False, auth="ntlm", username="u", password="p")
    lean.reconnection_backoff = 0.0
    lean.encryption = object()  # type: ignore[assignment]  # a context set up earlier
    through_requests: list[int] = []

    def late(connection: Any, message: bytes, timeout: Any) -> bytes:
        raise requests.ReadTimeout("read timed out")

    def pypsrps_send(
        self: Any, message: bytes, *, retries_on_read_timeout: int, timeout: Any
    ) -> bytes:
        through_requests.append(retries_on_read_timeout)
        assert self.encryption is None  # a new security context, as pypsrp starts over
        return b"answer"

    monkeypatch.setattr(lean, "_ready", lambda: object())
    monkeypatch.setattr(lean, "_exchange", late)
    monkeypatch.setattr(transport._TransportHTTP, "send", pypsrps_send)
    assert lean.send(b"<Receive/>", retries_on_read_timeout=5) == b"answer"
    assert through_requests == [4]  # the attempts left after the one that timed out
    with pytest.raises(requests.ReadTimeout):
        lean.send(b"<Command/>")  # no retries allowed: raised, as pypsrp raises it
