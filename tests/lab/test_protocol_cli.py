"""``lab serve`` as a separate process: JSON endpoints on stdout, then real pypsrp drives it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pypsrp.powershell import RunspacePool

from lab.cli import lab_group
from lab.server.service import Endpoint
from tests.lab.clients import props, run, wsman_for

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY = ROOT / "deploy" / "lab" / "topology.yaml"


@pytest.fixture
def served() -> Iterator[tuple[dict[str, Endpoint], str]]:
    """``python -m lab.cli serve deploy/lab/topology.yaml --json`` in a child process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "lab.cli", "serve", str(TOPOLOGY),
            "--json", "--ephemeral-ports", "--time-scale", "0.001",
        ],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        endpoints: dict[str, Endpoint] = {}
        admin = ""
        for line in proc.stdout:
            data: dict[str, Any] = json.loads(line)
            if "admin" in data:
                admin = data["admin"]
                break
            endpoints[data["host"]] = Endpoint(**data)
        assert admin, proc.stderr.read() if proc.stderr else "no output"
        yield endpoints, admin
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""


def test_serve_json_then_a_pypsrp_test_failover_and_cleanup(
    served: tuple[dict[str, Endpoint], str],
) -> None:
    endpoints, admin = served
    assert set(endpoints) == {"vmm-sto", "vmm-got", "hv-sto-1", "hv-sto-2", "hv-got-1", "hv-got-2"}
    replica = endpoints["hv-got-2"]
    assert (replica.site, replica.role, replica.auth, replica.username) == (
        "gothenburg", "hyperv", "ntlm", "ferryman",  # NTLM, as the example fabric logs in
    )  # fmt: skip
    assert len(replica.password) >= 12  # generated at start
    assert endpoints["vmm-sto"].role == "vmm"
    assert admin.startswith("http://127.0.0.1:")

    with RunspacePool(wsman_for(replica)) as pool:
        run(pool, "Start-VMFailover", VMName="sql-02", AsTest=True)
        names = [props(o)["Name"] for o in run(pool, "Get-VM").output]
        assert "sql-02 - Test" in names
        (rep,) = run(pool, "Get-VMReplication", VMName="sql-02").output
        assert props(rep)["State"] == "Replicating"
        cleanup = run(pool, "Stop-VMFailover", VMName="sql-02")
        assert not cleanup.streams.error
        names = [props(o)["Name"] for o in run(pool, "Get-VM").output]
        assert "sql-02 - Test" not in names


def test_serve_reports_an_invalid_topology(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("sites: [stockholm]\nhosts: [{name: x, site: nowhere, role: vmm}]\n")
    result = CliRunner().invoke(lab_group, ["serve", str(bad), "--json"])
    assert result.exit_code == 1
    assert "cannot start the lab" in result.output
    assert "nowhere" in result.output
