"""``ferryman plan``: validate, show, schema, through click's runner."""

from __future__ import annotations

import json

from click.testing import CliRunner

from plans.cli import plan
from tests.plans.conftest import EXAMPLES, World


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(plan, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_validate_ok() -> None:
    code, out, _ = run("validate", str(EXAMPLES / "three-tier.yaml"))
    assert (code, out) == (0, "OK: 1 plan, 7 VMs\n")


def test_validate_errors_exit_1_with_positions(world: World) -> None:
    world.set(("fabric", "pairings", "gold", "profile", "recovery_points"), 30)
    world.set(("plans", "three-tier", "groups", 0, "name"), "web")
    path = world.write()
    code, out, _ = run("validate", str(path))
    assert code == 1
    lines = out.splitlines()
    assert lines[-1] == "FAILED: 2 errors, 0 warnings"
    assert lines[0].startswith(f"{world.directory / 'fabric.yaml'}:")
    assert "recovery_points must be 0 to 24" in lines[0]
    assert lines[1].startswith(f"{path}:") and "group name 'web' is already used" in lines[1]
    assert all(line.split(":")[1].isdigit() and line.split(":")[2].isdigit() for line in lines[:2])


def test_warnings_pass_unless_strict(world: World) -> None:
    world.plan["groups"][0]["vms"].append("mon-01")
    path = str(world.write())
    code, out, _ = run("validate", path)
    assert code == 0
    assert "warning: adapter 1 of VM 'mon-01' is on network 'mgmt-sto'" in out
    assert out.splitlines()[-1] == "OK: 1 plan, 8 VMs (1 warning)"
    code, out, _ = run("validate", "--strict", path)
    assert code == 1
    assert out.splitlines()[-1] == "FAILED: 0 errors, 1 warning"


def test_validate_needs_files() -> None:
    code, _, err = run("validate")
    assert code == 2 and "Missing argument" in err


def test_show_tree() -> None:
    code, out, _ = run("show", str(EXAMPLES / "three-tier.yaml"))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "plan three-tier (pairing gold: stockholm/sto-gold -> gothenburg/got-gold)"
    assert "├── group 1: databases" in lines
    assert "└── group 3: web" in lines
    assert (
        "│   ├── pre  quiesce-order-intake [script] (on primary site; inline; timeout 5m; "
        "planned, both directions)"
    ) in lines
    assert (
        "    ├── vm   web-01  hv-sto-1 -> hv-got-1  dns: web-01.corp.example, www.corp.example"
    ) in lines
    assert any(
        "post warm-caches [script]" in line and "planned/unplanned" in line for line in lines
    )
    # order inside a group: pre actions, VMs, post actions
    group1 = lines[
        lines.index("├── group 1: databases") + 1 : lines.index("├── group 2: application")
    ]
    kinds = [line.split("── ")[1][:4] for line in group1]
    assert kinds == ["pre ", "vm  ", "vm  ", "post"]


def test_show_unknown_plan() -> None:
    code, _, err = run("show", str(EXAMPLES / "three-tier.yaml"), "--plan", "nope")
    assert code == 1 and "known plans: three-tier" in err


def test_show_refuses_invalid_files(world: World) -> None:
    world.set(("plans", "three-tier", "pairing"), "silver")
    code, _, err = run("show", str(world.write()))
    assert code == 1 and "unknown pairing 'silver'" in err


def test_show_fabric_without_plans() -> None:
    code, out, _ = run("show", str(EXAMPLES / "fabric.yaml"))
    assert code == 0 and out.startswith("no plans in ")


def test_schema_is_json_with_descriptions() -> None:
    code, out, _ = run("schema")
    assert code == 0
    schema = json.loads(out)
    assert schema["$schema"].endswith("2020-12/schema")
    assert schema["title"].startswith("Ferryman plan and fabric file")
    profile = schema["$defs"]["ProtectionProfile"]["properties"]
    assert "30, 300 or 900" in profile["replication_frequency"]["description"]


def test_ferryman_root_attaches_the_group() -> None:
    from workflows.cli import main

    result = CliRunner().invoke(main, ["plan", "validate", str(EXAMPLES / "three-tier.yaml")])
    assert result.exit_code == 0 and result.stdout.startswith("OK:")
