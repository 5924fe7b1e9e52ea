"""Bundles: the examples, includes, snapshots and their hash, the engine-facing API."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import plans
from plans import Bundle, PlanInvalid, UnknownPlan, load_bundle
from plans.errors import ConfigurationError
from tests.plans.conftest import EXAMPLES, World

Write = Callable[[str, str | bytes], Path]


def test_examples_validate_clean() -> None:
    for files in (["three-tier.yaml"], ["fabric.yaml"], ["three-tier.yaml", "fabric.yaml"]):
        report = plans.validate([EXAMPLES / name for name in files])
        assert report.problems == [], [str(p) for p in report.problems]
        assert report.bundle is not None


def test_three_tier_bundle() -> None:
    bundle = load_bundle([EXAMPLES / "three-tier.yaml"])
    assert [Path(f).name for f in bundle.files] == ["three-tier.yaml", "fabric.yaml"]
    plan = bundle.plan("three-tier")
    assert [g.name for g in plan.groups] == ["databases", "application", "web"]
    assert plan.vm_names() == ["sql-01", "sql-02", "app-01", "app-02", "app-03", "web-01", "web-02"]
    assert plan.rto == 1800
    quiesce = plan.groups[0].pre[0]
    assert isinstance(quiesce, plans.ScriptAction) and quiesce.timeout == 300
    assert len(bundle.fabric.pairings["gold"].vms) == 14
    assert bundle.fabric.credentials["lab-admin"].password == "env:FERRYMAN_LAB_PASSWORD"


def test_each_file_is_loaded_once(world: World, write_file: Write) -> None:
    world.write()
    write_file("extra.yaml", "version: 1\ninclude: [fabric.yaml]\n")
    both = write_file("both.yaml", "version: 1\ninclude: [three-tier.yaml, extra.yaml]\n")
    report = plans.validate([both, world.directory / "fabric.yaml"])
    assert report.problems == []
    assert report.bundle is not None
    names = [Path(f).name for f in report.bundle.files]
    assert names == ["both.yaml", "three-tier.yaml", "fabric.yaml", "extra.yaml"]


def test_load_bundle_raises_with_every_problem(world: World) -> None:
    world.set(("fabric", "pairings", "gold", "profile", "replication_frequency"), 31)
    world.set(("plans", "three-tier", "pairing"), "silver")
    with pytest.raises(PlanInvalid) as caught:
        load_bundle([world.write()])
    error = caught.value
    assert isinstance(error, ConfigurationError)
    assert len(error.problems) == 2
    text = str(error)
    assert text.splitlines()[0] == "2 error(s) in plan files; fix them and load again:"
    assert all(str(p) in text for p in error.problems)


def test_warnings_do_not_refuse(world: World) -> None:
    world.plan["groups"][0]["vms"].append("mon-01")
    bundle = load_bundle([world.write()])
    assert "mon-01" in bundle.plan("three-tier").vm_names()


def test_unknown_plan_lists_the_known_ones() -> None:
    bundle = load_bundle([EXAMPLES / "three-tier.yaml"])
    with pytest.raises(UnknownPlan, match="known plans: three-tier") as caught:
        bundle.plan("two-tier")
    assert isinstance(caught.value, ConfigurationError)


def test_snapshot_round_trip_keeps_the_hash() -> None:
    bundle = load_bundle([EXAMPLES / "three-tier.yaml"])
    snapshot = bundle.snapshot()
    text = json.dumps(snapshot)  # JSON-able as it is
    again = Bundle.from_snapshot(json.loads(text))
    assert again.content_hash == bundle.content_hash
    assert again.plans == bundle.plans and again.fabric == bundle.fabric
    assert len(bundle.content_hash) == 64


def test_hash_follows_content_not_location(world: World, tmp_path: Path) -> None:
    first = load_bundle([world.write()])
    elsewhere = World(tmp_path / "elsewhere")
    elsewhere.directory.mkdir()
    assert load_bundle([elsewhere.write()]).content_hash == first.content_hash
    world.set(("plans", "three-tier", "description"), "changed")
    assert load_bundle([world.write()]).content_hash != first.content_hash


def test_snapshot_holds_references_not_secrets(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FERRYMAN_LAB_PASSWORD", "the-real-password")
    text = json.dumps(load_bundle([world.write()]).snapshot())
    assert "the-real-password" not in text
    assert "env:FERRYMAN_LAB_PASSWORD" in text


def test_from_snapshot_refuses_junk() -> None:
    junks: list[dict[str, Any]] = [
        {},
        {"fabric": 3},
        {"fabric": {}, "plans": {"p": {"groups": []}}},
    ]
    for junk in junks:
        with pytest.raises(ConfigurationError, match="not a Ferryman bundle snapshot"):
            Bundle.from_snapshot(junk)


def test_bundle_is_immutable() -> None:
    bundle = load_bundle([EXAMPLES / "three-tier.yaml"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        bundle.content_hash = "x"  # type: ignore[misc]


def test_script_file_text_is_carried_in_the_bundle(world: World) -> None:
    (world.directory / "warm.ps1").write_text("Write-Output warm\n")
    post = world.plan["groups"][2]["post"][0]
    del post["script"]
    post["file"] = "warm.ps1"
    bundle = load_bundle([world.write()])
    action = bundle.plan("three-tier").groups[2].post[0]
    assert action.script == "Write-Output warm\n"  # type: ignore[union-attr]
    assert action.file == "warm.ps1"  # type: ignore[union-attr]
    assert "Write-Output warm" in json.dumps(bundle.snapshot())


def test_unreadable_script_file_is_a_problem(world: World) -> None:
    (world.directory / "warm.ps1").write_bytes(b"\xff\xfe bad")
    post = world.plan["groups"][2]["post"][0]
    del post["script"]
    post["file"] = "warm.ps1"
    report = world.validate()
    assert [p.message for p in report.problems] == [
        f"script file {str(world.directory / 'warm.ps1')!r} is not UTF-8 text"
    ]


def test_two_fabrics_are_refused(world: World) -> None:
    world.write()
    report = plans.validate([world.directory / "fabric.yaml", EXAMPLES / "fabric.yaml"])
    assert len(report.problems) == 1
    assert report.problems[0].message.startswith("a second fabric (the first is in")


def test_a_plan_defined_twice(world: World, write_file: Write) -> None:
    plan_file = world.write()
    copy = write_file("copy.yaml", plan_file.read_text())
    report = plans.validate([plan_file, copy])
    assert [p.message.split(";")[0] for p in report.problems] == [
        f"plan 'three-tier' is defined twice (first in {plan_file} on line 5)"
    ]


def test_plans_without_a_fabric(write_file: Write) -> None:
    path = write_file("p.yaml", "plans:\n  p: {pairing: gold, groups: [{name: g}]}\n")
    report = plans.validate([path])
    assert [p.message.split(":")[0] for p in report.problems] == ["no fabric"]


def test_validate_accepts_a_single_path() -> None:
    assert plans.validate(EXAMPLES / "fabric.yaml").ok  # type: ignore[arg-type]


def test_no_files() -> None:
    report = plans.validate([])
    assert report.bundle is None and report.problems[0].message == "no files given"
