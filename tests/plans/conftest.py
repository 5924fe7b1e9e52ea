"""Fixtures for the plan tests: the example files as data, and a way to validate variants."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

import plans
from plans import ValidationReport

EXAMPLES = Path(__file__).resolve().parents[2] / "plans" / "examples"


def set_at(data: Any, path: tuple[Any, ...], value: Any) -> None:
    """Set ``data[path[0]][path[1]]... = value`` (creating mappings on the way)."""
    for part in path[:-1]:
        data = data.setdefault(part, {}) if isinstance(data, dict) else data[part]
    data[path[-1]] = value


class World:
    """The example fabric and three-tier plan as editable data, validated from a temp dir."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.fabric_doc: dict[str, Any] = yaml.safe_load((EXAMPLES / "fabric.yaml").read_text())
        self.plan_doc: dict[str, Any] = yaml.safe_load((EXAMPLES / "three-tier.yaml").read_text())

    @property
    def fabric(self) -> dict[str, Any]:
        """The ``fabric`` mapping."""
        return self.fabric_doc["fabric"]

    @property
    def plan(self) -> dict[str, Any]:
        """The ``three-tier`` plan mapping."""
        return self.plan_doc["plans"]["three-tier"]

    def set(self, path: tuple[Any, ...], value: Any) -> World:
        """Set a value by path from the bundle root: ("fabric", ...) or ("plans", ...)."""
        doc = self.fabric_doc if path[0] == "fabric" else self.plan_doc
        set_at(doc, path, copy.deepcopy(value))
        return self

    def write(self) -> Path:
        """Write both files; return the plan file's path."""
        (self.directory / "fabric.yaml").write_text(
            yaml.safe_dump(self.fabric_doc, sort_keys=False)
        )
        plan_path = self.directory / "three-tier.yaml"
        plan_path.write_text(yaml.safe_dump(self.plan_doc, sort_keys=False))
        return plan_path

    def validate(self, now: datetime | None = None) -> ValidationReport:
        """Write the files and validate the plan file (which includes the fabric)."""
        return plans.validate([self.write()], now=now)


@pytest.fixture
def world(tmp_path: Path) -> World:
    """A fresh copy of the example world in a temporary directory."""
    return World(tmp_path)


@pytest.fixture
def write_file(tmp_path: Path) -> Callable[[str, str | bytes], Path]:
    """Write text or bytes to a file in the test's temp directory."""

    def write(name: str, content: str | bytes) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    return write
