"""Structural checks: pydantic's verdict on a document, in plain words at YAML positions.

Pydantic reports errors by ``loc`` (a path through the *model*, which also names union
members and discriminator tags); here each ``loc`` is walked together with the data and the
model classes so the problem points at the exact key or value in the file, names the document
path, and unknown keys get a did-you-mean from the model's own field names.
"""

from __future__ import annotations

import difflib
import math
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from plans.loader import Marks, describe
from plans.problems import DocPath, Problem

Loc = tuple[int | str, ...]


def structural_problems(
    model: type[BaseModel], data: Any, marks: Marks, file: str, prefix: DocPath = ()
) -> list[Problem]:
    """Validate ``data`` against ``model``; every error as a :class:`Problem` (none if valid)."""
    return validated_structure(model, data, marks, file, prefix)[1]


def validated_structure(
    model: type[BaseModel], data: Any, marks: Marks, file: str, prefix: DocPath = ()
) -> tuple[Any, list[Problem]]:
    """Validate ``data`` against ``model``: the model object and no problems when it is
    valid, else None and every error as a :class:`Problem`."""
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        return None, _problems_from(exc, model, data, marks, file, prefix)


def _problems_from(
    exc: ValidationError,
    model: type[BaseModel],
    data: Any,
    marks: Marks,
    file: str,
    prefix: DocPath,
) -> list[Problem]:
    problems: list[Problem] = []
    seen_paths: set[DocPath] = set()
    for error in exc.errors(include_url=False):
        loc: Loc = tuple(error["loc"])
        path, owner, through_union = _walk(model, data, loc)
        full = (*prefix, *path)
        kind = error["type"]
        if kind == "extra_forbidden":
            key = str(loc[-1])
            line, col = marks.key(full)
            message = _unknown_key(key, owner)
        elif kind == "missing":
            line, col = marks.value(full)
            where = f" in {_describe_owner(owner)}" if owner is not None else ""
            message = f"missing required key {str(loc[-1])!r}{where}"
            full = (*full, str(loc[-1]))
        else:
            if through_union and full in seen_paths:
                continue  # one message per value is enough when several union members failed
            line, col = marks.value(full)
            message = _message(error, loc)
        seen_paths.add(full)
        problems.append(Problem(file, line, col, message, full))
    return problems


def _walk(model: type[BaseModel], data: Any, loc: Loc) -> tuple[DocPath, Any, bool]:
    """Follow ``loc`` through the data and the types at once.

    Returns the data path reached, the model class that owns the last step (for unknown and
    missing keys), and whether a union member name was skipped on the way.
    """
    path: list[str | int] = []
    current_type: Any = model
    current_data = data
    owner: Any = model
    through_union = False
    for index, part in enumerate(loc):
        is_last = index == len(loc) - 1
        current_type = _unwrap(current_type)
        member = _union_member(current_type, part)
        if member is not None:
            # ``part`` names a union member (a discriminator tag or a type name), not data.
            current_type = member
            through_union = True
            continue
        if _is_union(current_type):
            current_type = _single_member(current_type)
        model_class = _as_model(current_type)
        if model_class is not None:
            owner = model_class
        if _has_child(current_data, part):
            path.append(part)
            current_data = current_data[part]
        elif not is_last:
            continue  # a model-internal step (validator wrapper) without data of its own
        current_type = _step_type(current_type, part)
    return tuple(path), owner, through_union


def _has_child(data: Any, part: int | str) -> bool:
    if isinstance(data, dict):
        return isinstance(part, str) and part in data
    if isinstance(data, list):
        return isinstance(part, int) and 0 <= part < len(data)
    return False


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _members(tp: Any) -> list[Any]:
    return [_unwrap(arg) for arg in typing.get_args(tp) if arg is not type(None)]


def _single_member(tp: Any) -> Any:
    members = _members(tp)
    return members[0] if len(members) == 1 else tp


def _union_member(tp: Any, part: int | str) -> Any:
    if not _is_union(tp) or not isinstance(part, str):
        return None
    members = _members(tp)
    for member in members:
        model_class = _as_model(member)
        if model_class is not None:
            kind = model_class.model_fields.get("kind")
            if kind is not None and part in typing.get_args(kind.annotation):
                return member
        if getattr(member, "__name__", None) == part:
            return member
    if len(members) > 1 and part not in _field_names(members):
        return typing.Any  # an unnamed member (pydantic's own label); nothing to learn from it
    return None


def _field_names(members: list[Any]) -> set[str]:
    names: set[str] = set()
    for member in members:
        model_class = _as_model(member)
        if model_class is not None:
            names.update(model_class.model_fields)
    return names


def _as_model(tp: Any) -> type[BaseModel] | None:
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    return None


def _step_type(tp: Any, part: int | str) -> Any:
    tp = _unwrap(tp)
    model_class = _as_model(tp)
    if model_class is not None:
        field = model_class.model_fields.get(str(part))
        return field.annotation if field is not None else typing.Any
    origin = typing.get_origin(tp)
    if origin is list:
        return typing.get_args(tp)[0]
    if origin is dict:
        return typing.get_args(tp)[1]
    return typing.Any


def _describe_owner(owner: Any) -> str:
    name = getattr(owner, "__name__", str(owner))
    return _OWNER_WORDS.get(name, name)


_OWNER_WORDS = {
    "Document": "the document",
    "Fabric": "the fabric",
    "Credential": "a credential",
    "Endpoint": "a host endpoint",
    "VmmServer": "a VMM server",
    "Network": "a network",
    "Site": "a site",
    "CloudRef": "a cloud reference",
    "InitialReplication": "initial_replication",
    "ProtectionProfile": "a protection profile",
    "ProtectedVM": "a protected VM",
    "Pairing": "a pairing",
    "NetworkRef": "a network reference",
    "NetworkMapping": "a network mapping",
    "StorageRef": "a storage reference",
    "StorageMapping": "a storage mapping",
    "DnsZone": "a DNS zone",
    "ScriptAction": "a script action",
    "ManualAction": "a manual action",
    "WaitForIpAction": "a wait_for_ip action",
    "UpdateDnsAction": "an update_dns action",
    "HealthCheckAction": "a health_check action",
    "DnsRecord": "a DNS record",
    "PlanVM": "a VM entry",
    "Group": "a group",
    "RecoveryPlan": "a recovery plan",
}


def _unknown_key(key: str, owner: Any) -> str:
    model_class = _as_model(owner)
    if model_class is None:
        return f"unknown key {key!r}"
    allowed = sorted(model_class.model_fields)
    where = _OWNER_WORDS.get(model_class.__name__, model_class.__name__)
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        return f"unknown key {key!r} in {where}; did you mean {close[0]!r}?"
    return f"unknown key {key!r} in {where}; allowed keys: {', '.join(allowed)}"


_TYPE_WORDS = {
    "string_type": "text",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "dict_type": "a mapping (key: value)",
    "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
    "list_type": "a list",
    "datetime_type": "a date and time such as 2026-12-01T22:00:00Z",
    "datetime_parsing": "a date and time such as 2026-12-01T22:00:00Z",
    "datetime_from_date_parsing": "a date and time such as 2026-12-01T22:00:00Z",
}

_KIND_TAGS = "script, manual, wait_for_ip, update_dns, health_check"


def _message(error: Any, loc: Loc) -> str:
    """Pydantic's error in the words of the file format."""
    kind: str = error["type"]
    ctx: dict[str, Any] = error.get("ctx") or {}
    value = error.get("input")
    field = next((str(p) for p in reversed(loc) if isinstance(p, str)), "")
    if kind in _BOUND_KINDS and isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if kind in _TYPE_WORDS:
        return f"expected {_TYPE_WORDS[kind]}, got {describe(value)}"
    if kind in ("literal_error", "enum"):
        return f"must be one of {ctx.get('expected')}, got {_show(value)}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_too_long":
        return f"is longer than {ctx.get('max_length')} characters"
    if kind == "too_short":
        least = ctx.get("min_length")
        return f"needs at least {least} entr{'y' if least == 1 else 'ies'}"
    if kind == "too_long":
        return f"has more than {ctx.get('max_length')} entries"
    if kind == "greater_than_equal":
        return f"must be at least {_bound(ctx.get('ge'))}, got {_show(value)}"
    if kind == "greater_than":
        return f"must be greater than {_bound(ctx.get('gt'))}, got {_show(value)}"
    if kind == "less_than_equal":
        return f"must be at most {_bound(ctx.get('le'))}, got {_show(value)}"
    if kind == "less_than":
        return f"must be less than {_bound(ctx.get('lt'))}, got {_show(value)}"
    if kind == "finite_number":
        return "must be a finite number"
    if kind == "string_pattern_mismatch":
        if field == "url":
            # A URL with user information may hold a password: never repeat it.
            shown = "the URL" if isinstance(value, str) and "@" in value else _show(value)
            return f"{shown} is not a WinRM URL; write it like 'https://host:5986/wsman'"
        return f"{_show(value)} does not have the expected form ({ctx.get('pattern')})"
    if kind == "union_tag_invalid":
        return f"unknown action kind {_show(ctx.get('tag'))}; use one of {_KIND_TAGS}"
    if kind == "union_tag_not_found":
        return f"an action needs a 'kind': one of {_KIND_TAGS}"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    return str(error.get("msg", "invalid value"))


_BOUND_KINDS = ("greater_than_equal", "greater_than", "less_than_equal", "less_than")


def _bound(limit: Any) -> str:
    """A bound as written in the format: 2592000, not 2592000.0."""
    if isinstance(limit, float) and limit.is_integer():
        return str(int(limit))
    return str(limit)


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    return describe(value) if isinstance(value, dict | list) or value is None else repr(value)
