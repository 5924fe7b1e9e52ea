"""Lab objects to psrpcore objects, shaped the way a Windows host serialises cmdlet output.

A real Hyper-V cmdlet's output reaches a remote client as a deserialised object whose native
.NET properties are *adapted* properties (``<Props>`` in CLIXML) and whose enum values carry
their type name, name (``<ToString>``) and number. Workers compare enum values by name, so the
lab must send the same shape; ``pypsrp`` then shows them as ``adapted_properties`` whose
``str()`` is the enum name.
"""

from __future__ import annotations

import datetime
import enum
import threading
import uuid
from typing import Any

from psrpcore.types import (
    ErrorCategory,
    ErrorCategoryInfo,
    ErrorRecord,
    NETException,
    PSNoteProperty,
    PSObject,
)
from psrpcore.types._base import PSObjectMeta

from lab.objects import ErrorInfo, LabEnum, LabObject

_ENUM_BASE_TYPES = ["System.Enum", "System.ValueType", "System.Object"]

# One Python enum class per (.NET type, name, value): psrpcore serialises enum *members*, and
# the lab only knows the member it is sending, so each is built on first use and reused.
_enum_cache: dict[tuple[str, str, int], enum.Enum] = {}
_enum_lock = threading.Lock()
_make_enum: Any = enum.Enum  # the functional API, typed loosely: the member name is dynamic


def to_ps_enum(value: LabEnum) -> enum.Enum:
    """Return an enum member that psrpcore serialises as ``value``'s .NET enum."""
    key = (value.type_name, value.name, value.value)
    with _enum_lock:
        member = _enum_cache.get(key)
        if member is None:
            cls = _make_enum(value.type_name.rsplit(".", 1)[-1], [(value.name, value.value)])
            member = cls[value.name]
            # The serializer reads the .NET type names from a ``PSObject`` attribute when the
            # value has one; an enum member accepts instance attributes.
            member.PSObject = PSObjectMeta([value.type_name, *_ENUM_BASE_TYPES])
            _enum_cache[key] = member
    return member


def to_ps_object(obj: LabObject) -> PSObject:
    """Return a PSObject with ``obj``'s type names and its properties as adapted properties."""
    ps = PSObject()
    names = list(obj.type_names)
    if not names or names[-1] != "System.Object":
        names.append("System.Object")  # every .NET type ends there, as real CLIXML shows
    ps.PSObject.type_names = names
    for name, raw in obj.properties.items():
        ps.PSObject.adapted_properties.append(PSNoteProperty(name, value=to_ps_value(raw)))
    if obj.to_string is not None:
        ps.PSObject.to_string = obj.to_string
    return ps


def to_ps_value(value: Any) -> Any:
    """Convert one property or output value to what psrpcore can serialise."""
    if isinstance(value, LabObject):
        return to_ps_object(value)
    if isinstance(value, LabEnum):
        return to_ps_enum(value)
    if isinstance(value, (list, tuple)):
        return [to_ps_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_ps_value(v) for k, v in value.items()}
    if value is None or isinstance(
        value, (bool, int, float, str, datetime.datetime, datetime.timedelta, uuid.UUID, bytes)
    ):
        return value
    # Anything else goes over as its text, the way PowerShell serialises an unknown type
    # beyond the serialisation depth.
    return str(value)


def _category(name: str) -> ErrorCategory:
    try:
        return ErrorCategory[name]
    except KeyError:
        return ErrorCategory.NotSpecified


def to_error_record(info: ErrorInfo, *, activity: str = "") -> ErrorRecord:
    """Build the ErrorRecord a cmdlet would write for ``info``."""
    exception = NETException(Message=info.message, HResult=-2146233087)
    exception.PSObject.type_names = [
        info.exception_type,
        "System.Exception",
        "System.Object",
    ]
    target = info.target_object
    target_name = "" if target is None else str(target)
    target_type = "" if target is None else type(target).__name__
    if isinstance(target, LabObject):
        target_type = target.type_names[0] if target.type_names else ""
        target_name = target.to_string or target_name
    category = ErrorCategoryInfo(
        Category=_category(info.category),
        Activity=activity,
        Reason=info.exception_type.rsplit(".", 1)[-1],
        TargetName=target_name,
        TargetType=target_type,
    )
    return ErrorRecord(
        Exception=exception,
        CategoryInfo=category,
        TargetObject=to_ps_value(target),
        FullyQualifiedErrorId=info.fully_qualified_error_id,
    )
