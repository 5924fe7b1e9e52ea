"""Turning what pypsrp deserialises into plain Python: output dicts and :class:`PSError`.

pypsrp hands back CLIXML objects as ``GenericComplexObject`` (adapted + extended properties, a
``to_string`` and the type names), primitives as Python values, ``DateTime``/``TimeSpan`` as
their XML text, and ``ErrorRecord`` objects for errors. An enum (type names include
``System.Enum``) becomes its *name* — the object's ToString — because Hyper-V renumbers enums
between module versions while names stay stable.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from typing import Any

from pypsrp.complex_objects import ComplexObject, GenericComplexObject

from workers.powershell import PSError

# System.Management.Automation.ErrorCategory, by value (stable since PowerShell 1.0).
ERROR_CATEGORIES = [
    "NotSpecified",
    "OpenError",
    "CloseError",
    "DeviceError",
    "DeadlockDetected",
    "InvalidArgument",
    "InvalidData",
    "InvalidOperation",
    "InvalidResult",
    "InvalidType",
    "MetadataError",
    "NotImplemented",
    "NotInstalled",
    "ObjectNotFound",
    "OperationStopped",
    "OperationTimeout",
    "SyntaxError",
    "ParserError",
    "PermissionDenied",
    "ResourceBusy",
    "ResourceExists",
    "ResourceUnavailable",
    "ReadError",
    "WriteError",
    "FromStdErr",
    "SecurityError",
    "ProtocolError",
    "ConnectionError",
    "AuthenticationError",
    "LimitsExceeded",
    "QuotaExceeded",
    "NotEnabled",
]

_MAX_DEPTH = 6


def flatten(value: Any, depth: int = 0) -> Any:
    """Convert one deserialised value into dicts, lists and primitives (enums by name)."""
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return value
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, GenericComplexObject):
        if _is_enum(value.types):
            return str(value)
        if depth >= _MAX_DEPTH:
            # Deep object graphs (a VM's host, its host's VMs, ...) are cut to their text.
            return str(value)
        props: dict[str, Any] = {}
        for source in (value.adapted_properties, value.extended_properties):
            for key, item in source.items():
                props[str(key)] = flatten(item, depth + 1)
        if not props:
            # A primitive wrapped with a type name (e.g. a Deserialized IPAddress) or a value
            # with only a ToString: its text is what the caller wants.
            if value.property_sets:
                return flatten(value.property_sets[0], depth + 1)
            return str(value) if value.to_string is not None else None
        return props
    if isinstance(value, Mapping):
        return {str(flatten(k, depth + 1)): flatten(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [flatten(item, depth + 1) for item in value]
    if isinstance(value, ComplexObject):
        return str(value)
    return str(value)


def output_object(value: Any) -> dict[str, Any]:
    """One pipeline output object as a dict; a bare value becomes ``{"Value": value}``."""
    flat = flatten(value)
    if isinstance(flat, dict):
        return flat
    return {"Value": flat}


def error_from_record(record: Any) -> PSError:
    """A :class:`PSError` from an ErrorRecord (or anything that only has a text)."""
    fq_error = _text(getattr(record, "fq_error", None))
    message = _exception_message(getattr(record, "exception", None))
    if not message:
        message = _text(getattr(record, "details_message", None)) or str(record)
    category_value = getattr(record, "category", None)
    if isinstance(category_value, int) and 0 <= category_value < len(ERROR_CATEGORIES):
        category = ERROR_CATEGORIES[category_value]
    else:
        category = _text(category_value)
    target = _text(getattr(record, "target_name", None))
    return PSError(
        message=message, fully_qualified_error_id=fq_error, category=category, target=target
    )


def _is_enum(types: list[str]) -> bool:
    return any(t in ("System.Enum", "Deserialized.System.Enum") for t in types)


def _exception_message(exception: Any) -> str:
    if isinstance(exception, GenericComplexObject):
        for source in (exception.adapted_properties, exception.extended_properties):
            message = source.get("Message")
            if message:
                return str(message)
        return str(exception) if exception.to_string else ""
    return _text(exception)


def _text(value: Any) -> str:
    return "" if value is None else str(value)
