"""TSIG key files as tsig-keygen writes them; the secret never shows."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from plans.errors import ConfigurationError
from workers.dns import DnsKeyFileError, DnsTarget, load_key_file
from workers.dns.tsig import TsigKey, parse_keys

SECRET = "c2VjcmV0Ly9zZWNyZXQvL3NlY3JldC8vc2VjcmV0Ly8="  # base64 holding "//"


def test_reads_a_key_written_by_tsig_keygen(tmp_path: Path) -> None:
    out = subprocess.run(
        ["tsig-keygen", "-a", "hmac-sha512", "ferryman-key"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = tmp_path / "ferryman.key"
    path.write_text(out)
    key = load_key_file(path)
    assert (key.name, key.algorithm, key.source) == ("ferryman-key", "hmac-sha512", str(path))
    assert key.secret in out
    assert key.dns_key().name.to_text() == "ferryman-key."


def test_repr_and_str_never_show_the_secret(tmp_path: Path) -> None:
    key = TsigKey("ferryman-key", "hmac-sha256", SECRET, source="/etc/ferryman/dns.key")
    for text in (repr(key), str(key), str(DnsTarget("corp.example", key_file="/x").to_dict())):
        assert SECRET not in text
    assert "/etc/ferryman/dns.key" in str(key)


def test_slashes_inside_the_secret_are_not_a_comment() -> None:
    text = f'// a comment\nkey "k1" {{\n  algorithm hmac-sha256;\n  secret "{SECRET}";\n}};\n'
    assert [k.secret for k in parse_keys(text)] == [SECRET]


def test_picks_a_named_key_from_a_file_with_several(tmp_path: Path) -> None:
    path = tmp_path / "keys.conf"
    path.write_text(
        f'key "a-key" {{ algorithm hmac-sha256; secret "{SECRET}"; }};\n'
        f'# the update key\nkey "b-key" {{ algorithm hmac-sha384; secret "{SECRET}"; }};\n'
    )
    assert load_key_file(path, name="b-key").algorithm == "hmac-sha384"
    with pytest.raises(DnsKeyFileError, match="exactly one key"):
        load_key_file(path)


def test_target_algorithm_applies_when_the_file_names_none(tmp_path: Path) -> None:
    path = tmp_path / "bare.key"
    path.write_text(f'key "bare" {{ secret "{SECRET}"; }};\n')
    target = DnsTarget("corp.example", key_file=str(path), algorithm="hmac-sha512")
    key = target.load_key()
    assert key is not None and key.algorithm == "hmac-sha512"


def test_missing_file_names_the_path_and_is_a_configuration_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.key"
    with pytest.raises(ConfigurationError, match=str(missing)):
        load_key_file(missing)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('key "k" { algorithm hmac-foo; secret "AAAA"; };', "unknown algorithm"),
        ('key "k" { algorithm hmac-sha256; secret "not base64!"; };', "not base64"),
        ('key "k" { algorithm hmac-sha256; };', "no secret"),
        ("options { };", "found 0"),
    ],
)
def test_malformed_files_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.key"
    path.write_text(text)
    with pytest.raises(DnsKeyFileError, match=message) as caught:
        load_key_file(path)
    assert caught.value.key_ref == str(path)
