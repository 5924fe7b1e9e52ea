"""Secret files (``file:`` credentials, TSIG key files, ``--key-file``) are read only from the
secret folders: by default /etc/ferryman, /run/secrets, $XDG_CONFIG_HOME/ferryman and systemd's
$CREDENTIALS_DIRECTORY; ``FERRYMAN_SECRET_ROOTS`` replaces the first three."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

import plans
from plans.credentials import SecretRef
from plans.errors import ConfigurationError
from plans.files import default_secret_roots, secret_roots
from tests.plans.conftest import EXAMPLES
from workers.dns import DnsKeyFileError, load_key_file
from workers.dns.cli import dns_group
from workers.executors.dnsops import target_from_params
from workflows.cli import main

SECRET = "c2VjcmV0Ly9zZWNyZXQvL3NlY3JldC8vc2VjcmV0Ly8="
KEY = f'key "k" {{ algorithm hmac-sha256; secret "{SECRET}"; }};\n'


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user whose home is ``tmp_path/home``, with the suite's secret folders removed: the
    process sees the default secret folders only."""
    home = tmp_path / "home"
    (home / ".config" / "ferryman").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    for name in ("XDG_CONFIG_HOME", "CREDENTIALS_DIRECTORY", "FERRYMAN_SECRET_ROOTS"):
        monkeypatch.delenv(name, raising=False)
    return home


def test_the_default_folders(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user = os.path.realpath(home / ".config" / "ferryman")
    system = [os.path.realpath("/etc/ferryman"), os.path.realpath("/run/secrets")]
    assert secret_roots() == [*system, user]
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "xdg"))
    assert secret_roots() == [*system, os.path.realpath(home / "xdg" / "ferryman")]
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/config")  # ignored, as XDG says
    assert secret_roots() == [*system, user]
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(home / "creds"))
    assert secret_roots() == [os.path.realpath(home / "creds"), *system, user]


def test_the_variable_replaces_the_defaults_but_not_systemd_credentials(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FERRYMAN_SECRET_ROOTS", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "creds"))
    assert secret_roots() == [os.path.realpath(tmp_path / p) for p in ("creds", "a", "b")]
    (home / ".config" / "ferryman" / "password").write_text("user\n")
    with pytest.raises(ConfigurationError, match="outside the allowed secret folders"):
        SecretRef.parse(f"file:{home / '.config' / 'ferryman' / 'password'}").resolve()
    monkeypatch.setenv("FERRYMAN_SECRET_ROOTS", ":")  # nothing listed: the defaults
    assert default_secret_roots()[0] in secret_roots()


def test_a_secret_in_the_user_folder_is_read(home: Path) -> None:
    (home / ".config" / "ferryman" / "password").write_text("S3cret\n")
    ref = SecretRef.parse(f"file:{home / '.config' / 'ferryman' / 'password'}")
    assert ref.resolve() == "S3cret"


def test_a_secret_in_the_systemd_credentials_folder_is_read(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "lab-password").write_text("systemd\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    assert SecretRef.parse(f"file:{credentials / 'lab-password'}").resolve() == "systemd"


def test_a_secret_elsewhere_is_refused_in_one_line_naming_file_folders_and_variable(
    home: Path, tmp_path: Path
) -> None:
    path = tmp_path / "password"
    path.write_text("S3cret\n")
    with pytest.raises(ConfigurationError) as caught:
        SecretRef.parse(f"file:{path}").resolve()
    message = str(caught.value)
    assert "\n" not in message and "S3cret" not in message
    assert str(path) in message
    for root in secret_roots():
        assert root in message
    assert "FERRYMAN_SECRET_ROOTS" in message


def test_links_are_resolved_before_the_check(home: Path, tmp_path: Path) -> None:
    folder = home / ".config" / "ferryman"
    outside = tmp_path / "outside"
    outside.write_text("S3cret\n")
    (folder / "link").symlink_to(outside)
    with pytest.raises(ConfigurationError) as caught:
        SecretRef.parse(f"file:{folder / 'link'}").resolve()
    assert "outside the allowed secret folders" in str(caught.value)
    assert f"a link to {str(outside)!r}" in str(caught.value)
    # a link from elsewhere into a secret folder reads the secret where it lies
    (folder / "password").write_text("inside\n")
    (tmp_path / "into").symlink_to(folder / "password")
    assert SecretRef.parse(f"file:{tmp_path / 'into'}").resolve() == "inside"
    # a folder link too
    (folder / "sub").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(ConfigurationError, match="outside the allowed secret folders"):
        SecretRef.parse(f"file:{folder / 'sub' / 'outside'}").resolve()
    (folder / ".." / ".." / "escape").write_text("x\n")
    with pytest.raises(ConfigurationError, match="outside the allowed secret folders"):
        SecretRef.parse(f"file:{folder}/../../escape").resolve()


def test_pseudo_filesystems_are_refused_even_when_listed(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FERRYMAN_SECRET_ROOTS", "/")
    with pytest.raises(ConfigurationError, match="kernel pseudo-filesystem"):
        SecretRef.parse("file:/proc/self/environ").resolve()


def test_validation_refuses_a_secret_file_outside_the_default_folders(
    home: Path, tmp_path: Path
) -> None:
    fabric = tmp_path / "fabric.yaml"
    fabric.write_text(
        "version: 1\nfabric:\n  credentials:\n"
        f"    a: {{username: u, password: 'file:{tmp_path / 'password'}'}}\n"
        f"    b: {{username: u, password: 'file:{home / '.config' / 'ferryman' / 'pw'}'}}\n"
        "    c: {username: u, password: 'file:/etc/ferryman/password'}\n"
        "    d: {username: u, password: 'file:/run/secrets/password'}\n"
    )
    report = plans.validate([fabric])
    assert [p.line for p in report.errors] == [4]
    assert "FERRYMAN_SECRET_ROOTS" in report.errors[0].message


def test_the_example_plan_validates_with_the_default_folders(home: Path) -> None:
    # its TSIG key is file:/etc/ferryman/corp-example.key, what `ferryman demo` loads
    report = plans.validate([EXAMPLES / "three-tier.yaml"])
    assert report.ok, report.problems


def test_the_compose_plan_validates_with_the_default_folders(home: Path) -> None:
    # its secrets are Compose secrets: file:/run/secrets/lab_password, .../corp_example_key
    compose = EXAMPLES.parents[1] / "deploy" / "compose" / "plans" / "three-tier.yaml"
    report = plans.validate([compose])
    assert report.ok, report.problems


def test_plan_validate_command_prints_one_line_and_fails(home: Path, tmp_path: Path) -> None:
    text = (EXAMPLES / "fabric.yaml").read_text()
    assert "file:/etc/ferryman/corp-example.key" in text
    (tmp_path / "fabric.yaml").write_text(
        text.replace("file:/etc/ferryman/corp-example.key", f"file:{tmp_path}/corp.key")
    )
    (tmp_path / "three-tier.yaml").write_text((EXAMPLES / "three-tier.yaml").read_text())
    outcome = CliRunner().invoke(main, ["plan", "validate", str(tmp_path / "three-tier.yaml")])
    assert outcome.exit_code == 1
    lines = [line for line in outcome.output.splitlines() if "corp.key" in line]
    assert len(lines) == 1, outcome.output
    assert lines[0].startswith(f"{tmp_path / 'fabric.yaml'}:")
    assert "outside the allowed secret folders" in lines[0]
    assert "FERRYMAN_SECRET_ROOTS" in lines[0]


def test_key_files_follow_the_default_folders(home: Path, tmp_path: Path) -> None:
    inside = home / ".config" / "ferryman" / "corp.key"
    inside.write_text(KEY)
    assert load_key_file(inside).name == "k"
    outside = tmp_path / "corp.key"
    outside.write_text(KEY)
    for source in (str(outside), f"file:{outside}"):
        with pytest.raises((DnsKeyFileError, ConfigurationError)) as caught:
            load_key_file(source)
        assert "outside the allowed secret folders" in str(caught.value)
        assert SECRET not in str(caught.value)


def test_dns_switch_key_file_outside_the_folders_is_one_line(home: Path, tmp_path: Path) -> None:
    outside = tmp_path / "corp.key"
    outside.write_text(KEY)
    args = [
        "switch", "--server", "127.0.0.1:9", "--zone", "corp.example", "--key-file",
        str(outside), "--name", "x", "--address", "10.0.0.1",
    ]  # fmt: skip
    result = CliRunner().invoke(dns_group, args)
    assert result.exit_code == 1
    assert "outside the allowed secret folders" in result.output
    assert "FERRYMAN_SECRET_ROOTS" in result.output and "Traceback" not in result.output


def test_a_worker_refuses_a_compiled_key_outside_its_folders(home: Path, tmp_path: Path) -> None:
    # what a run's snapshot carries; the worker checks with its own environment
    outside = tmp_path / "corp.key"
    outside.write_text(KEY)
    target = target_from_params({"zone": "corp.example", "tsig_key": f"file:{outside}"})
    assert target.key_file == str(outside)
    with pytest.raises((DnsKeyFileError, ConfigurationError), match="outside the allowed"):
        target.load_key()


def test_a_webhook_secret_file_outside_the_folders_is_refused_when_made(
    home: Path, tmp_path: Path
) -> None:
    from workflows.notifications import WebhookError, create_webhook
    from workflows.store import Database

    db = Database(f"sqlite:///{tmp_path}/hooks.db")
    db.create_all()
    outside = tmp_path / "hook.key"
    outside.write_text("k3y\n")
    inside = home / ".config" / "ferryman" / "hook.key"
    inside.write_text("k3y\n")

    def make(name: str, key: Path) -> str:
        with db.session() as session:
            hook = create_webhook(
                session,
                name=name,
                url="http://127.0.0.1:9/hook",
                secret=f"file:{key}",
                events=["run_failed"],
                plan=None,
                created_by="test",
            )
            return hook.secret_ref

    try:
        with pytest.raises(WebhookError) as caught:
            make("out", outside)
        assert "outside the allowed secret folders" in str(caught.value)
        assert "FERRYMAN_SECRET_ROOTS" in str(caught.value)
        assert make("in", inside) == f"file:{inside}"
    finally:
        db.dispose()
