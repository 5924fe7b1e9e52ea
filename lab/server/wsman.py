"""WS-Management SOAP envelopes: parse a request, build responses and faults.

Only what the WinRM shell plugin (MS-WSMV) speaks for PSRP is implemented: Create, Command,
Send, Receive, Signal and Delete. Every response carries ``wsa:RelatesTo`` (pypsrp rejects a
reply without it) and the Create response carries the ``ShellId`` selector pypsrp reads back.
"""

from __future__ import annotations

import base64
import re
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from enum import Enum, StrEnum

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "wsa": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "wsman": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "wsmanfault": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "wst": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "pwsh": "http://schemas.microsoft.com/powershell",
    "xml": "http://www.w3.org/XML/1998/namespace",
}
for _prefix, _uri in NS.items():
    if _prefix != "xml":
        ET.register_namespace(_prefix, _uri)

ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
COMMAND_DONE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done"
COMMAND_RUNNING = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Running"
SIGNAL_TERMINATE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/Terminate"

# Room for the SOAP header and the Receive body around the payload, in bytes.
ENVELOPE_OVERHEAD = 2048


class Action(StrEnum):
    """The WS-Management actions the lab answers."""

    CREATE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create"
    DELETE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete"
    COMMAND = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command"
    SEND = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Send"
    RECEIVE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive"
    SIGNAL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal"

    @property
    def response(self) -> str:
        """The action URI of this action's response."""
        return self.value + "Response"


class FaultCode(int, Enum):
    """WSManFault codes (HRESULTs) the lab sends, as real WinRM does."""

    TIMED_OUT = 2150858793  # ERROR_WSMAN_OPERATION_TIMEDOUT, pypsrp polls again
    INVALID_SELECTORS = 2150858843  # unknown ShellId
    ACTION_NOT_SUPPORTED = 2150858774
    INVALID_PARAMETER = 87
    INTERNAL = 2150858752
    # ERROR_WSMAN_HTTP_REQUEST_TOO_LARGE_STATUS: what a WinRM client reports for HTTP 413,
    # "the request size exceeded the configured MaxEnvelopeSize quota"
    REQUEST_TOO_LARGE = 2150859025


@dataclass
class WSManFault(Exception):
    """A SOAP fault to answer with HTTP 500."""

    code: FaultCode
    subcode: str
    reason: str

    def __str__(self) -> str:
        return f"{self.subcode} ({int(self.code)}): {self.reason}"


def timed_out() -> WSManFault:
    """The fault WinRM sends when a Receive had nothing to say within OperationTimeout."""
    return WSManFault(
        FaultCode.TIMED_OUT,
        "w:TimedOut",
        "The WS-Management service cannot complete the operation within the time specified "
        "in OperationTimeout.",
    )


def envelope_too_large(limit: int) -> WSManFault:
    """The fault for a request larger than the service's MaxEnvelopeSizekb (sent with 413)."""
    return WSManFault(
        FaultCode.REQUEST_TOO_LARGE,
        "w:EncodingLimit",
        "The WS-Management service cannot process the request because the request size "
        f"exceeded the configured MaxEnvelopeSize quota ({limit // 1024} KB).",
    )


def shell_not_found(shell_id: str) -> WSManFault:
    """The fault for a request naming a shell this host does not have."""
    return WSManFault(
        FaultCode.INVALID_SELECTORS,
        "w:InvalidSelectors",
        f"The request for the Windows Remote Shell with ShellId {shell_id} failed because the "
        "shell was not found on the server. Possible causes are: the specified ShellId is "
        "incorrect or the shell no longer exists on the server. Open a new shell.",
    )


@dataclass
class Request:
    """The parts of a WS-Management request the lab acts on."""

    action: str
    message_id: str
    resource_uri: str
    max_envelope_size: int
    operation_timeout: float
    selectors: dict[str, str]
    body: ET.Element

    @property
    def shell_id(self) -> str:
        """The ShellId selector (upper-case, as WinRM reports it), or ``""``."""
        return self.selectors.get("ShellId", "").upper()

    def payload_budget(self) -> int:
        """How many raw bytes of PSRP data fit in one reply under MaxEnvelopeSize."""
        # Payload goes out base64-encoded: 4 characters for every 3 bytes.
        return max(64, (self.max_envelope_size - ENVELOPE_OVERHEAD) * 3 // 4)


_DURATION = re.compile(r"^PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?$")


def parse_duration(text: str | None, default: float) -> float:
    """Parse an xs:duration such as ``PT20S`` or ``PT60.000S`` into seconds."""
    if not text:
        return default
    match = _DURATION.match(text.strip())
    if not match:
        return default
    hours, minutes, seconds = match.groups()
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0)


_HEADER = f"{{{NS['s']}}}Header"
_BODY = f"{{{NS['s']}}}Body"
_ACTION = f"{{{NS['wsa']}}}Action"
_MESSAGE_ID = f"{{{NS['wsa']}}}MessageID"
_RESOURCE_URI = f"{{{NS['wsman']}}}ResourceURI"
_MAX_ENVELOPE_SIZE = f"{{{NS['wsman']}}}MaxEnvelopeSize"
_OPERATION_TIMEOUT = f"{{{NS['wsman']}}}OperationTimeout"
_SELECTOR_SET = f"{{{NS['wsman']}}}SelectorSet"
_SELECTOR = f"{{{NS['wsman']}}}Selector"


def parse_request(data: bytes) -> Request:
    """Parse a SOAP envelope; raises :class:`WSManFault` on anything malformed."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise WSManFault(FaultCode.INVALID_PARAMETER, "w:InvalidXml", str(exc)) from exc
    header = root.find(_HEADER)
    body = root.find(_BODY)
    if header is None or body is None:
        raise WSManFault(FaultCode.INVALID_PARAMETER, "w:SchemaValidationError", "no Header/Body")
    # One pass over the header: the first child of each name (what ``find`` returns) and the
    # selectors of every SelectorSet in document order (what ``findall`` returns).
    first: dict[str, ET.Element] = {}
    selectors: dict[str, str] = {}
    for child in header:
        first.setdefault(child.tag, child)
        if child.tag == _SELECTOR_SET:
            for sel in child:
                if sel.tag == _SELECTOR:
                    selectors[sel.attrib.get("Name", "")] = sel.text or ""

    def text(tag: str) -> str:
        el = first.get(tag)
        return (el.text or "").strip() if el is not None else ""

    try:
        max_env = int(text(_MAX_ENVELOPE_SIZE) or 153600)
    except ValueError:
        max_env = 153600
    return Request(
        action=text(_ACTION),
        message_id=text(_MESSAGE_ID),
        resource_uri=text(_RESOURCE_URI),
        max_envelope_size=max_env,
        operation_timeout=parse_duration(text(_OPERATION_TIMEOUT), 60.0),
        selectors=selectors,
        body=body,
    )


def _q(prefix: str, name: str) -> str:
    return f"{{{NS[prefix]}}}{name}"


def envelope(action: str, relates_to: str, body_children: list[ET.Element] | None = None) -> bytes:
    """Build a response envelope with the addressing headers WinRM sends."""
    env = ET.Element(_q("s", "Envelope"))
    header = ET.SubElement(env, _q("s", "Header"))
    ET.SubElement(header, _q("wsa", "Action")).text = action
    ET.SubElement(header, _q("wsa", "MessageID")).text = f"uuid:{str(uuid.uuid4()).upper()}"
    ET.SubElement(header, _q("wsa", "To")).text = ANONYMOUS
    ET.SubElement(header, _q("wsa", "RelatesTo")).text = relates_to
    body = ET.SubElement(env, _q("s", "Body"))
    for child in body_children or []:
        body.append(child)
    return ET.tostring(env, encoding="utf-8", xml_declaration=False)


def fault_envelope(fault: WSManFault, relates_to: str, machine: str) -> bytes:
    """Build the SOAP fault body WinRM returns with HTTP 500."""
    fault_el = ET.Element(_q("s", "Fault"))
    code = ET.SubElement(fault_el, _q("s", "Code"))
    ET.SubElement(code, _q("s", "Value")).text = "s:Receiver"
    sub = ET.SubElement(code, _q("s", "Subcode"))
    ET.SubElement(sub, _q("s", "Value")).text = fault.subcode
    reason = ET.SubElement(fault_el, _q("s", "Reason"))
    ET.SubElement(reason, _q("s", "Text"), {_q("xml", "lang"): "en-US"}).text = fault.reason
    detail = ET.SubElement(fault_el, _q("s", "Detail"))
    wf = ET.SubElement(
        detail,
        _q("wsmanfault", "WSManFault"),
        {"Code": str(int(fault.code)), "Machine": machine},
    )
    ET.SubElement(wf, _q("wsmanfault", "Message")).text = fault.reason
    action = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"
    return envelope(action, relates_to, [fault_el])


def create_response(
    relates_to: str,
    *,
    address: str,
    resource_uri: str,
    shell_id: str,
    owner: str,
    client_ip: str,
    input_streams: str,
    output_streams: str,
) -> bytes:
    """The Create response: ResourceCreated with the ShellId selector, plus the Shell."""
    created = ET.Element(_q("wst", "ResourceCreated"))
    ET.SubElement(created, _q("wsa", "Address")).text = address
    ref = ET.SubElement(created, _q("wsa", "ReferenceParameters"))
    ET.SubElement(ref, _q("wsman", "ResourceURI")).text = resource_uri
    sel_set = ET.SubElement(ref, _q("wsman", "SelectorSet"))
    ET.SubElement(sel_set, _q("wsman", "Selector"), {"Name": "ShellId"}).text = shell_id
    shell = ET.Element(_q("rsp", "Shell"))
    for name, value in (
        ("ShellId", shell_id),
        ("ResourceUri", resource_uri),
        ("Owner", owner),
        ("ClientIP", client_ip),
        ("IdleTimeOut", "PT7200.000S"),
        ("InputStreams", input_streams),
        ("OutputStreams", output_streams),
        ("ShellRunTime", "P0DT0H0M0S"),
        ("ShellInactivity", "P0DT0H0M0S"),
    ):
        ET.SubElement(shell, _q("rsp", name)).text = value
    return envelope(Action.CREATE.response, relates_to, [created, shell])


# The replies to Command, Send, Signal, Delete and Receive (every cmdlet's round trips) are
# written from text templates: the same bytes ElementTree writes for the same elements
# (``envelope`` stays the reference; a test compares the two), at a fraction of the cost.
_SHELL_ENVELOPE_OPEN = (
    f'<s:Envelope xmlns:rsp="{NS["rsp"]}" xmlns:s="{NS["s"]}" xmlns:wsa="{NS["wsa"]}">'
)
_PLAIN_ENVELOPE_OPEN = f'<s:Envelope xmlns:s="{NS["s"]}" xmlns:wsa="{NS["wsa"]}">'


def escape_text(text: str) -> str:
    """XML character data, escaped as ElementTree escapes it."""
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    return text


def escape_attribute(text: str) -> str:
    """An attribute value, escaped as ElementTree escapes it."""
    text = escape_text(text)
    for raw, escaped in (('"', "&quot;"), ("\r", "&#13;"), ("\n", "&#10;"), ("\t", "&#09;")):
        if raw in text:
            text = text.replace(raw, escaped)
    return text


def _shell_envelope(action: str, relates_to: str, body: str, *, rsp: bool = True) -> bytes:
    """``envelope(action, relates_to, children)`` for a body already written as ``body``."""
    return "".join(
        (
            _SHELL_ENVELOPE_OPEN if rsp else _PLAIN_ENVELOPE_OPEN,
            "<s:Header><wsa:Action>",
            escape_text(action),
            "</wsa:Action><wsa:MessageID>uuid:",
            str(uuid.uuid4()).upper(),
            "</wsa:MessageID><wsa:To>",
            ANONYMOUS,
            "</wsa:To><wsa:RelatesTo>",
            escape_text(relates_to),
            "</wsa:RelatesTo></s:Header>",
            body,
            "</s:Envelope>",
        )
    ).encode("utf-8")


def command_response(relates_to: str, command_id: str) -> bytes:
    """The Command response naming the command (pipeline) id."""
    element = (
        f"<rsp:CommandId>{escape_text(command_id)}</rsp:CommandId>"
        if command_id
        else "<rsp:CommandId />"
    )
    body = f"<s:Body><rsp:CommandResponse>{element}</rsp:CommandResponse></s:Body>"
    return _shell_envelope(Action.COMMAND.response, relates_to, body)


def empty_response(action: Action, relates_to: str) -> bytes:
    """A response with an empty body element for Send, Signal and Delete."""
    if action is Action.SEND:
        return _shell_envelope(action.response, relates_to, "<s:Body><rsp:SendResponse /></s:Body>")
    if action is Action.SIGNAL:
        body = "<s:Body><rsp:SignalResponse /></s:Body>"
        return _shell_envelope(action.response, relates_to, body)
    return _shell_envelope(action.response, relates_to, "<s:Body />", rsp=False)


@dataclass
class ReceiveChunk:
    """Payload for one Receive response."""

    chunks: list[bytes] = field(default_factory=list)
    command_id: str | None = None
    done: bool = False


def receive_response(relates_to: str, reply: ReceiveChunk) -> bytes:
    """The Receive response: one ``rsp:Stream`` per chunk, then the command state."""
    parts = ["<s:Body><rsp:ReceiveResponse>"]
    if reply.command_id:
        command_id = escape_attribute(reply.command_id)
        stream_open = f'<rsp:Stream Name="stdout" CommandId="{command_id}">'
    else:
        stream_open = '<rsp:Stream Name="stdout">'
    for chunk in reply.chunks:
        parts += [stream_open, base64.b64encode(chunk).decode(), "</rsp:Stream>"]
    if reply.command_id:
        state = COMMAND_DONE if reply.done else COMMAND_RUNNING
        if reply.done:
            parts.append(
                f'<rsp:CommandState CommandId="{command_id}" State="{state}">'
                "<rsp:ExitCode>0</rsp:ExitCode></rsp:CommandState>"
            )
        else:
            parts.append(f'<rsp:CommandState CommandId="{command_id}" State="{state}" />')
    parts.append("</rsp:ReceiveResponse></s:Body>")
    if len(parts) == 2:  # nothing inside: ElementTree closes the empty element itself
        parts = ["<s:Body><rsp:ReceiveResponse /></s:Body>"]
    return _shell_envelope(Action.RECEIVE.response, relates_to, "".join(parts))
