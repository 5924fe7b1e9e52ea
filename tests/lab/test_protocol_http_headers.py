"""The lab's HTTP header reading gives the fields ``http.client.parse_headers`` gives."""

from __future__ import annotations

import http.client
import io
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lab.server.http import _Handler, read_headers
from lab.server.http_types import HttpReply

TYPICAL = (
    b"Host: 127.0.0.1:41234\r\n"
    b"User-Agent: Python PSRP Client\r\n"
    b"Accept-Encoding: gzip, deflate\r\n"
    b"Accept: */*\r\n"
    b"Connection: Keep-Alive\r\n"
    b'Content-Type: multipart/encrypted;protocol="application/HTTP-SPNEGO-session-encrypted";'
    b'boundary="Encrypted Boundary"\r\n'
    b"Content-Length: 3456\r\n"
    b"Authorization: Negotiate TlRMTVNTUAABAAAAl4II4gAAAAAAAAAAAAAAAAAAAAAKAGFKAAAADw==\r\n"
    b"\r\n"
)


def _fields(message: http.client.HTTPMessage) -> list[tuple[str, str]]:
    return [(name, str(value)) for name, value in message.items()]


def _both(block: bytes) -> tuple[object, object]:
    def outcome(read: object) -> object:
        fp = io.BytesIO(block + b"BODY")
        try:
            message = read(fp)  # type: ignore[operator]
        except http.client.HTTPException as exc:
            return type(exc), str(exc)
        names = {name.lower() for name, _ in message.items()}
        return (
            _fields(message),
            {name: message.get_all(name) for name in names},
            message.get("content-length"),
            fp.read(),  # the body is left unread
        )

    return outcome(read_headers), outcome(http.client.parse_headers)


def test_a_winrm_request_reads_as_the_email_parser_reads_it() -> None:
    ours, reference = _both(TYPICAL)
    assert ours == reference
    assert ours[0][4] == ("Connection", "Keep-Alive")  # type: ignore[index]


@pytest.mark.parametrize(
    "block",
    [
        b"Host: a\r\n X-Folded: continued\r\n\r\n",  # a folded line
        b"Host: a\r\nX-Bare: one\rX-Two: two\r\n\r\n",  # a bare CR splits the line
        b"Host: a\r\nno colon here\r\nX-After: b\r\n\r\n",  # the body starts early
        b"From nobody\r\nHost: a\r\n\r\n",  # an mbox envelope line
        b": empty name\r\nHost: a\r\n\r\n",
        b"Host: a\nX-Lf-Only: b\n\n",
        b"Host: caf\xe9\r\nX-Nel: a\x85b\r\n\r\n",  # latin-1, and NEL
        b"Content-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"Host:    spaced   \r\nEmpty:\r\nTabs:\t\tx\t\r\n\r\n",
        b"X-Long: " + b"a" * 70000 + b"\r\n\r\n",  # over http.client's line limit
        b"".join(b"X-%d: v\r\n" % i for i in range(120)) + b"\r\n",  # too many headers
        b"Host: a\r\n",  # the connection ended before the blank line
    ],
)
def test_unusual_header_blocks_read_alike(block: bytes) -> None:
    ours, reference = _both(block)
    assert ours == reference


_LINE = st.one_of(
    st.builds(
        lambda name, sep, value: name + b":" + sep + value + b"\r\n",
        st.binary(min_size=1, max_size=8).filter(lambda b: b":" not in b and b"\n" not in b),
        st.sampled_from([b"", b" ", b"\t", b"  "]),
        st.binary(max_size=12).filter(lambda b: b"\n" not in b),
    ),
    st.sampled_from(
        [b"Host: x\r\n", b" folded\r\n", b"\tfolded\r\n", b"Content-Type: text/plain\r\n"]
    ),
    st.binary(max_size=10).filter(lambda b: b"\n" not in b).map(lambda b: b + b"\r\n"),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_LINE, max_size=6))
def test_any_header_block_reads_alike(lines: list[bytes]) -> None:
    ours, reference = _both(b"".join(lines) + b"\r\n")
    assert ours == reference


def _handler(version: str = "HTTP/1.1") -> Any:
    handler = object.__new__(_Handler)
    handler.request_version = version
    handler.requestline = "POST /wsman HTTP/1.1"
    handler.client_address = ("127.0.0.1", 5985)
    handler.command = "POST"
    handler.close_connection = False
    handler.wfile = io.BytesIO()
    return handler


@pytest.mark.parametrize(
    "reply",
    [
        HttpReply(200, b"<s:Envelope/>", [("WWW-Authenticate", "Negotiate abc")]),
        HttpReply(401, b"", [("WWW-Authenticate", "Negotiate"), ("WWW-Authenticate", "Basic")]),
        HttpReply(500, b"", []),
        HttpReply(413, b"too big", [("Connection", "close")], "text/plain"),
        HttpReply(299, b"x", [("Connection", "keep-alive")], "text/plain"),
    ],
)
def test_a_reply_is_written_as_http_server_writes_it(reply: HttpReply) -> None:
    for _ in range(3):  # the Date header can change between the two writes
        ours, reference = _handler(), _handler()
        reference.close_connection = ours.close_connection = reply.status == 299
        ours._send(reply)
        reference._send_headers_one_by_one(reply)
        if ours.wfile.getvalue() == reference.wfile.getvalue():
            break
    assert ours.wfile.getvalue() == reference.wfile.getvalue()
    assert ours.close_connection == reference.close_connection
    assert ours.wfile.getvalue().startswith(f"HTTP/1.1 {reply.status} ".encode())
