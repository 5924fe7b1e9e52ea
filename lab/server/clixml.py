"""Cmdlet output written as CLIXML text directly: the bytes psrpcore writes for the same value.

Sending an output object through psrpcore means building its PSObjects
(:func:`lab.server.serialize.to_ps_value`), an ElementTree from them and then the text: about a
millisecond for one VM. :func:`output_clixml` writes the text of ``serialize(to_ps_value(v))``
for the values cmdlets output (lab objects, enums, lists, dicts, strings, numbers, booleans,
GUIDs, times and durations, null) with psrpcore's own rules: reference ids in document order, a
type-name list written once per message and referred to after (by its first name), an enum
value that occurs again in the message sent as a reference, psrpcore's string escapes, then
ElementTree's. For any other value it returns None and the value goes through psrpcore.
``tests/lab/test_protocol_clixml.py`` compares the two on every shape the lab outputs.
"""

from __future__ import annotations

import base64
import datetime
import re
import uuid
from typing import Any

from psrpcore.types._serializer import (
    _serialize_datetime,
    _serialize_duration,
    _serialize_string,
)

from lab.objects import LabEnum, LabObject
from lab.server.wsman import escape_attribute, escape_text

_INT32_MAX = 2**31 - 1
_ENUM_BASES = "<T>System.Enum</T><T>System.ValueType</T><T>System.Object</T>"
_LIST_TYPES = ("System.Collections.ArrayList", "System.Object")
_DICT_TYPES = ("System.Collections.Hashtable", "System.Object")


# What psrpcore's string escaping changes: "_x" in any case, C0 and C1 controls, surrogates
# and characters beyond the Basic Multilingual Plane. A string with none is written as it is.
_ESCAPED = re.compile("(?i)_x|[\u0000-\u001f\u007f-\u009f\ud800-\udfff\U00010000-\U0010ffff]")


def _string(value: str) -> str:
    """``_serialize_string(value)``, without its two substitutions when they change nothing."""
    return _serialize_string(value) if _ESCAPED.search(value) else value


class _Unsupported(Exception):
    """A value psrpcore must write."""


def output_clixml(value: Any) -> bytes | None:
    """The PipelineOutput message data psrpcore writes for ``value``, or None."""
    if value is None:
        return None  # psrpcore sends null output as an empty message
    writer = _Writer()
    try:
        writer.value(value, None)
    except _Unsupported:
        return None
    return "".join(writer.parts).encode("utf-8")


class _Writer:
    """One message: its text so far, next reference id, type-name lists and enums written."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.next_ref = 0
        self.type_lists: list[str] = []  # first type name of each TN written, by TN RefId
        self.enums: dict[tuple[str, str, int], int] = {}  # enum value -> its Obj RefId

    def _open(self, tag: str, name: str | None, attributes: str = "") -> str:
        return (
            f'<{tag}{attributes} N="{escape_attribute(_string(name))}"'
            if name
            else (f"<{tag}{attributes}")
        )

    def _leaf(self, tag: str, name: str | None, text: str) -> None:
        start = self._open(tag, name)
        self.parts.append(f"{start}>{escape_text(text)}</{tag}>" if text else f"{start} />")

    def _ref(self) -> int:
        ref = self.next_ref
        self.next_ref += 1
        return ref

    def _types(self, names: tuple[str, ...] | list[str]) -> None:
        main = names[0]
        if main in self.type_lists:
            self.parts.append(f'<TNRef RefId="{self.type_lists.index(main)}" />')
            return
        self.type_lists.append(main)
        inner = "".join(f"<T>{escape_text(n)}</T>" if n else "<T />" for n in names)
        self.parts.append(f'<TN RefId="{len(self.type_lists) - 1}">{inner}</TN>')

    def value(self, value: Any, name: str | None) -> None:
        """Write ``value`` (a property called ``name``, or an item when None)."""
        if value is None:
            self.parts.append(self._open("Nil", name) + " />")
        elif isinstance(value, bool):
            self._leaf("B", name, "true" if value else "false")
        elif isinstance(value, LabObject):
            self._object(value, name)
        elif isinstance(value, LabEnum):
            self._enum(value, name)
        elif isinstance(value, str):
            if type(value) is not str:
                raise _Unsupported
            self._leaf("S", name, _string(value))
        elif type(value) is int:
            self._leaf("I64" if value > _INT32_MAX else "I32", name, str(value))
        elif type(value) is float:
            self._leaf("Sg", name, str(value).upper())
        elif type(value) is uuid.UUID:
            self._leaf("G", name, str(value))
        elif type(value) is datetime.datetime:
            self._leaf("DT", name, _serialize_datetime(value))
        elif type(value) is datetime.timedelta:
            self._leaf("TS", name, _serialize_duration(value))
        elif type(value) is bytes:
            self._leaf("BA", name, base64.b64encode(value).decode())
        elif isinstance(value, list | tuple):
            self.parts.append(self._open("Obj", name, f' RefId="{self._ref()}"') + ">")
            self._types(_LIST_TYPES)
            if value:
                self.parts.append("<LST>")
                for item in value:
                    self.value(item, None)
                self.parts.append("</LST></Obj>")
            else:
                self.parts.append("<LST /></Obj>")
        elif type(value) is dict:
            self.parts.append(self._open("Obj", name, f' RefId="{self._ref()}"') + ">")
            self._types(_DICT_TYPES)
            if value:
                self.parts.append("<DCT>")
                for key, item in value.items():
                    self.parts.append("<En>")
                    self.value(str(key), "Key")
                    self.value(item, "Value")
                    self.parts.append("</En>")
                self.parts.append("</DCT></Obj>")
            else:
                self.parts.append("<DCT /></Obj>")
        else:
            raise _Unsupported  # to_ps_value sends it as its text: leave that to psrpcore

    def _object(self, obj: LabObject, name: str | None) -> None:
        self.parts.append(self._open("Obj", name, f' RefId="{self._ref()}"') + ">")
        names = list(obj.type_names)
        if not names or names[-1] != "System.Object":
            names.append("System.Object")
        self._types(names)
        if obj.properties:
            if len({str(key).lower() for key in obj.properties}) != len(obj.properties):
                raise _Unsupported  # psrpcore refuses a second property of one name
            self.parts.append("<Props>")
            for key, item in obj.properties.items():
                if type(key) is not str or not key:
                    raise _Unsupported
                self.value(item, key)
            self.parts.append("</Props>")
        if obj.to_string:
            self.parts.append(f"<ToString>{escape_text(obj.to_string)}</ToString>")
        self.parts.append("</Obj>")

    def _enum(self, value: LabEnum, name: str | None) -> None:
        key = (value.type_name, value.name, value.value)
        known = self.enums.get(key)
        if known is not None:
            self.parts.append(self._open("Ref", name, f' RefId="{known}"') + " />")
            return
        if (
            type(value.value) is not int
            or not value.name.isidentifier()
            or value.name.startswith("_")
        ):
            raise _Unsupported
        ref = self.enums[key] = self._ref()
        self.parts.append(self._open("Obj", name, f' RefId="{ref}"') + ">")
        self._leaf("I64" if value.value > _INT32_MAX else "I32", None, str(value.value))
        main = value.type_name
        if main in self.type_lists:
            self.parts.append(f'<TNRef RefId="{self.type_lists.index(main)}" />')
        else:
            self.type_lists.append(main)
            self.parts.append(
                f'<TN RefId="{len(self.type_lists) - 1}"><T>{escape_text(main)}</T>'
                f"{_ENUM_BASES}</TN>"
            )
        if value.name:
            self.parts.append(f"<ToString>{escape_text(value.name)}</ToString>")
        self.parts.append("</Obj>")
