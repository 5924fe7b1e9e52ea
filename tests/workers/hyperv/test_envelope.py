"""The envelope writer writes byte for byte what ``ET.tostring`` writes for pypsrp's trees."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pypsrp.messages
import pypsrp.wsman
import pytest
from pypsrp.wsman import NAMESPACES, WSMan

from workers.errors import CmdletFailed
from workers.hyperv import envelope, lean

from .lab_double import Site, serve_site


def _reference(element: ET.Element) -> bytes:
    return ET.tostring(element, encoding="utf-8", method="xml")


@pytest.fixture(params=["basic", "ntlm", "https"])
def any_auth_site(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Site]:
    yield from serve_site(request.param, monkeypatch)


@pytest.mark.integration
def test_every_envelope_and_message_of_a_session_is_written_as_elementtree_writes_it(
    any_auth_site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    lean.install()
    written: list[tuple[bytes, bytes]] = []

    def recording(element: ET.Element, *args: Any, **kwargs: Any) -> Any:
        ours = envelope._tostring_as_pypsrp_calls_it(element, *args, **kwargs)
        written.append((ours, _reference(element)))
        return ours

    monkeypatch.setattr(pypsrp.wsman.ET, "tostring", recording)
    monkeypatch.setattr(pypsrp.messages.ET, "tostring", recording)
    runner = any_auth_site.runner()
    tricky = "a & b < c > d \"quoted\" 'single' \n\ttab \r cr ünïcødé \u2603 _x0041_"
    result = runner.run("Echo-Parameters", {"Name": tricky, "Count": 3, "Tags": ["x", "y"]})
    assert result.output[0]["Name"] == tricky
    with pytest.raises(CmdletFailed):
        runner.run("Get-VM", {"Name": "sql-99"})  # a call whose reply is an error record
    runner.run_pipeline([("Get-VMSnapshot", {"VMName": "sql-01", "Name": "x"}, ()),
                         ("Start-VMFailover", {}, ("Passthru",))])  # fmt: skip
    runner.close()  # the Delete of the shell
    actions = b"".join(ours for ours, _ in written)
    for action in (b"/transfer/Create", b"/Command", b"/Receive", b"/Signal", b"/Delete"):
        assert action in actions  # the session's every kind of envelope was written
    assert b"a &amp; b &lt; c &gt; d" in actions  # the parameter, escaped, in a message
    for ours, reference in written:
        assert ours == reference


def _envelope_with(body: ET.Element) -> ET.Element:
    """A WS-Man envelope with pypsrp's own header, around ``body``."""
    wsman = WSMan("host.example", auth="basic", username="u", password="p", encryption="never")
    root = ET.Element(f"{{{NAMESPACES['s']}}}Envelope")
    options = pypsrp.wsman.OptionSet()
    options.add_option("WINRS_CODEPAGE", "65001", {"MustComply": "true"})
    selectors = pypsrp.wsman.SelectorSet()
    selectors.add_option("ShellId", "B0A1-\"&<>")
    _, header = wsman._create_header("http://action", "http://resource", options, selectors, 5)
    root.append(header)
    ET.SubElement(root, f"{{{NAMESPACES['s']}}}Body").append(body)
    return root


def _cases() -> list[ET.Element]:
    rsp = NAMESPACES["rsp"]
    receive = ET.Element(f"{{{rsp}}}Receive")
    ET.SubElement(receive, f"{{{rsp}}}DesiredStream", CommandId="C-1").text = "stdout"
    signal = ET.Element(f"{{{rsp}}}Signal", attrib={"CommandId": "C-1"})
    ET.SubElement(signal, f"{{{rsp}}}Code").text = "powershell/signal/crtl_c"
    unknown = ET.Element("{urn:unregistered:a}Thing", {"{urn:unregistered:b}attr": "1"})
    ET.SubElement(unknown, "{urn:unregistered:a}Child").text = "x"
    ET.SubElement(unknown, "{urn:unregistered:c}Other", {"plain": "y"}).tail = "tail & more"
    escapes = ET.Element("Obj", {"N": "a\"b<c>&d\r\ne\tf", "RefId": "0"})
    ET.SubElement(escapes, "S").text = "x < y && z > w ]]> \u00e9\u4e2d\U0001f600"
    ET.SubElement(escapes, "Nil")
    ET.SubElement(escapes, "S").text = ""
    surrogate = ET.Element("S")
    surrogate.text = "lone \ud800 surrogate"
    tailed = ET.Element("root")
    tailed.tail = "after the root"
    cases = [receive, signal, unknown, escapes, surrogate, tailed]
    return cases + [_envelope_with(case) for case in (receive, signal, unknown)]


@pytest.mark.parametrize("element", _cases(), ids=lambda e: str(e.tag).rsplit("}", 1)[-1])
def test_envelopes_and_messages_are_written_as_elementtree_writes_them(
    element: ET.Element,
) -> None:
    assert envelope.tostring(element) == _reference(element)


def test_what_it_does_not_write_itself_is_written_by_elementtree() -> None:
    with_comment = ET.Element("root")
    with_comment.append(ET.Comment("note"))
    with_qname = ET.Element("root", {"type": ET.QName("urn:x", "y")})  # type: ignore[dict-item]
    for element in (with_comment, with_qname):
        assert envelope.tostring(element) == _reference(element)
    bad = ET.Element("root", {"n": 3})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        envelope.tostring(bad)


def test_pypsrp_modules_write_with_it_and_keep_elementtree_otherwise() -> None:
    lean.install()
    element = _cases()[0]
    assert pypsrp.wsman.ET.tostring(element, encoding="utf-8", method="xml") == _reference(
        element
    )
    assert pypsrp.wsman.ET.tostring(element, encoding="unicode") == ET.tostring(
        element, encoding="unicode"
    )
    assert pypsrp.wsman.ET.Element is ET.Element
    assert pypsrp.messages.ET.SubElement is ET.SubElement
