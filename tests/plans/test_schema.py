"""The exported JSON Schema accepts the examples and refuses what the loader refuses."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from plans.loader import LoadedFile, load_file
from plans.schema import document_schema, reference_markdown
from tests.plans.conftest import EXAMPLES

FORMAT_MD = Path(__file__).resolve().parents[2] / "plans" / "FORMAT.md"


def as_json(value: Any) -> Any:
    """YAML data as JSON would carry it (timestamps become ISO strings)."""
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_json(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def data_of(path: Path) -> Any:
    loaded = load_file(path)
    assert isinstance(loaded, LoadedFile)
    return as_json(loaded.data)


@pytest.mark.parametrize("name", ["fabric.yaml", "three-tier.yaml"])
def test_examples_match_the_schema(name: str) -> None:
    validator = jsonschema.Draft202012Validator(document_schema())
    errors = [e.message for e in validator.iter_errors(data_of(EXAMPLES / name))]
    assert errors == []


@pytest.mark.parametrize(
    "name",
    ["unknown-key-did-you-mean.yaml", "unknown-action-kind.yaml", "wrong-type.yaml"],
)
def test_structurally_broken_examples_fail_the_schema(name: str) -> None:
    validator = jsonschema.Draft202012Validator(document_schema())
    assert not validator.is_valid(data_of(EXAMPLES / "invalid" / name))


def test_schema_is_a_valid_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(document_schema())


def test_every_key_is_described() -> None:
    for name, definition in document_schema()["$defs"].items():
        assert definition.get("description"), name
        for key, prop in definition.get("properties", {}).items():
            assert prop.get("description"), f"{name}.{key}"


def test_format_md_carries_the_current_key_reference() -> None:
    assert reference_markdown() in FORMAT_MD.read_text(encoding="utf-8"), (
        "plans/FORMAT.md is out of date: paste the output of "
        "python -c 'from plans.schema import reference_markdown; print(reference_markdown())'"
    )
