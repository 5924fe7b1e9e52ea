"""A leaner pypsrp: the pipeline message without a deep copy of every command, replies read
without writing every value they hold back out as XML text, and XML written in one pass.

pypsrp serialises a pipeline's commands through ``Pipeline._get_statements``, which deep-copies
every command each time it is read (twice per message: for ``Cmds`` and for ``ExtraCmds``)
because a command shared by several statements would otherwise be serialised as one object
under two parents. Ferryman's pipelines are one statement (``add_cmdlet`` after
``add_cmdlet``, or one script), where no command has two parents: each is serialised once,
so the copy only costs CPU (about a seventh of a call's client CPU, measured with
``python -m bench.client --profile``). The patched method returns the commands themselves
for a single statement and falls back to pypsrp's own copy for anything else, so the bytes
on the wire are the same.

Reading a reply, pypsrp's ``Serializer.deserialize`` first writes the element it reads back out
as XML text (``ET.tostring``) -- for every value, nested ones included -- because a complex
object keeps its XML (``_xml``) and a value of an unknown type is returned as that text. A
primitive value (``<S>``, ``<I32>``, ``<B>``, a ``<Ref>``...) uses neither, so for those the
patched method decodes the value as pypsrp does without writing the text. Objects, lists and
unknown types still go through pypsrp's own method, with the text written only when it is
read: a complex object's ``_xml`` when something reads it (Ferryman never does; pypsrp's
``get_command_metadata`` does), a value of an unknown type at once, since it is the value.
Strings without an ``_xHHHH_`` escape (nearly all of them) are returned as they are instead of
being re-encoded through UTF-16 to look for one. The values read are the same
(``tests/workers/hyperv/test_lean.py``).

The envelopes and PSRP messages pypsrp's ``wsman`` and ``messages`` modules write go through
:func:`workers.hyperv.envelope.tostring`, the same bytes as ``ET.tostring`` without its text
stream (``tests/workers/hyperv/test_envelope.py``).
"""

from __future__ import annotations

import base64
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import pypsrp.messages
import pypsrp.serializer
import pypsrp.wsman
from pypsrp.complex_objects import ComplexObject, ObjectMeta, Pipeline
from pypsrp.serializer import Serializer

from workers.hyperv import envelope

_original = Pipeline._get_statements
_original_deserialize = Serializer.deserialize
_original_deserialize_string = Serializer._deserialize_string
_installed = False


def _statements_without_copy(self: Any) -> list[list[Any]]:
    commands = list(self.commands)
    # the last command ends the statement, as pypsrp's own method sets it
    commands[-1].end_of_statement = True
    if any(command.end_of_statement for command in commands[:-1]):
        return list(_original(self))  # several statements: pypsrp's copy keeps them apart
    return [commands]


Unpack = Callable[[Any, Any], Any]  # (serializer, element) -> value

# pypsrp's decoding of each primitive tag (``Serializer.deserialize``), the same expressions
_PRIMITIVES: dict[str, Unpack] = {
    "S": lambda s, d: s._deserialize_string(d.text),
    "ToString": lambda s, d: s._deserialize_string(d.text),
    "C": lambda s, d: chr(int(d.text)),
    "B": lambda s, d: d.text.lower() == "true",
    "DT": lambda s, d: d.text,
    "TS": lambda s, d: d.text,
    "By": lambda s, d: int(d.text),
    "SB": lambda s, d: int(d.text),
    "U16": lambda s, d: int(d.text),
    "I16": lambda s, d: int(d.text),
    "U32": lambda s, d: int(d.text),
    "I32": lambda s, d: int(d.text),
    "U64": lambda s, d: int(d.text),
    "I64": lambda s, d: int(d.text),
    "Sg": lambda s, d: float(d.text),
    "Db": lambda s, d: float(d.text),
    "D": lambda s, d: d.text,
    "BA": lambda s, d: base64.b64decode(d.text),
    "G": lambda s, d: uuid.UUID(d.text),
    "URI": lambda s, d: s._deserialize_string(d.text),
    "Nil": lambda s, d: None,
    "Version": lambda s, d: d.text,
    "XD": lambda s, d: s._deserialize_string(d.text),
    "SBK": lambda s, d: s._deserialize_string(d.text),
    "SS": lambda s, d: s._deserialize_secure_string(d),
    "Ref": lambda s, d: s.obj[d.attrib["RefId"]],
}


class _LazyXml:
    """An element's XML text as pypsrp writes it (``to_string(ET.tostring(element,
    encoding="utf-8", method="xml"))``), written when first read."""

    __slots__ = ("element",)

    def __init__(self, element: ET.Element) -> None:
        self.element = element

    def decode(self, _encoding: str = "utf-8") -> _LazyXml:
        return self  # pypsrp's to_string() of what tostring returned: still unwritten

    def text(self) -> str:
        return envelope.tostring(self.element).decode("utf-8")


def _serializer_tostring(element: ET.Element, *args: Any, **kwargs: Any) -> Any:
    """``tostring`` as pypsrp's serializer module sees it: the one call its ``deserialize``
    makes becomes a :class:`_LazyXml`, any other is written at once."""
    if args or kwargs != {"encoding": "utf-8", "method": "xml"}:
        return ET.tostring(element, *args, **kwargs)
    return _LazyXml(element)


def _get_xml(self: ComplexObject) -> Any:
    value = self.__dict__.get("_lean_xml")
    if isinstance(value, _LazyXml):
        value = self.__dict__["_lean_xml"] = value.text()
    return value


def _set_xml(self: ComplexObject, value: Any) -> None:
    self.__dict__["_lean_xml"] = value


def _deserialize(
    self: Serializer,
    element: ET.Element | str,
    metadata: ObjectMeta | None = None,
    clear: bool = True,
) -> Any:
    if isinstance(element, str):
        return _original_deserialize(self, element, metadata, clear)
    unpack = _PRIMITIVES.get(element.tag)
    if unpack is None:
        value = _original_deserialize(self, element, metadata, clear)
        # a value of a type pypsrp does not know is returned as its XML text
        return value.text() if isinstance(value, _LazyXml) else value
    # what pypsrp's method does before it decodes a primitive, but the XML text
    if clear:
        self._clear()
    if metadata is not None and metadata.tag == "*":
        metadata.tag = element.tag
    self._get_types_from_obj(element)
    return unpack(self, element)


def _deserialize_string(self: Serializer, value: str | None) -> str:
    if isinstance(value, str) and "_x" not in value:
        return value  # no _xHHHH_ escape to decode
    return str(_original_deserialize_string(self, value))


def install() -> None:
    """Replace ``Pipeline._get_statements``, ``Serializer.deserialize`` and
    ``Serializer._deserialize_string``, make ``ComplexObject._xml`` written on first read, and
    give pypsrp's ``wsman``, ``messages`` and ``serializer`` modules the one-pass ``tostring``,
    once per process (idempotent)."""
    global _installed
    if not _installed:
        serializer_et = envelope.element_tree_module(_serializer_tostring)
        pypsrp.serializer.ET = serializer_et
        pypsrp.wsman.ET = envelope.element_tree_module()
        pypsrp.messages.ET = envelope.element_tree_module()
        ComplexObject._xml = property(_get_xml, _set_xml)  # type: ignore[assignment]
        Pipeline._get_statements = _statements_without_copy  # type: ignore[method-assign]
        Serializer.deserialize = _deserialize  # type: ignore[method-assign]
        Serializer._deserialize_string = _deserialize_string  # type: ignore[method-assign]
        _installed = True
