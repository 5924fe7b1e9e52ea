"""Fuzzing the loader: whatever the bytes, validate() returns problems and never raises."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import plans
from tests.plans.conftest import EXAMPLES


def fuzz(examples: int) -> settings:
    """Enough examples to matter, small inputs, no deadline (CI machines vary), no database."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


FABRIC = yaml.safe_load((EXAMPLES / "fabric.yaml").read_text())
PLAN = yaml.safe_load((EXAMPLES / "three-tier.yaml").read_text())

YAML_PIECES = st.sampled_from(
    [
        "version: 1\n",
        "fabric:\n",
        "plans:\n",
        "  p:\n",
        "    groups:\n",
        "      - name: g\n",
        "- ",
        ": ",
        "{",
        "}",
        "[",
        "]",
        ",",
        "&a ",
        "*a ",
        "!!str ",
        "!tag ",
        "<<: ",
        "? ",
        "---\n",
        "...\n",
        "|\n",
        ">\n",
        "\t",
        "  ",
        "\n",
        "#",
        '"',
        "'",
        "\\",
        "%YAML 1.1\n",
        "null",
        "~",
        "yes",
        "1e400",
        "0x1F",
        "2026-12-01T10:00:00Z",
        ".inf",
        "-.nan",
        "\x85",
        "\ufeff",
        "é",
        "\x00",
        "include: [x.yaml]\n",
        "include: [a.yaml]\n",
    ]
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["gold", "stockholm", "hv-sto-1", "sql-01", "corp-sto", "5m", "script"]),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.text(max_size=8) | st.sampled_from(list(plans.Document.model_fields)),
            children,
            max_size=4,
        ),
    ),
    max_leaves=25,
)


def check(path: Path) -> plans.ValidationReport:
    report = plans.validate([path])
    assert isinstance(report, plans.ValidationReport)
    for problem in report.problems:
        assert isinstance(problem.message, str) and problem.message
        assert "\n" not in str(problem) and str(problem).isprintable()
        assert problem.line >= 0 and problem.col >= 0
    if report.bundle is None:
        assert report.errors
    return report


@fuzz(1500)
@given(data=st.binary(max_size=300))
def test_random_bytes(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(data)
    check(path)


@fuzz(1500)
@given(pieces=st.lists(YAML_PIECES, max_size=30))
def test_yaml_shaped_text(tmp_path: Path, pieces: list[str]) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("".join(pieces), encoding="utf-8", errors="surrogatepass")
    check(path)


@fuzz(700)
@given(document=documents)
def test_random_documents(tmp_path: Path, document: Any) -> None:
    path = tmp_path / "doc.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    check(path)


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(data, dict):
        for key, value in data.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += _paths(value, (*prefix, index))
    return found


FABRIC_PATHS = _paths(FABRIC)
PLAN_PATHS = _paths(PLAN)


@fuzz(400)
@given(
    edits=st.lists(
        st.tuples(
            st.booleans(),
            st.integers(min_value=0, max_value=10**6),
            st.one_of(scalars, st.just("__delete__"), st.just([]), st.just({})),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_mutated_examples(tmp_path: Path, edits: list[tuple[bool, int, Any]]) -> None:
    fabric, plan = copy.deepcopy(FABRIC), copy.deepcopy(PLAN)
    for in_fabric, pick, value in edits:
        doc, paths = (fabric, FABRIC_PATHS) if in_fabric else (plan, PLAN_PATHS)
        path = paths[pick % len(paths)]
        parent: Any = doc
        try:
            for part in path[:-1]:
                parent = parent[part]
            if value == "__delete__":
                del parent[path[-1]]
            else:
                parent[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit removed or replaced this path
    (tmp_path / "fabric.yaml").write_text(yaml.safe_dump(fabric, allow_unicode=True))
    plan_path = tmp_path / "three-tier.yaml"
    plan_path.write_text(yaml.safe_dump(plan, allow_unicode=True))
    check(plan_path)
