"""``ferryman dns switch|show`` against a real BIND9 pair: output and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.support.bind import BindServers
from workers.dns.cli import dns

pytestmark = pytest.mark.integration


ROOT = Path(__file__).resolve().parents[2]


def switch_args(servers: BindServers, *extra: str) -> list[str]:
    return [
        "switch",
        "--server",
        servers.primary.hostport,
        "--zone",
        "corp.example",
        "--key-file",
        str(servers.key_file),
        "--name",
        "sql-01",
        *extra,
    ]


def test_switch_prints_old_and_new_and_verifies(bind_servers: BindServers) -> None:
    args = switch_args(
        bind_servers,
        "--address",
        "10.20.1.11",
        "--address",
        "fd00:20::11",
        "--ttl",
        "60",
        "--verify",
        "--servers",
        ",".join(bind_servers.servers),
    )
    result = CliRunner().invoke(dns, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "old: sql-01.corp.example. 300 IN A 10.10.1.11" in lines
    assert "new: sql-01.corp.example. 60 IN A 10.20.1.11" in lines
    assert "new: sql-01.corp.example. 60 IN AAAA fd00:20::11" in lines
    assert lines[-1].startswith(f"verified on {', '.join(bind_servers.servers)}")
    assert bind_servers.secondary.addresses("sql-01") == {"10.20.1.11", "fd00:20::11"}


def test_switch_json_output(bind_servers: BindServers) -> None:
    args = switch_args(bind_servers, "--address", "10.20.1.11", "--json")
    result = CliRunner().invoke(dns, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["changed"] is True and data["verify"] is None
    assert data["old"]["records"][0]["values"] == ["10.10.1.11"]


def test_switch_with_a_wrong_key_exits_1_with_the_reason(
    bind_servers: BindServers, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.key"
    wrong.write_text(bind_servers.readonly_key_file.read_text().replace("readonly-key", "x-key"))
    args = switch_args(bind_servers, "--address", "10.20.1.11")
    args[args.index("--key-file") + 1] = str(wrong)
    result = CliRunner().invoke(dns, args)
    assert result.exit_code == 1
    assert "BADKEY" in result.output and str(wrong) in result.output
    assert "Traceback" not in result.output


def test_switch_usage_errors_exit_2(bind_servers: BindServers) -> None:
    result = CliRunner().invoke(dns, switch_args(bind_servers))  # no --address
    assert result.exit_code == 2
    assert "--address" in result.output


def test_bad_address_exits_1(bind_servers: BindServers) -> None:
    result = CliRunner().invoke(dns, switch_args(bind_servers, "--address", "sql-02"))
    assert result.exit_code == 1
    assert "not an IPv4 or IPv6 address" in result.output


def test_show_prints_records(bind_servers: BindServers) -> None:
    args = ["show", "--server", bind_servers.secondary.hostport, "--zone", "corp.example"]
    result = CliRunner().invoke(dns, [*args, "--name", "www", "--name", "nothing"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line for line in lines if " IN A " in line] == [
        f"www.corp.example. 300 IN A 10.10.3.3{i}" for i in range(1, 5)
    ]
    assert "nothing.corp.example. A (none)" in lines


def test_show_of_an_unserved_zone_exits_1(bind_servers: BindServers) -> None:
    args = ["show", "--server", bind_servers.primary.hostport, "--zone", "other.example"]
    result = CliRunner().invoke(dns, [*args, "--name", "x"])
    assert result.exit_code == 1
    assert "does not serve zone other.example" in result.output


def test_the_ferryman_command_runs_dns_show(bind_servers: BindServers) -> None:
    args = ["show", "--server", bind_servers.primary.hostport, "--zone", "corp.example"]
    done = subprocess.run(
        [sys.executable, "-m", "workflows.cli", "dns", *args, "--name", "sql-01", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["records"][0]["values"] == ["10.10.1.11"]
