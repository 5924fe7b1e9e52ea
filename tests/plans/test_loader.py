"""Hostile and broken input: each gives one clear problem with a position, never a traceback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import plans
from plans import loader
from plans.loader import MAX_ALIASES, MAX_DEPTH, MAX_FILE_BYTES, load_file

Write = Callable[[str, str | bytes], Path]


def only_problem(path: Path) -> plans.Problem:
    report = plans.validate([path])
    assert report.bundle is None
    assert len(report.problems) == 1, [str(p) for p in report.problems]
    return report.problems[0]


def test_marks_are_one_based_line_and_column(write_file: Write) -> None:
    path = write_file("a.yaml", "version: 1\nplans:\n  p:\n    groups:\n      - name: g\n")
    loaded = load_file(path)
    assert isinstance(loaded, loader.LoadedFile)
    assert loaded.marks.key(("plans", "p", "groups")) == (4, 5)
    assert loaded.marks.value(("plans", "p", "groups", 0, "name")) == (5, 15)
    # a path that does not exist points at its nearest ancestor
    assert loaded.marks.value(("plans", "p", "groups", 0, "vms", 3)) == (5, 9)


def test_keys_stay_text(write_file: Write) -> None:
    loaded = load_file(write_file("a.yaml", "yes: 1\n300: 2\nnull: 3\n"))
    assert isinstance(loaded, loader.LoadedFile)
    assert list(loaded.data) == ["yes", "300", "null"]


@pytest.mark.parametrize("content", ["", "   \n\n", "\ufeff"])
def test_empty_file(write_file: Write, content: str) -> None:
    problem = only_problem(write_file("empty.yaml", content))
    assert problem.message.startswith("the file is empty")


def test_comments_only(write_file: Write) -> None:
    problem = only_problem(write_file("c.yaml", "# nothing here\n"))
    assert "only comments" in problem.message


def test_binary_file(write_file: Write) -> None:
    problem = only_problem(write_file("b.yaml", b"version: 1\n\x00\x01\x02\xff\xfe"))
    assert "binary file" in problem.message
    assert (problem.line, problem.col) == (2, 1)


def test_not_utf8(write_file: Write) -> None:
    problem = only_problem(
        write_file("l.yaml", "version: 1\nname: G\xf6teborg\n".encode("latin-1"))
    )
    assert "not UTF-8" in problem.message and "0xf6" in problem.message
    assert (problem.line, problem.col) == (2, 8)


def test_control_character(write_file: Write) -> None:
    problem = only_problem(write_file("x.yaml", "version: 1\x07\n"))
    assert "control character (#x0007)" in problem.message


def test_billion_laughs_is_refused(write_file: Write) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    previous = "a"
    for name in "bcdefghi":
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 10) + "]")
        previous = name
    problem = only_problem(write_file("lol.yaml", "\n".join(lines) + "\n"))
    assert "expands to more than" in problem.message


def test_alias_flood_is_refused(write_file: Write) -> None:
    text = "a: &a x\nb: [" + ", ".join(["*a"] * (MAX_ALIASES + 1)) + "]\n"
    problem = only_problem(write_file("aliases.yaml", text))
    assert f"more than {MAX_ALIASES} aliases" in problem.message
    assert problem.line == 2


def test_a_few_aliases_are_fine(write_file: Write) -> None:
    loaded = load_file(write_file("ok.yaml", "a: &dns {zone: z, name: n}\nb: [*dns, *dns]\n"))
    assert isinstance(loaded, loader.LoadedFile)
    assert loaded.data["b"] == [{"zone": "z", "name": "n"}] * 2


def test_recursive_alias_is_refused(write_file: Write) -> None:
    problem = only_problem(write_file("r.yaml", "a: &a [1, *a]\n"))
    assert "alias refers to the value that contains it" in problem.message


@pytest.mark.parametrize("opener", ["[", "{a: ", "- "])
def test_deep_nesting_is_refused(write_file: Write, opener: str) -> None:
    # twice the limit: deeper than the loader allows, well within what any YAML parser accepts
    depth = MAX_DEPTH * 2
    if opener == "- ":
        text = "".join("  " * i + "-\n" for i in range(depth))
    else:
        closer = "]" if opener == "[" else "}"
        text = "x: " + opener * depth + "1" + closer * depth + "\n"
    problem = only_problem(write_file("deep.yaml", text))
    assert f"deeper than {MAX_DEPTH} levels" in problem.message


@pytest.mark.parametrize("opener", ["[", "{a: "])
def test_nesting_past_the_parsers_own_limit_is_one_error(write_file: Write, opener: str) -> None:
    # Some parser releases stop such a file first with a message of their own; either way the
    # file is refused with one error at its first line, never a crash.
    depth = MAX_DEPTH * 20
    closer = "]" if opener == "[" else "}"
    text = "x: " + opener * depth + "1" + closer * depth + "\n"
    problem = only_problem(write_file("deep.yaml", text))
    assert problem.severity is plans.Severity.ERROR
    assert problem.line == 1


def test_large_file_is_refused_before_parsing(write_file: Write) -> None:
    # 10 MB that would take a long time to parse: refused on size alone.
    big = write_file("big.yaml", "x: [" + "1, " * (10 * 1024 * 1024 // 3) + "]\n")
    problem = only_problem(big)
    assert f"larger than {MAX_FILE_BYTES // 1024} KiB" in problem.message
    assert (problem.line, problem.col) == (0, 0)


def test_tabs_give_yaml_error_with_position(write_file: Write) -> None:
    problem = only_problem(write_file("t.yaml", "version: 1\nplans:\n\tp: {}\n"))
    assert problem.message.startswith("YAML syntax error")
    assert "tabs" in problem.message
    assert (problem.line, problem.col) == (3, 1)


def test_syntax_error_is_one_line(write_file: Write) -> None:
    problem = only_problem(write_file("s.yaml", "plans: [a, b\n"))
    assert "\n" not in problem.message
    assert "expected ',' or ']'" in problem.message


def test_duplicate_keys_name_both_lines(write_file: Write) -> None:
    text = "version: 1\nplans: {}\nversion: 1\nplans: {}\n"
    report = plans.validate([write_file("d.yaml", text)])
    messages = sorted((p.line, p.message) for p in report.problems if "duplicate" in p.message)
    assert messages == [
        (3, "duplicate key 'version' (first defined on line 1); keep one"),
        (4, "duplicate key 'plans' (first defined on line 2); keep one"),
    ]


def test_top_level_must_be_a_mapping(write_file: Write) -> None:
    for text, kind in (("- a\n- b\n", "a list"), ("just text\n", "text"), ("42\n", "a number")):
        problem = only_problem(write_file("top.yaml", text))
        assert problem.message.startswith("the top level must be a mapping")
        assert kind in problem.message


def test_directory_given_as_file(tmp_path: Path) -> None:
    problem = only_problem(tmp_path)
    assert "is a directory" in problem.message


def test_missing_file(tmp_path: Path) -> None:
    problem = only_problem(tmp_path / "nope.yaml")
    assert problem.message == "file not found"


@pytest.mark.parametrize(
    "text",
    [
        "a: !!python/object/apply:os.system ['true']\n",
        "a: !!binary aGVsbG8=\n",
        "a: !custom 1\n",
        "a: !!set {x}\n",
        "a: !!omap [{x: 1}]\n",
    ],
)
def test_unsupported_tags_are_refused(write_file: Write, text: str) -> None:
    problem = only_problem(write_file("tag.yaml", text))
    assert "unsupported YAML tag" in problem.message


def test_merge_keys_are_refused(write_file: Write) -> None:
    problem = only_problem(write_file("m.yaml", "a: &a {x: 1}\nb:\n  <<: *a\n"))
    assert "merge keys" in problem.message


def test_complex_keys_are_refused(write_file: Write) -> None:
    problem = only_problem(write_file("k.yaml", "? [a, b]\n: 1\n"))
    assert "a key must be plain text" in problem.message


def test_two_documents_are_refused(write_file: Write) -> None:
    problem = only_problem(write_file("two.yaml", "version: 1\n---\nversion: 1\n"))
    assert "one YAML document" in problem.message
    assert problem.line == 2


def test_huge_integer_is_a_problem(write_file: Write) -> None:
    problem = only_problem(write_file("n.yaml", "version: " + "9" * 5000 + "\n"))
    assert "cannot read the value" in problem.message


def test_include_cycle(write_file: Write) -> None:
    a = write_file("a.yaml", "include: [b.yaml]\n")
    write_file("b.yaml", "include: [sub/c.yaml]\n")
    write_file("sub/c.yaml", "include: [../a.yaml]\n")
    report = plans.validate([a])
    cycles = [p for p in report.problems if "include cycle" in p.message]
    assert len(cycles) == 1
    assert cycles[0].file.endswith("c.yaml") and cycles[0].line == 1
    assert "a.yaml -> " in cycles[0].message and cycles[0].message.count("->") == 3


def test_self_include_is_a_cycle(write_file: Write) -> None:
    a = write_file("a.yaml", "include: [a.yaml]\n")
    assert any("include cycle" in p.message for p in plans.validate([a]).problems)


def test_missing_include_points_at_the_include(write_file: Write) -> None:
    a = write_file("a.yaml", "version: 1\ninclude:\n  - gone.yaml\n")
    report = plans.validate([a])
    missing = [p for p in report.problems if "gone.yaml" in p.message]
    assert len(missing) == 1
    assert (missing[0].line, missing[0].col) == (3, 5)
    assert missing[0].message.endswith("file not found")


def test_include_of_a_directory(write_file: Write, tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    a = write_file("a.yaml", "include: [folder]\n")
    problems = plans.validate([a]).problems
    assert any("is a directory" in p.message and p.line == 1 for p in problems)


def test_problem_in_an_included_file_names_that_file(write_file: Write) -> None:
    a = write_file("a.yaml", "include: [b.yaml]\n")
    write_file("b.yaml", "fabric: {sites: [1]}\n")
    problems = plans.validate([a]).problems
    assert any(p.file.endswith("b.yaml") and "expected a mapping" in p.message for p in problems)


def test_names_with_control_characters_stay_on_one_line(write_file: Write) -> None:
    path = write_file("n.yaml", 'version: 1\ninclude: ["a\\0b", "line\\nbreak.yaml"]\n')
    problems = plans.validate([path]).problems
    assert any("is not a usable file name" in p.message for p in problems)
    assert all("\n" not in str(p) and str(p).isprintable() for p in problems)
    assert any("line\\nbreak.yaml" in p.message for p in problems)


def test_too_many_values_are_refused_while_parsing(write_file: Write) -> None:
    text = "x: [" + "1, " * (loader.MAX_NODES + 1) + "]\n"
    problem = only_problem(write_file("many.yaml", text))
    assert problem.message == f"the document has more than {loader.MAX_NODES} values; split it"
    assert problem.line == 1
