"""WS-Management envelopes as pypsrp reads them, and raw requests pypsrp would not send."""

from __future__ import annotations

import base64
import random
import re
import secrets
import socket
import xml.etree.ElementTree as ET
from urllib.parse import urlsplit

import pytest
import requests
from pypsrp.exceptions import WSManFaultError
from pypsrp.powershell import RunspacePool
from pypsrp.shell import WinRS
from pypsrp.wsman import SelectorSet, WSMan

from lab.server import wsman
from lab.server.auth import Account
from lab.server.service import LabServer
from tests.lab.clients import run, wsman_for
from tests.lab.fake_backend import FakeBackend


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("PT20S", 20.0), ("PT60.000S", 60.0), ("PT1M30S", 90.0), ("PT2H", 7200.0), ("bogus", 5.0)],
)
def test_operation_timeout_durations(text: str, seconds: float) -> None:
    assert wsman.parse_duration(text, 5.0) == seconds


def test_timed_out_fault_is_what_pypsrp_polls_past() -> None:
    body = wsman.fault_envelope(wsman.timed_out(), "uuid:1", "hv-sto-1").decode()
    fault = WSMan._parse_wsman_fault(body)
    assert isinstance(fault, WSManFaultError)
    assert fault.code == 2150858793
    assert fault.machine == "hv-sto-1"
    assert "OperationTimeout" in (fault.reason or "")


def test_request_for_an_unknown_shell_is_a_fault(fake_server: LabServer) -> None:
    shell = WinRS(
        wsman_for(fake_server.endpoints["hv-sto-1"]),
        resource_uri="http://schemas.microsoft.com/powershell/Microsoft.PowerShell",
    )
    # Address a shell that was never created.
    selectors = SelectorSet()
    selectors.add_option("ShellId", "6A1B9B8C-0000-4000-8000-000000000001")
    shell._selector_set = selectors
    with pytest.raises(WSManFaultError) as caught:
        shell.receive("stdout")
    assert caught.value.code == int(wsman.FaultCode.INVALID_SELECTORS)


def test_cmd_shells_are_refused_with_a_fault(fake_server: LabServer) -> None:
    with pytest.raises(WSManFaultError) as caught:
        WinRS(wsman_for(fake_server.endpoints["hv-got-1"])).open()
    assert "PSRP" in (caught.value.reason or "")


def test_non_wsman_path_is_404(fake_server: LabServer) -> None:
    url = fake_server.endpoints["hv-sto-1"].url.replace("/wsman", "/other")
    response = requests.post(url, data=b"", timeout=5, proxies={"http": "", "https": ""})
    assert response.status_code == 404


def test_abandoned_shells_are_closed_after_the_idle_timeout(fake_server: LabServer) -> None:
    endpoint = fake_server.endpoints["hv-sto-1"]
    service = fake_server._hosts["hv-sto-1"].service
    abandoned = RunspacePool(wsman_for(endpoint))
    abandoned.open()
    service.idle_timeout = 0.0  # every shell not used this instant counts as idle
    with RunspacePool(wsman_for(endpoint)) as pool:
        assert len(service.shells) == 1
        service.idle_timeout = 7200.0
        assert run(pool, "Get-VM").output
    with pytest.raises(WSManFaultError) as caught:
        run(abandoned, "Get-VM")
    assert caught.value.code == int(wsman.FaultCode.INVALID_SELECTORS)


def _reference_receive(relates_to: str, reply: wsman.ReceiveChunk) -> bytes:
    """The Receive response built element by element with ElementTree."""
    import base64
    import xml.etree.ElementTree as ET

    resp = ET.Element(wsman._q("rsp", "ReceiveResponse"))
    attrs = {"Name": "stdout"}
    if reply.command_id:
        attrs["CommandId"] = reply.command_id
    for chunk in reply.chunks:
        stream = ET.SubElement(resp, wsman._q("rsp", "Stream"), attrs)
        stream.text = base64.b64encode(chunk).decode()
    if reply.command_id:
        state = wsman.COMMAND_DONE if reply.done else wsman.COMMAND_RUNNING
        attrs = {"CommandId": reply.command_id, "State": state}
        state_el = ET.SubElement(resp, wsman._q("rsp", "CommandState"), attrs)
        if reply.done:
            ET.SubElement(state_el, wsman._q("rsp", "ExitCode")).text = "0"
    return wsman.envelope(wsman.Action.RECEIVE.response, relates_to, [resp])


def _reference_empty(action: wsman.Action, relates_to: str) -> bytes:
    import xml.etree.ElementTree as ET

    names = {wsman.Action.SEND: "SendResponse", wsman.Action.SIGNAL: "SignalResponse"}
    children = [ET.Element(wsman._q("rsp", names[action]))] if action in names else []
    return wsman.envelope(action.response, relates_to, children)


def _without_message_id(envelope: bytes) -> bytes:
    import re

    return re.sub(rb"<wsa:MessageID>uuid:[0-9A-F-]{36}</wsa:MessageID>", b"<id/>", envelope)


@pytest.mark.parametrize("relates_to", ["uuid:1", "uuid:a&b<c>\"d'\n"])
@pytest.mark.parametrize("command_id", ["9C7F-AB", 'x"&<>\r\n\t', "", None])
def test_templated_replies_are_the_bytes_elementtree_writes(
    relates_to: str, command_id: str | None
) -> None:
    import xml.etree.ElementTree as ET

    for chunks in ([], [b"a"], [b"abc", b"\x00\xff" * 40]):
        for done in (True, False):
            reply = wsman.ReceiveChunk(list(chunks), command_id, done)
            fast = wsman.receive_response(relates_to, reply)
            assert _without_message_id(fast) == _without_message_id(
                _reference_receive(relates_to, reply)
            )
    for action in wsman.Action:
        fast = wsman.empty_response(action, relates_to)
        assert _without_message_id(fast) == _without_message_id(
            _reference_empty(action, relates_to)
        )
    if command_id is not None:
        resp = ET.Element(wsman._q("rsp", "CommandResponse"))
        ET.SubElement(resp, wsman._q("rsp", "CommandId")).text = command_id
        reference = wsman.envelope(wsman.Action.COMMAND.response, relates_to, [resp])
        fast = wsman.command_response(relates_to, command_id)
        assert _without_message_id(fast) == _without_message_id(reference)
        # and a parser reads the id back (XML turns a carriage return into a line feed)
        found = ET.fromstring(fast).find(".//rsp:CommandId", wsman.NS)
        assert found is not None
        assert (found.text or "") == command_id.replace("\r\n", "\n")


# --- limits WinRM enforces: MaxEnvelopeSize, credentials before the body, Content-Length ----


def raw_request(url: str, headers: dict[str, str], body: bytes = b"") -> tuple[bytes, bool]:
    """Send a request by hand; return the response and whether the server then closed.

    The body is sent only if given: a server that waited for a body it announced but never got
    would never answer, and the socket's timeout fails the test.
    """
    parts = urlsplit(url)
    head = [f"POST {parts.path} HTTP/1.1", f"Host: {parts.hostname}:{parts.port}"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as conn:
        conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        response = b""
        while b"\r\n\r\n" not in response:
            response += conn.recv(65536)
        head_text, _, rest = response.partition(b"\r\n\r\n")
        length = int(re.search(rb"Content-Length: (\d+)", head_text).group(1))  # type: ignore[union-attr]
        while len(rest) < length:
            rest += conn.recv(65536)
        try:
            closed = conn.recv(1) == b""
        except TimeoutError:
            closed = False
    return head_text + b"\r\n\r\n" + rest, closed


BASIC = "Basic " + base64.b64encode(b"ferryman:wrong").decode()


def test_an_unauthenticated_request_gets_401_before_its_body(fake_server: LabServer) -> None:
    url = fake_server.endpoints["hv-sto-1"].url
    # 200 MB announced, none sent: the 401 must come from the headers alone
    response, closed = raw_request(url, {"Content-Length": str(200 * 1024 * 1024)})
    assert response.startswith(b"HTTP/1.1 401")
    assert b"WWW-Authenticate" in response
    assert closed, "the unread body must not be taken for the next request"


@pytest.mark.parametrize("length", ["-1", "abc", "1e9", "99999999999999999999999"])
def test_an_invalid_content_length_is_refused_unread(fake_server: LabServer, length: str) -> None:
    url = fake_server.endpoints["hv-sto-1"].url
    response, closed = raw_request(url, {"Content-Length": length, "Authorization": BASIC})
    assert response.startswith(b"HTTP/1.1 400") and closed


def test_two_different_content_lengths_are_refused(fake_server: LabServer) -> None:
    url = fake_server.endpoints["hv-sto-1"].url
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as conn:
        conn.sendall(
            b"POST /wsman HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 50\r\n"
            b"Authorization: " + BASIC.encode() + b"\r\n\r\n"
        )
        assert conn.recv(65536).startswith(b"HTTP/1.1 400")


def test_an_envelope_over_max_envelope_size_gets_winrms_fault_unread(
    fake_server: LabServer,
) -> None:
    url = fake_server.endpoints["hv-sto-1"].url
    response, closed = raw_request(
        url, {"Content-Length": str(20 * 1024 * 1024), "Authorization": BASIC}
    )
    assert response.startswith(b"HTTP/1.1 413") and closed
    fault = WSMan._parse_wsman_fault(response.partition(b"\r\n\r\n")[2].decode())
    assert fault.code == int(wsman.FaultCode.REQUEST_TOO_LARGE) == 0x80338111
    assert "MaxEnvelopeSize" in (fault.reason or "")


def test_the_envelope_limit_is_500_kb_after_authentication() -> None:
    account = Account("ferryman", secrets.token_urlsafe(12))
    with LabServer(FakeBackend(), account, auth="basic") as server:
        url = server.endpoints["hv-sto-1"].url
        auth = (account.username, account.password)
        session = requests.Session()
        session.trust_env = False
        headers = {"Content-Type": "application/soap+xml;charset=UTF-8"}
        over = session.post(url, data=b"<" + b"x" * 520 * 1024, auth=auth, headers=headers)
        assert over.status_code == 413
        fault = WSMan._parse_wsman_fault(over.text)
        assert fault.code == int(wsman.FaultCode.REQUEST_TOO_LARGE)
        # under the limit the body is read and judged as SOAP (here: not XML at all)
        under = session.post(url, data=b"<" + b"x" * 400 * 1024, auth=auth, headers=headers)
        assert under.status_code == 500
        assert "InvalidXml" in under.text


def _parse_with_find(data: bytes) -> tuple[object, ...]:
    """The request's fields read with ElementTree paths (how the lab read them before)."""
    root = ET.fromstring(data)
    header = root.find("s:Header", wsman.NS)
    assert header is not None

    def text(path: str) -> str:
        el = header.find(path, wsman.NS)
        return (el.text or "").strip() if el is not None else ""

    selectors = {
        sel.attrib.get("Name", ""): (sel.text or "")
        for sel in header.findall("wsman:SelectorSet/wsman:Selector", wsman.NS)
    }
    return (
        text("wsa:Action"),
        text("wsa:MessageID"),
        text("wsman:ResourceURI"),
        text("wsman:MaxEnvelopeSize"),
        text("wsman:OperationTimeout"),
        selectors,
    )


_HEADER_PARTS = [
    '<wsa:Action s:mustUnderstand="true"> http://x/Command </wsa:Action>',
    "<wsa:Action>http://x/Second</wsa:Action>",
    "<wsa:MessageID>uuid:A</wsa:MessageID>",
    "<wsman:ResourceURI>http://schemas.microsoft.com/powershell/Microsoft.PowerShell"
    "</wsman:ResourceURI>",
    "<wsman:MaxEnvelopeSize>512000</wsman:MaxEnvelopeSize>",
    "<wsman:OperationTimeout>PT20S</wsman:OperationTimeout>",
    '<wsman:SelectorSet><wsman:Selector Name="ShellId">s-1</wsman:Selector>'
    '<wsman:Selector Name="Other">o</wsman:Selector><x:Selector xmlns:x="urn:x" Name="N">n'
    "</x:Selector></wsman:SelectorSet>",
    '<wsman:SelectorSet><wsman:Selector Name="ShellId">s-2</wsman:Selector></wsman:SelectorSet>',
    '<wsman:Selector Name="Stray">z</wsman:Selector>',
    "<wsa:MessageID />",
    "<other:Action xmlns:other='urn:other'>not this one</other:Action>",
]


@pytest.mark.parametrize("seed", range(40))
def test_header_fields_are_read_as_element_paths_read_them(seed: int) -> None:
    rng = random.Random(seed)
    parts = rng.sample(_HEADER_PARTS, rng.randint(0, len(_HEADER_PARTS)))
    envelope = (
        f'<s:Envelope xmlns:s="{wsman.NS["s"]}" xmlns:wsa="{wsman.NS["wsa"]}" '
        f'xmlns:wsman="{wsman.NS["wsman"]}"><s:Header>{"".join(parts)}</s:Header>'
        "<s:Body /></s:Envelope>"
    ).encode()
    action, message_id, uri, max_env, timeout, selectors = _parse_with_find(envelope)
    request = wsman.parse_request(envelope)
    assert (request.action, request.message_id, request.resource_uri) == (action, message_id, uri)
    assert request.max_envelope_size == int(str(max_env) or 153600)
    assert request.operation_timeout == wsman.parse_duration(str(timeout), 60.0)
    assert request.selectors == selectors
