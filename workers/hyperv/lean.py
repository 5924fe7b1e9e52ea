"""A leaner pypsrp: messages written without deep copies and per-value tables, replies read
without writing every value back out as XML text, and XML written in one pass.

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
being re-encoded through UTF-16 to look for one. For a value that is not a primitive, pypsrp
builds its table of known types (some fifty metadata objects) anew, to pick one entry; the
patched method reads that table once (:func:`_pypsrp_structures`) and picks a fresh copy of the
entry with pypsrp's own loop over the type names, then reads the object with pypsrp's methods.
The values read are the same (``tests/workers/hyperv/test_lean.py``).

Writing a message, pypsrp's ``Serializer.serialize`` builds its table of how each tag is
written (two dozen closures) for every value it writes, and runs two regular expressions over
every string to escape ``_x``/``_X`` and characters PSRP encodes as ``_xHHHH_``. The patched
method keeps one table with the same expressions, and a string with nothing to escape is
written as it is. The messages are the same bytes (``tests/workers/hyperv/test_lean.py``).

The envelopes and PSRP messages pypsrp's ``wsman`` and ``messages`` modules write go through
:func:`workers.hyperv.envelope.tostring`, the same bytes as ``ET.tostring`` without its text
stream (``tests/workers/hyperv/test_envelope.py``).
"""

from __future__ import annotations

import base64
import logging
import sys
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from types import FrameType
from typing import Any

import pypsrp.messages
import pypsrp.serializer
import pypsrp.wsman
from pypsrp.complex_objects import (
    ComplexObject,
    DictionaryMeta,
    ListMeta,
    ObjectMeta,
    Pipeline,
)
from pypsrp.serializer import Serializer, TaggedValue

from workers.hyperv import envelope

_original = Pipeline._get_statements
_original_deserialize = Serializer.deserialize
_original_deserialize_string = Serializer._deserialize_string
_original_serialize = Serializer.serialize
_original_serialize_string = Serializer._serialize_string
_installed = False
_serializer_log = logging.getLogger("pypsrp.serializer")  # pypsrp's logger, for its warning


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
        if not _STRUCTURES:  # pypsrp's table could not be read: its own method does it all
            value = _original_deserialize(self, element, metadata, clear)
            # a value of a type pypsrp does not know is returned as its XML text
            return value.text() if isinstance(value, _LazyXml) else value
        return _deserialize_complex(self, element, metadata, clear)
    # what pypsrp's method does before it decodes a primitive, but the XML text
    if clear:
        self._clear()
    if metadata is not None and metadata.tag == "*":
        metadata.tag = element.tag
    if len(element):  # a type name (TN) is recorded for later TNRefs; a leaf holds none
        self._get_types_from_obj(element)
    return unpack(self, element)


def _deserialize_complex(
    self: Serializer, element: ET.Element, metadata: ObjectMeta | None, clear: bool
) -> Any:
    """pypsrp's ``Serializer.deserialize`` of a value that is not a primitive, with its table
    of known types built once (:data:`_STRUCTURES`) instead of for every value."""
    if clear:
        self._clear()
    xml = _LazyXml(element)
    metadata = metadata or ObjectMeta()
    if metadata.tag == "*":
        metadata.tag = element.tag
    obj_types = self._get_types_from_obj(element)
    resolved: ObjectMeta | None = metadata
    if type(metadata) is ObjectMeta and metadata.object is None:
        if metadata.tag == "Obj" and len(obj_types) == 0:
            obj_types = ["System.Object"]
        resolved = _known_type(obj_types)
    obj: Any
    if resolved is None:
        obj = xml.text()
    elif resolved.tag == "Obj":
        obj = self._deserialize_obj(element, resolved)
    elif resolved.tag == "ObjDynamic":
        obj = self._deserialize_dynamic_obj(element, resolved)
    elif resolved.tag == "LST":
        obj = self._deserialize_lst(element, resolved)
    elif resolved.tag == "QUE":
        obj = self._deserialize_que(element)
    elif resolved.tag == "STK":
        obj = self._deserialize_stk(element)
    elif resolved.tag == "DCT":
        obj = self._deserialize_dct(element)
    else:
        _serializer_log.warning(
            "Unknown metadata tag type '%s', failed to deserialize object", resolved.tag
        )
        obj = xml.text()
    if element.tag == "Obj":
        self.obj[element.attrib["RefId"]] = obj
    if isinstance(obj, ComplexObject):
        obj._xml = xml  # type: ignore[assignment]  # written when read (_get_xml)
    return obj


def _known_type(obj_types: list[str]) -> ObjectMeta | None:
    """The metadata pypsrp picks for an object of ``obj_types`` (its loop over the type names,
    the same expressions), a fresh copy of its table's entry."""
    for obj_type in obj_types:
        if obj_type.startswith("Deserialized.System."):
            obj_type = obj_type[13:]
        is_list = False
        if obj_type.endswith("[]"):
            obj_type = obj_type[0:-2]
            is_list = True
        elif obj_type.startswith("System.Collections.Generic.List`1[["):
            obj_type = obj_type[35:-1].split(",")[0]
            is_list = True
        elif obj_type.startswith("System.Collections.ObjectModel.Collection`1[["):
            obj_type = obj_type[45:-1].split(",")[0]
            is_list = True
        elif obj_type.startswith("System.Collections.ObjectModel.ReadOnlyCollection`1[["):
            obj_type = obj_type[53:-1].split(",")[0]
            is_list = True
        elif obj_type.startswith("System.Collections.Generic.Dictionary`2[["):
            dict_meta = obj_type[41:-2].split("],[")
            key_type = _fresh(dict_meta[0].split(",")[0]) or ObjectMeta()
            value_type = _fresh(dict_meta[1].split(",")[0]) or ObjectMeta()
            return DictionaryMeta(dict_key_meta=key_type, dict_value_meta=value_type)
        obj_meta = _fresh(obj_type)
        if obj_meta is not None:
            return ListMeta(list_value_meta=obj_meta) if is_list else obj_meta
    return None


def _fresh(name: str) -> ObjectMeta | None:
    """A new copy of pypsrp's table entry for ``name`` (pypsrp builds a new table per value,
    and its deserialisers set fields of the metadata they are given)."""
    entry = _STRUCTURES.get(name)
    return None if entry is None else _clone(entry)


def _clone(meta: ObjectMeta) -> ObjectMeta:
    copied = object.__new__(type(meta))
    for key, value in vars(meta).items():
        if isinstance(value, ObjectMeta):
            value = _clone(value)
        elif isinstance(value, list):
            value = list(value)
        setattr(copied, key, value)
    return copied


def _pypsrp_structures() -> dict[str, ObjectMeta]:
    """pypsrp's table of known types, as its ``Serializer.deserialize`` builds it (a local
    variable there, rebuilt for every value that is not a primitive): read once, from the
    method's frame, while it deserialises one plain object. Empty if that fails."""
    found: dict[str, ObjectMeta] = {}
    code = _original_deserialize.__code__

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "return" and isinstance(frame.f_locals.get("structures"), dict):
            found.update(frame.f_locals["structures"])
        return local

    def calls(frame: FrameType, event: str, arg: Any) -> Any:
        return local if frame.f_code is code else None

    element = ET.fromstring('<Obj RefId="0"><TN RefId="0"><T>System.Object</T></TN></Obj>')
    previous = sys.gettrace()
    sys.settrace(calls)
    try:
        _original_deserialize(Serializer(), element)
    except Exception:  # pragma: no cover - pypsrp changed: its own method is used instead
        found.clear()
    finally:
        sys.settrace(previous)
    return found


_STRUCTURES: dict[str, ObjectMeta] = _pypsrp_structures()


Pack = Callable[[Any, Any, Any], Any]  # (serializer, metadata, value) -> text or element

# pypsrp's ``Serializer.serialize`` table of how each tag is written, the same expressions; it
# builds the table (two dozen closures) anew for every value it writes. "ToString" and "DT"
# are left to pypsrp's own method: its entries for them do not write a value.
_PACKERS: dict[str, Pack] = {
    "S": lambda s, m, d: s._serialize_string(d),
    "C": lambda s, m, d: str(ord(d)),
    "B": lambda s, m, d: str(d).lower(),
    "TS": lambda s, m, d: str(d),
    "By": lambda s, m, d: str(d),
    "SB": lambda s, m, d: str(d),
    "U16": lambda s, m, d: str(d),
    "I16": lambda s, m, d: str(d),
    "U32": lambda s, m, d: str(d),
    "I32": lambda s, m, d: str(d),
    "U64": lambda s, m, d: str(d),
    "I64": lambda s, m, d: str(d),
    "Sg": lambda s, m, d: str(d),
    "Db": lambda s, m, d: str(d),
    "D": lambda s, m, d: str(d),
    "BA": lambda s, m, d: base64.b64encode(d).decode("utf-8"),
    "G": lambda s, m, d: str(d),
    "URI": lambda s, m, d: s._serialize_string(d),
    "Version": lambda s, m, d: str(d),
    "XD": lambda s, m, d: s._serialize_string(d),
    "SBK": lambda s, m, d: s._serialize_string(d),
    "SS": lambda s, m, d: s._serialize_secure_string(d),
    "Obj": lambda s, m, d: s._serialize_obj(m, d),
    "ObjDynamic": lambda s, m, d: s._serialize_dynamic_obj(m, d),
    "LST": lambda s, m, d: s._serialize_lst(m, d),
    "IE": lambda s, m, d: s._serialize_ie(m, d),
    "QUE": lambda s, m, d: s._serialize_que(m, d),
    "STK": lambda s, m, d: s._serialize_stk(m, d),
    "DCT": lambda s, m, d: s._serialize_dct(m, d),
}


def _serialize(
    self: Serializer,
    value: Any,
    metadata: ObjectMeta | None = None,
    parent: ET.Element | None = None,
    clear: bool = True,
) -> ET.Element | None:
    if isinstance(value, ET.Element):
        return _original_serialize(self, value, metadata, parent, clear)
    if clear:
        self._clear()
    metadata = metadata or ObjectMeta()
    if metadata.tag == "*":
        if isinstance(value, TaggedValue):
            metadata.tag = value.tag
            value = value.value
        else:
            metadata.tag = self._get_tag_from_value(value)
    pack = _PACKERS.get(metadata.tag)
    if pack is None:  # "ToString", "DT", or a tag pypsrp does not know (a KeyError there)
        return _original_serialize(self, value, metadata, parent, False)
    element: Any
    if value is None:
        if metadata.optional:
            return None
        element = ET.Element("Nil")
    else:
        packed = pack(self, metadata, value)
        if isinstance(packed, str):
            element = ET.Element(metadata.tag)
            element.text = packed
        else:
            element = packed
    if metadata.name is not None:
        element.attrib["N"] = metadata.name
    if parent is not None:
        parent.append(element)
    return element


def _serialize_string(self: Serializer, value: str | None) -> str | None:
    if (
        isinstance(value, str)
        and "_x" not in value
        and "_X" not in value
        and self._serial_str.search(value) is None
    ):
        return value  # nothing pypsrp would escape
    return _original_serialize_string(self, value)


def _deserialize_string(self: Serializer, value: str | None) -> str:
    if isinstance(value, str) and "_x" not in value:
        return value  # no _xHHHH_ escape to decode
    return str(_original_deserialize_string(self, value))


def install() -> None:
    """Replace ``Pipeline._get_statements``, ``Serializer.serialize``, ``.deserialize`` and
    their string helpers, make ``ComplexObject._xml`` written on first read, and
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
        Serializer.serialize = _serialize  # type: ignore[method-assign]
        Serializer._serialize_string = _serialize_string  # type: ignore[method-assign]
        _installed = True
