"""Structural problems: pydantic's errors in plain words, at the right line and path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import plans
from tests.plans.conftest import World

Write = Callable[[str, str | bytes], Path]

PLAN_HEAD = "version: 1\ninclude: [fabric.yaml]\nplans:\n  p:\n    pairing: gold\n"


def plan_problems(world: World, write_file: Write, body: str) -> list[plans.Problem]:
    world.write()
    path = write_file("p.yaml", PLAN_HEAD + body)
    return plans.validate([path]).problems


def test_unknown_key_suggests_the_closest(world: World, write_file: Write) -> None:
    problems = plan_problems(
        world, write_file, "    groups:\n      - name: g\n        vms: [sql-01]\n        psot: []\n"
    )
    assert [(p.line, p.col, p.message, p.path_text) for p in problems] == [
        (9, 9, "unknown key 'psot' in a group; did you mean 'post'?", "plans.p.groups[0].psot")
    ]


def test_unknown_key_without_a_close_match_lists_the_keys(world: World, write_file: Write) -> None:
    problems = plan_problems(world, write_file, "    groups: [{name: g}]\n    colour: blue\n")
    assert len(problems) == 1
    assert problems[0].message == (
        "unknown key 'colour' in a recovery plan; allowed keys: description, groups, "
        "on_group_failure, pairing, rto, test_network"
    )


def test_missing_key_points_at_the_mapping(world: World, write_file: Write) -> None:
    problems = plan_problems(
        world,
        write_file,
        "    groups:\n      - name: g\n        post:\n          - kind: manual\n"
        "            name: ok\n",
    )
    assert [(p.line, p.message, p.path_text) for p in problems] == [
        (
            9,
            "missing required key 'instructions' in a manual action",
            "plans.p.groups[0].post[0].instructions",
        )
    ]


def test_wrong_types_in_plain_words(world: World, write_file: Write) -> None:
    body = (
        "    rto: soon\n"
        "    on_group_failure: maybe\n"
        "    groups:\n"
        "      - name: [g]\n"
        "        vms: [{name: sql-01, start_delay: -5, wait_for_ip: perhaps}]\n"
    )
    found = {p.path_text: p.message for p in plan_problems(world, write_file, body)}
    assert found == {
        "plans.p.rto": "a duration is a number of seconds or a string like '90s', '10m', '1h'",
        "plans.p.on_group_failure": "must be one of 'stop' or 'continue', got 'maybe'",
        "plans.p.groups[0].name": "expected text, got a list",
        "plans.p.groups[0].vms[0].start_delay": "must be at least 0, got -5",
        "plans.p.groups[0].vms[0].wait_for_ip": "expected true or false, got text ('perhaps')",
    }


def test_action_kind_problems(world: World, write_file: Write) -> None:
    body = (
        "    groups:\n      - name: g\n        pre:\n          - {name: a}\n          - {kind: x}\n"
    )
    messages = [p.message for p in plan_problems(world, write_file, body)]
    assert messages == [
        "an action needs a 'kind': one of script, manual, wait_for_ip, update_dns, health_check",
        "unknown action kind 'x'; use one of script, manual, wait_for_ip, update_dns, health_check",
    ]


def test_unknown_key_inside_an_action(world: World, write_file: Write) -> None:
    body = (
        "    groups:\n      - name: g\n        pre:\n"
        "          - {kind: script, name: a, script: x, timout: 5m}\n"
    )
    problems = plan_problems(world, write_file, body)
    assert [(p.message, p.path_text) for p in problems] == [
        (
            "unknown key 'timout' in a script action; did you mean 'timeout'?",
            "plans.p.groups[0].pre[0].timout",
        )
    ]


def test_non_finite_duration_is_refused(world: World, write_file: Write) -> None:
    problems = plan_problems(world, write_file, "    rto: .inf\n    groups: [{name: g}]\n")
    assert [p.message for p in problems] == ["must be a finite number"]


def test_a_plan_needs_a_group(world: World, write_file: Write) -> None:
    problems = plan_problems(world, write_file, "    groups: []\n")
    assert [p.message for p in problems] == ["needs at least 1 entry"]


def test_parameters_of_a_wrong_type_give_one_problem(world: World, write_file: Write) -> None:
    body = (
        "    groups:\n      - name: g\n        pre:\n"
        "          - {kind: script, name: a, script: x, parameters: {Mode: [1, 2]}}\n"
    )
    problems = plan_problems(world, write_file, body)
    assert len(problems) == 1
    assert problems[0].path_text == "plans.p.groups[0].pre[0].parameters.Mode"


def test_version_must_be_1(write_file: Write) -> None:
    report = plans.validate([write_file("v.yaml", "version: 2\nfabric: {}\n")])
    assert [p.message for p in report.problems] == ["must be one of 1, got 2"]


def test_a_broken_plan_does_not_hide_fabric_rules(world: World, write_file: Write) -> None:
    world.fabric["pairings"]["gold"]["profile"]["replication_frequency"] = 60
    problems = plan_problems(world, write_file, "    groups: 7\n")
    messages = sorted(p.message for p in problems)
    assert messages == [
        "expected a list, got a number (7)",
        "replication_frequency must be 30, 300 or 900 seconds, got 60",
    ]
