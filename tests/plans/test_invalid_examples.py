"""plans/examples/invalid: each broken file produces exactly the problems it documents."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

import plans
from plans import loader
from tests.plans.conftest import EXAMPLES

INVALID = EXAMPLES / "invalid"
CASES = sorted(path.stem for path in INVALID.glob("*.expected"))


def rendered(problem: plans.Problem, example: Path) -> str:
    """``LINE:COL: message``, prefixed with the file when it is another file."""
    text = str(problem)[len(problem.file) + 1 :]
    if os.path.realpath(problem.file) == os.path.realpath(example):
        return text
    return f"{os.path.relpath(problem.file, INVALID)}:{text}"


def pattern(expected: str) -> re.Pattern[str]:
    """The expected line as a regex: literal text, where ``...`` matches anything."""
    return re.compile(".*".join(re.escape(part) for part in expected.split("...")) + "$")


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 12
    assert {p.stem for p in INVALID.glob("*.yaml")} == set(CASES)


@pytest.fixture(params=["libyaml", "pure-python"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run with libyaml's parser (when PyYAML has it) and with PyYAML's own: same results."""
    if request.param == "pure-python":
        monkeypatch.setattr(loader, "_PARSER", yaml.SafeLoader)
    return str(request.param)


@pytest.mark.parametrize("name", CASES)
def test_invalid_example(name: str, parser: str) -> None:
    example = INVALID / f"{name}.yaml"
    expected = (INVALID / f"{name}.expected").read_text(encoding="utf-8").splitlines()
    report = plans.validate([example])
    got = [rendered(p, example) for p in report.problems]
    assert len(got) == len(expected), got
    for line, want in zip(got, expected, strict=True):
        assert pattern(want).match(line), f"\n got: {line}\nwant: {want}"
    if name == "unmapped-network":
        assert report.bundle is not None and report.warnings
    else:
        assert report.bundle is None
