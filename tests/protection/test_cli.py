"""``ferryman protect status|apply|disable`` as an operator runs them: a process of its own
(embedded broker, its own SQLite store) against the lab, exit statuses as documented."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.protection.conftest import Sites
from workflows.demo import PASSWORD_VARIABLE

pytestmark = pytest.mark.integration


def ferryman(sites: Sites, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``ferryman ARGS`` with the fabric pointed at this test's lab."""
    fabric = tmp_path / "fabric.yaml"
    if not fabric.exists():
        snapshot = sites.bundle.snapshot()
        fabric.write_text(yaml.safe_dump({"version": 1, "fabric": snapshot["fabric"]}))
    env = {
        **os.environ,
        PASSWORD_VARIABLE: sites.lab.password,
        "FERRYMAN_DATABASE_URL": f"sqlite:///{tmp_path}/cli.db",
    }
    for name in ("FERRYMAN_BROKER_URL", "FERRYMAN_RESULT_BACKEND"):
        env.pop(name, None)
    argv = [sys.executable, "-m", "workflows", "protect", *args]
    argv = [a if a != "FABRIC" else str(fabric) for a in argv]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)


def status(sites: Sites, tmp_path: Path) -> tuple[int, dict[str, Any]]:
    done = ferryman(sites, tmp_path, "status", "FABRIC", "--json")
    return done.returncode, {r["vm"]: r for r in json.loads(done.stdout)}


def test_status_apply_and_disable_from_the_command_line(sites: Sites, tmp_path: Path) -> None:
    code, before = status(sites, tmp_path)
    assert code == 1
    assert before["hr-01"]["action"] == "enable" and before["hr-01"]["state"] == "Disabled"
    assert before["sql-01"]["differences"] and before["sql-01"]["in_sync"] is False

    dry = ferryman(sites, tmp_path, "apply", "FABRIC", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "reconcile sql-01: recovery_history 0 -> 4" in dry.stdout
    assert sites.audit("Set-VMReplication") == []  # a dry run changes nothing

    applied = ferryman(sites, tmp_path, "apply", "FABRIC", "--wait")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "succeeded" in applied.stdout
    code, after = status(sites, tmp_path)
    assert code == 0, [r for r in after.values() if not r["in_sync"]]
    assert after["hr-01"]["state"] == "Replicating" and after["hr-01"]["mode"] == "Primary"

    disabled = ferryman(
        sites, tmp_path, "disable", "FABRIC", "--vm", "hr-01", "--delete-replica", "--wait"
    )
    assert disabled.returncode == 0, disabled.stdout + disabled.stderr
    code, last = status(sites, tmp_path)
    assert code == 1 and last["hr-01"]["action"] == "enable"
    assert "hr-01@hv-got-2" not in sites.state()

    listed = subprocess.run(
        [sys.executable, "-m", "workflows", "runs", "list", "--json"],
        env={**os.environ, "FERRYMAN_DATABASE_URL": f"sqlite:///{tmp_path}/cli.db"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    operations = sorted(r["operation"] for r in json.loads(listed.stdout))
    assert operations == ["protect", "unprotect"]


def test_an_unknown_vm_is_one_line_and_exit_1(sites: Sites, tmp_path: Path) -> None:
    done = ferryman(sites, tmp_path, "apply", "FABRIC", "--vm", "nope-01")
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "nope-01" in lines[0] and "Traceback" not in done.stderr


def test_a_listed_vm_missing_from_its_host_fails_apply(sites: Sites, tmp_path: Path) -> None:
    def ghost(snapshot: dict[str, Any]) -> None:
        vms = snapshot["fabric"]["pairings"]["gold"]["vms"]
        vms["ghost-01"] = {**vms["crm-01"]}

    bundle = sites.variant(ghost)
    (tmp_path / "fabric.yaml").write_text(
        yaml.safe_dump({"version": 1, "fabric": bundle.snapshot()["fabric"]})
    )
    done = ferryman(sites, tmp_path, "apply", "FABRIC", "--vm", "ghost-01", "--dry-run")
    assert done.returncode == 1
    assert "cannot apply ghost-01: no such VM on hv-sto-1" in done.stdout
    code, reports = status(sites, tmp_path)
    assert code == 1 and reports["ghost-01"]["action"] == "missing"
