"""The file format as JSON Schema, and the key reference of ``plans/FORMAT.md``, both from
the model, so the documentation cannot drift from what the loader accepts.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, BeforeValidator
from pydantic.fields import FieldInfo

from plans import model
from plans.model import Document

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

# (where the object appears in a document, the class), in reading order for the reference.
REFERENCE_ORDER: tuple[tuple[str, type[BaseModel]], ...] = (
    ("top level", model.Document),
    ("fabric", model.Fabric),
    ("fabric.credentials.NAME", model.Credential),
    ("fabric.sites.NAME", model.Site),
    ("fabric.sites.NAME.vmm", model.VmmServer),
    ("fabric.sites.NAME.hosts.HOST", model.Endpoint),
    ("fabric.sites.NAME.networks.NAME", model.Network),
    ("fabric.pairings.NAME", model.Pairing),
    ("fabric.pairings.NAME.primary / .recovery", model.CloudRef),
    ("fabric.pairings.NAME.profile", model.ProtectionProfile),
    ("fabric.pairings.NAME.profile.initial_replication", model.InitialReplication),
    ("fabric.pairings.NAME.vms.VM", model.ProtectedVM),
    ("fabric.network_mappings[]", model.NetworkMapping),
    ("fabric.network_mappings[].source / .target", model.NetworkRef),
    ("fabric.storage_mappings[]", model.StorageMapping),
    ("fabric.storage_mappings[].source / .target", model.StorageRef),
    ("fabric.dns_zones.ZONE", model.DnsZone),
    ("plans.NAME", model.RecoveryPlan),
    ("plans.NAME.groups[]", model.Group),
    ("plans.NAME.groups[].vms[]", model.PlanVM),
    ("plans.NAME.groups[].vms[].dns[]", model.DnsRecord),
    ("pre[] / post[] with kind: script", model.ScriptAction),
    ("pre[] / post[] with kind: manual", model.ManualAction),
    ("pre[] / post[] with kind: wait_for_ip", model.WaitForIpAction),
    ("pre[] / post[] with kind: update_dns", model.UpdateDnsAction),
    ("pre[] / post[] with kind: health_check", model.HealthCheckAction),
)


def document_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of one plan/fabric file, with a description on every key."""
    schema = Document.model_json_schema()
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": "ferryman:plan-file:v1",
        **schema,
        "title": "Ferryman plan and fabric file, version 1",
    }


def reference_markdown() -> str:
    """The key reference: one table per object (key, type, default, meaning)."""
    lines: list[str] = []
    for where, cls in REFERENCE_ORDER:
        doc = (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        lines += [f"### `{where}` ({cls.__name__})", "", doc, ""]
        lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
        for name, info in cls.model_fields.items():
            meaning = (info.description or "").replace("|", "\\|")
            lines.append(f"| `{name}` | {_type_text(info)} | {_default_text(info)} | {meaning} |")
        lines.append("")
    return "\n".join(lines)


def _type_text(info: FieldInfo) -> str:
    if _is_duration(info.metadata):
        return "duration"
    if info.annotation is str and _is_name(info.metadata):
        return "name"
    return _annotation_text(info.annotation)


def _is_name(metadata: list[Any]) -> bool:
    """Whether constraints mark a ``Name`` (non-empty text of bounded length)."""
    for item in metadata:
        if getattr(item, "max_length", None):
            return True
        if isinstance(item, FieldInfo) and _is_name(item.metadata):
            return True
    return False


def _is_duration(metadata: list[Any]) -> bool:
    return any(isinstance(m, BeforeValidator) and m.func is model._parse_duration for m in metadata)


def _annotation_text(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        if _is_duration(list(args[1:])):
            return "duration"
        if args[0] is str and _is_name(list(args[1:])):
            return "name"
        return _annotation_text(args[0])
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = [_annotation_text(a) for a in args if a is not type(None)]
        text = " or ".join(parts)
        return f"{text} (optional)" if type(None) in args else text
    if origin is list:
        return f"list of {_annotation_text(args[0])}"
    if origin is dict:
        return f"mapping of {_annotation_text(args[0])} to {_annotation_text(args[1])}"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp.__name__
    if isinstance(tp, type) and issubclass(tp, str) and tp is not str:
        return " \\| ".join(f"`{member}`" for member in tp.__members__.values())  # type: ignore[attr-defined]
    return {str: "text", int: "integer", float: "number", bool: "boolean"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _default_text(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            return "(all defaults)"
    else:
        value = info.default
    if value is None:
        return "none"
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]" if value else "[]"
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, bool):
        return str(value).lower()
    if value == "":
        return '""'
    return f"`{value}`"
