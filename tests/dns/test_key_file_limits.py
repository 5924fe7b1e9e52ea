"""TSIG key files a command names: regular files of at most 64 KiB, read without blocking."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from workers.dns import DnsKeyFileError, load_key_file
from workers.dns.cli import dns_group

SECRET = "c2VjcmV0Ly9zZWNyZXQvL3NlY3JldC8vc2VjcmV0Ly8="


def switch_with(key_file: str) -> Result:
    """``ferryman dns switch`` with that key file, in a thread that must not hang."""
    results: list[Result] = []
    args = [
        "switch", "--server", "127.0.0.1:9", "--zone", "corp.example", "--key-file", key_file,
        "--name", "x", "--address", "10.0.0.1",
    ]  # fmt: skip
    thread = threading.Thread(
        target=lambda: results.append(CliRunner().invoke(dns_group, args)), daemon=True
    )
    thread.start()
    thread.join(20)
    assert not thread.is_alive(), "the command hung on its key file"
    return results[0]


def test_dev_zero_as_key_file_is_a_one_line_error() -> None:
    result = switch_with("/dev/zero")
    assert result.exit_code == 1
    assert "kernel pseudo-filesystem" in result.output and "Traceback" not in result.output


def test_a_fifo_as_key_file_is_refused_without_hanging(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "key")
    result = switch_with(str(tmp_path / "key"))
    assert result.exit_code == 1
    assert "not a regular file" in result.output


def test_a_huge_key_file_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(f'key "k" {{ algorithm hmac-sha256; secret "{SECRET}"; }};\n' * 2000)
    with pytest.raises(DnsKeyFileError) as caught:
        load_key_file(path)
    assert "larger than 64 KiB" in str(caught.value) and SECRET not in str(caught.value)


def test_secret_roots_apply_to_key_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "keys" / "corp.key"
    path.parent.mkdir()
    path.write_text(f'key "k" {{ algorithm hmac-sha256; secret "{SECRET}"; }};\n')
    monkeypatch.setenv("FERRYMAN_SECRET_ROOTS", str(path.parent))
    assert load_key_file(path).name == "k"
    assert load_key_file(f"file:{path}").name == "k"
    monkeypatch.setenv("FERRYMAN_SECRET_ROOTS", str(tmp_path / "elsewhere"))
    with pytest.raises(DnsKeyFileError, match="outside the allowed secret folders"):
        load_key_file(path)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--server", "[::1", "opens '['"),
        ("--server", "[]:53", "not an IPv6 address"),
        ("--server", "127.0.0.1:0", "invalid port"),
        ("--servers", "127.0.0.1:53,:53", "has no host"),
        ("--zone", "a..b", "empty label"),
        ("--ttl", "4294967296", "0<=x<=2147483647"),
        ("--timeout", "inf", "0<x<=86400"),
    ],
)
def test_switch_options_are_checked_before_anything_is_sent(
    option: str, value: str, message: str
) -> None:
    args = {
        "--server": "127.0.0.1:9", "--zone": "corp.example", "--key-file": "/nonexistent",
        "--name": "x", "--address": "10.0.0.1",
    }  # fmt: skip
    args[option] = value
    result = CliRunner().invoke(dns_group, ["switch", *[p for kv in args.items() for p in kv]])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
