"""``ferryman demo``: the README's main command works, in one process, well under a minute."""

from __future__ import annotations

from collections import Counter

import pytest
from click.testing import CliRunner
from rich.console import Console

from workflows.cli import main
from workflows.demo import run_demo

pytestmark = pytest.mark.integration


def test_demo_runs_test_failover_and_cleanup() -> None:
    console = Console(record=True, width=120)
    result = run_demo(console=console, live=False, timeout=60)
    assert result.ok
    assert len(result.failed_over) == 7
    assert result.addresses["sql-01"] == ["10.99.1.11"]
    # each mutating cmdlet once per VM (www is a second record of web-01)
    assert result.audit == Counter(
        {
            "Start-VMFailover": 7,
            "Connect-VMNetworkAdapter": 7,
            "Start-VM": 7,
            "Stop-VMFailover": 7,
            "Add-DnsServerResourceRecordA": 8,
            "Remove-DnsServerResourceRecord": 8,
        }
    )
    text = console.export_text()
    assert "the demo approves it automatically" in text
    assert "confirm-databases: approved by ferryman demo" in text


def test_demo_command_exit_code() -> None:
    outcome = CliRunner().invoke(main, ["demo", "--no-live"])
    assert outcome.exit_code == 0, outcome.output
    assert "Ferryman demo: summary" in outcome.output
