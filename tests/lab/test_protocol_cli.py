"""``lab serve`` as a separate process: JSON endpoints on stdout, then real pypsrp drives it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from pypsrp.powershell import RunspacePool

from lab.cli import lab_group
from lab.server.service import Endpoint
from tests.lab.clients import props, run, wsman_for
from tests.support.lab_process import serving

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY = ROOT / "deploy" / "lab" / "topology.yaml"


@pytest.fixture
def served() -> Iterator[tuple[dict[str, Endpoint], str]]:
    """``python -m lab.cli serve deploy/lab/topology.yaml --json`` in a child process, which
    must exit 0 on SIGTERM."""
    with serving(
        str(TOPOLOGY), "--ephemeral-ports", cwd=ROOT, check_exit=True, stop_timeout=20
    ) as running:
        yield running


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
