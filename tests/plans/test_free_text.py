"""Free text (descriptions, instructions, operators' comments) refuses control characters but
line breaks and tabs, and bidirectional embeddings, overrides and isolates (FORMAT.md)."""

from __future__ import annotations

import pytest

from plans.errors import ConfigurationError
from plans.model import ManualAction
from plans.names import require_text, text_problem
from tests.plans.conftest import World


@pytest.mark.parametrize(
    ("text", "code", "where"),
    [
        ("clear\x1b[2J", "U+001B", "line 1, column 6"),
        ("nul\x00", "U+0000", "line 1, column 4"),
        ("one\ntwo\x07", "U+0007", "line 2, column 4"),
        ("over\rwrite", "U+000D", "line 1, column 5"),
        ("form\x0cfeed", "U+000C", "line 1, column 5"),
        ("del\x7f", "U+007F", "line 1, column 4"),
        ("c1\x9b31m", "U+009B", "line 1, column 3"),
        ("next\x85line", "U+0085", "line 1, column 5"),
        ("\u202egnp.exe", "U+202E", "line 1, column 1"),
        ("a\u202ab", "U+202A", "line 1, column 2"),
        ("ok\r\nthen \u2066x\u2069", "U+2066", "line 2, column 6"),
        ("isolate \u2068", "U+2068", "line 1, column 9"),
    ],
)
def test_refused_characters_are_named_with_their_place(text: str, code: str, where: str) -> None:
    problem = text_problem(text)
    assert problem is not None
    assert code in problem and where in problem
    assert "\n" not in problem


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Check the availability group, then approve.",
        "Two lines\nand\ta tab",
        "Windows line breaks\r\nare line breaks",
        "Hebrew with marks: \u200f\u05e9\u05dc\u05d5\u05dd\u200e",
        "Arabic with its letter mark: \u061c\u0645\u0631\u062d\u0628\u0627",
        "emoji with a joiner: \U0001f469\u200d\U0001f4bb",
        "PowerShell $(Get-VM) [bold] :smile: <b>",
    ],
)
def test_printable_text_line_breaks_tabs_and_direction_marks_pass(text: str) -> None:
    assert text_problem(text) is None


def test_one_line_text_refuses_line_breaks_but_not_tabs() -> None:
    assert text_problem("alice\tops", lines=False) is None
    for text in ("alice\nbob", "alice\r\nbob"):
        problem = text_problem(text, lines=False)
        assert problem is not None and "only tabs" in problem


def test_require_text_reads_crlf_as_lf_and_names_what_it_refuses() -> None:
    assert require_text("a\r\nb", "comment") == "a\nb"
    with pytest.raises(ConfigurationError) as caught:
        require_text("ok\x1b]0;title\x07", "comment")
    assert str(caught.value).startswith("comment contains the control character U+001B")


def test_the_model_keeps_crlf_as_lf() -> None:
    action = ManualAction.model_validate(
        {"kind": "manual", "name": "m", "instructions": "first\r\nsecond\tcolumn"}
    )
    assert action.instructions == "first\nsecond\tcolumn"


def test_hostile_description_and_instructions_are_refused_at_their_position(
    world: World,
) -> None:
    world.plan["description"] = "Tier\x1b[31m one"
    world.plan["groups"][0]["post"][0]["instructions"] = "Check \u202etxt.exe then approve"
    report = world.validate()
    messages = sorted((p.message, p.line > 0) for p in report.errors)
    assert [m for m, _ in messages] == [
        "text contains the bidirectional control U+202E at line 1, column 7 of the text, which "
        "makes it display differently from what it is; remove it",
        "text contains the control character U+001B at line 1, column 5 of the text; only line "
        "breaks and tabs may be in it",
    ]
    assert all(positioned for _, positioned in messages)


def test_a_description_with_line_breaks_and_marks_validates(world: World) -> None:
    world.plan["description"] = "Tier one\r\nowner: \u200f\u05e6\u05d5\u05d5\u05ea\u200e DBA\tonly"
    report = world.validate()
    assert report.ok, report.problems
    assert report.bundle is not None
    assert (
        report.bundle.plans["three-tier"].description
        == "Tier one\nowner: \u200f\u05e6\u05d5\u05d5\u05ea\u200e DBA\tonly"
    )


def test_host_paths_are_one_line_without_control_characters(world: World) -> None:
    initial = ("fabric", "pairings", "gold", "profile", "initial_replication")
    world.set(
        initial,
        {"method": "offline", "export_path": "D:\\Export\nrm", "import_path": "E:\\Import\x00"},
    )
    report = world.validate()
    messages = sorted(p.message for p in report.errors)
    assert len(messages) == 2, messages
    assert "U+0000 at line 1, column 10" in messages[0]
    assert "U+000A at line 1, column 10" in messages[1] and "only tabs" in messages[1]
    world.set(initial, {"method": "offline", "export_path": "D:\\Export", "import_path": "E:\\In"})
    assert world.validate().ok
