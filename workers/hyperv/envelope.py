"""pypsrp's XML text, written in one pass: the bytes ``ET.tostring(element, encoding="utf-8",
method="xml")`` returns, without ElementTree's text stream.

pypsrp writes every SOAP envelope it sends (``WSMan.invoke``) and every PSRP message it packs
(``Message.pack``) with ``ET.tostring``, which writes each tag, attribute and text through a
``TextIOWrapper`` (one write, and one encoder reset, per piece) after a first pass over the
tree to find its namespaces: about a fifth of a call's client CPU
(``python -m bench.client --profile``). :func:`tostring` walks the tree once, collects the
pieces in a list, names the namespaces as it meets them -- in the order ElementTree's first
pass does, so an unregistered namespace gets the same ``ns0``, ``ns1`` -- and puts their
declarations on the root element at the end, sorted by prefix as ElementTree does. Text and
attributes are escaped by ElementTree's own functions and the text is encoded as the stream
would (UTF-8, character references for what UTF-8 cannot hold). A tree it does not handle
(comments, processing instructions, ``QName`` objects, anything but text) goes to
``ET.tostring`` itself. ``tests/workers/hyperv/test_envelope.py`` compares the two on real
envelopes.
"""

from __future__ import annotations

import types
import xml.etree.ElementTree as ET
from typing import Any

# ElementTree's process-wide prefix registry (``ET.register_namespace`` writes to it) and its
# escaping functions: the same objects, so the names and escapes are always ElementTree's.
_registered: dict[str, str] = ET._namespace_map  # type: ignore[attr-defined]
_escape_cdata = ET._escape_cdata  # type: ignore[attr-defined]
_escape_attrib = ET._escape_attrib  # type: ignore[attr-defined]

# "{uri}local" -> (uri, local): a pure function of the name, kept across documents
_split: dict[str, tuple[str, str]] = {}


class _Unsupported(Exception):
    """The tree holds something only ElementTree writes (a comment, a QName...)."""


class _Names:
    """The qualified names of one document and the namespaces they declare, as
    ``ET._namespaces`` builds them, but filled in as the writer meets each name."""

    __slots__ = ("names", "namespaces")

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.namespaces: dict[str, str] = {}  # uri -> prefix

    def name(self, qname: Any) -> str:
        written = self.names.get(qname)
        if written is not None:
            return written
        if type(qname) is not str:
            raise _Unsupported
        if qname[:1] == "{":
            parts = _split.get(qname)
            if parts is None:
                uri, local = qname[1:].rsplit("}", 1)
                parts = _split[qname] = (uri, local)
            uri, local = parts
            prefix = self.namespaces.get(uri)
            if prefix is None:
                prefix = _registered.get(uri)
                if prefix is None:
                    prefix = f"ns{len(self.namespaces)}"
                if prefix != "xml":
                    self.namespaces[uri] = prefix
            written = f"{prefix}:{local}" if prefix else local
        else:
            written = qname
        self.names[qname] = written
        return written


def _write(out: list[str], element: ET.Element, names: _Names) -> None:
    tag = names.name(element.tag)
    out.append("<" + tag)
    for key, value in element.items():
        if type(value) is not str:
            raise _Unsupported
        out.append(f' {names.name(key)}="{_escape_attrib(value)}"')
    text = element.text
    if text or len(element):
        out.append(">")
        if text:
            out.append(_escape_cdata(text))
        for child in element:
            _write(out, child, names)
        out.append("</" + tag + ">")
    else:
        out.append(" />")
    if element.tail:
        out.append(_escape_cdata(element.tail))


def tostring(element: ET.Element) -> bytes:
    """``ET.tostring(element, encoding="utf-8", method="xml")``, byte for byte."""
    out: list[str] = [""]  # the root's start tag goes first, once its namespaces are known
    names = _Names()
    try:
        _write(out, element, names)
    except (_Unsupported, TypeError):
        return ET.tostring(element, encoding="utf-8", method="xml")
    declarations = "".join(
        f' xmlns{":" + prefix if prefix else ""}="{_escape_attrib(uri)}"'
        for uri, prefix in sorted(names.namespaces.items(), key=lambda item: item[1])
    )
    out[0], out[1] = out[1], declarations  # "<tag" then its declarations, then its attributes
    return "".join(out).encode("utf-8", "xmlcharrefreplace")


def _tostring_as_pypsrp_calls_it(element: ET.Element, *args: Any, **kwargs: Any) -> Any:
    if args or kwargs != {"encoding": "utf-8", "method": "xml"} or not ET.iselement(element):
        return ET.tostring(element, *args, **kwargs)
    return tostring(element)


def element_tree_module(tostring: Any = _tostring_as_pypsrp_calls_it) -> types.ModuleType:
    """A copy of ``xml.etree.ElementTree``'s namespace with ``tostring`` replaced: what a
    pypsrp module's ``ET`` becomes (its other functions and classes are ElementTree's own)."""
    module = types.ModuleType(ET.__name__, ET.__doc__)
    module.__dict__.update({k: v for k, v in vars(ET).items() if not k.startswith("__")})
    module.tostring = tostring  # type: ignore[attr-defined]
    return module
