"""The commands of a CreatePipeline message, read straight from its CLIXML when it is plain.

psrpcore turns the message into PSObjects (about 20 of them for one cmdlet: the host info, the
enum values of every merge setting) and then into its ``PowerShell`` metadata, which costs a
millisecond per call; the lab needs only each command's name, whether it is a script and its
``(name, value)`` arguments. :func:`plain_commands` reads those from the element tree when the
message has exactly the shape PowerShell and pypsrp send, with argument values that are
strings, booleans, 32-bit integers or null; for anything else (another shape, an escaped or
complex value, a reference) it returns None and the message goes through psrpcore as before,
so every message psrpcore would refuse is still refused the same way. Where it answers, the
commands equal what psrpcore's reading gives (``tests/lab/test_protocol_pipeline.py`` checks
both on the messages real clients send and on altered ones).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from lab.objects import Command

# The members of the message's top-level MS, and of its PowerShell and each command's MS,
# with the element each must be (PowerShell writes them in this order).
_TOP = {
    "NoInput": "B",
    "ApartmentState": "Obj",
    "RemoteStreamOptions": "Obj",
    "AddToHistory": "B",
    "HostInfo": "Obj",
    "PowerShell": "Obj",
    "IsNested": "B",
}
_POWERSHELL = {
    "IsNested": "B",
    "ExtraCmds": "Nil",
    "Cmds": "Obj",
    "History": "Nil",
    "RedirectShellErrorOutputPipe": "B",
}
_MERGES = (
    "MergeMyResult",
    "MergeToResult",
    "MergePreviousResults",
    "MergeError",
    "MergeWarning",
    "MergeVerbose",
    "MergeDebug",
    "MergeInformation",
)
_HOST_FLAGS = ("_isHostNull", "_isHostUINull", "_isHostRawUINull", "_useRunspaceHost")
# Enum values psrpcore reads without question: ApartmentState (STA, MTA, Unknown),
# RemoteStreamOptions (a flag set of 4 bits), PipelineResultTypes None.
_ENUMS = {
    "System.Management.Automation.Runspaces.ApartmentState": {"0", "1", "2"},
    "System.Management.Automation.Runspaces.RemoteStreamOptions": {str(i) for i in range(16)},
    "System.Management.Automation.Runspaces.PipelineResultTypes": {"0"},
}
_INT32 = re.compile(r"-?[0-9]{1,10}")


class _NotPlain(Exception):
    """The message is not of the plain shape: let psrpcore read it."""


def plain_commands(data: bytes) -> list[Command] | None:
    """The commands of a CreatePipeline message's CLIXML, or None when psrpcore must read it."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError:
        return None
    try:
        return _Reader().commands(root)
    except _NotPlain:
        return None


class _Reader:
    """One message's reading: the type-name lists it declared so far (for TNRef)."""

    def __init__(self) -> None:
        self.type_names: dict[str, str] = {}  # TN RefId -> first type name

    def commands(self, root: ET.Element) -> list[Command]:
        top = self._members(root, _TOP)
        self._enum(top["ApartmentState"])
        self._enum(top["RemoteStreamOptions"])
        host = self._members(top["HostInfo"], {name: "B" for name in _HOST_FLAGS})
        for flag in host.values():
            _boolean(flag)
        powershell = self._members(top["PowerShell"], _POWERSHELL)
        items = self._list(powershell["Cmds"])
        if not items:
            raise _NotPlain
        return [self._command(item) for item in items]

    def _command(self, element: ET.Element) -> Command:
        wanted = {"Cmd": "S", "IsScript": "B", "UseLocalScope": "Nil", "Args": "Obj"}
        wanted.update({name: "Obj" for name in _MERGES})
        members = self._members(element, wanted)
        for name in _MERGES:
            self._enum(members[name])
        params: list[tuple[str | None, Any]] = []
        for argument in self._list(members["Args"]):
            pair = self._members(argument, {"N": "", "V": ""})
            name = _value(pair["N"])
            if name is not None and not isinstance(name, str):
                raise _NotPlain
            params.append((name, _value(pair["V"])))
        return Command(_string(members["Cmd"]), params, _boolean(members["IsScript"]))

    def _members(self, element: ET.Element, wanted: dict[str, str]) -> dict[str, ET.Element]:
        """The children of an Obj that has only an MS, each named once, exactly ``wanted``
        (the element each must be, or ``""``: a plain value)."""
        if element.tag != "Obj" or len(element) != 1 or element[0].tag != "MS":
            raise _NotPlain
        members: dict[str, ET.Element] = {}
        for child in element[0]:
            name = child.get("N")
            kind = wanted.get(name) if name is not None else None
            if kind is None or name in members or (kind and child.tag != kind):
                raise _NotPlain
            members[name] = child  # type: ignore[index]
        if len(members) != len(wanted):
            raise _NotPlain
        return members

    def _types(self, element: ET.Element) -> str:
        """The first type name of an Obj's TN (recording it) or TNRef."""
        tag = element.tag
        ref = element.get("RefId")
        if ref is None:
            raise _NotPlain
        if tag == "TNRef":
            if len(element) or ref not in self.type_names:
                raise _NotPlain
            return self.type_names[ref]
        if tag != "TN" or not len(element) or any(t.tag != "T" or len(t) for t in element):
            raise _NotPlain
        first = element[0].text or ""
        self.type_names[ref] = first
        return first

    def _enum(self, element: ET.Element) -> None:
        """An enum value psrpcore reads as it is: TN or TNRef, ToString, I32."""
        if len(element) != 3 or element[1].tag != "ToString" or element[2].tag != "I32":
            raise _NotPlain
        allowed = _ENUMS.get(self._types(element[0]))
        if allowed is None or element[2].text not in allowed:
            raise _NotPlain

    def _list(self, element: ET.Element) -> list[ET.Element]:
        """The items of an Obj holding a generic List (TN or TNRef, then LST)."""
        if element.tag != "Obj" or len(element) != 2 or element[1].tag != "LST":
            raise _NotPlain
        if not self._types(element[0]).startswith("System.Collections.Generic.List`1["):
            raise _NotPlain
        return list(element[1])


def _string(element: ET.Element) -> str:
    """An S element's text, when it holds no ``_xHHHH_`` escape (psrpcore decodes those)."""
    if element.tag != "S" or len(element):
        raise _NotPlain
    text = element.text or ""
    if "_x" in text or "_X" in text:
        raise _NotPlain
    return text


def _boolean(element: ET.Element) -> bool:
    if element.tag != "B" or len(element) or element.text not in ("true", "false"):
        raise _NotPlain
    return element.text == "true"


def _value(element: ET.Element) -> Any:
    """A plain argument value: a string, a boolean, a 32-bit integer or null."""
    tag = element.tag
    if tag == "S":
        return _string(element)
    if tag == "B":
        return _boolean(element)
    if tag == "Nil":
        if len(element) or element.text:
            raise _NotPlain
        return None
    if tag == "I32":
        text = element.text or ""
        if len(element) or not _INT32.fullmatch(text):
            raise _NotPlain
        number = int(text)
        if not -(2**31) <= number < 2**31:
            raise _NotPlain
        return number
    raise _NotPlain
