"""Files a plan names: under an allowed root, regular, bounded, never quoted in an error."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import plans
from plans.credentials import SecretRef
from plans.errors import ConfigurationError
from plans.files import MAX_SECRET_BYTES, FileRefused, read_bounded
from tests.plans.conftest import EXAMPLES, World

SHADOW_LINE = "root:*:19000:0:99999:7:::"


def finishes(action: Callable[[], object], seconds: float = 20.0) -> BaseException | None:
    """Run ``action`` in a thread; fail the test if it hangs, else return what it raised."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            action()
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "reading the file hung"
    return outcome[0]


def plan_dir(tmp_path: Path, text: str) -> Path:
    """A folder holding the example fabric and a plan file with ``text`` as its body."""
    folder = tmp_path / "plans"
    folder.mkdir()
    (folder / "fabric.yaml").write_text((EXAMPLES / "fabric.yaml").read_text())
    plan = folder / "plan.yaml"
    plan.write_text("version: 1\ninclude: [fabric.yaml]\n" + text)
    return plan


SCRIPT_PLAN = """plans:
  p:
    pairing: gold
    groups:
      - name: databases
        vms: [sql-01]
        pre:
          - {{kind: script, name: s, file: {file}}}
"""


def test_an_include_outside_the_root_is_refused_unread(tmp_path: Path) -> None:
    (tmp_path / "shadow.yaml").write_text(f"{SHADOW_LINE}: x\n")
    plan = plan_dir(tmp_path, "")
    plan.write_text("version: 1\ninclude: [fabric.yaml, ../shadow.yaml]\n")
    report = plans.validate([plan])
    messages = [p.message for p in report.problems]
    assert any("outside the allowed folders" in m for m in messages), messages
    assert not any("root:" in str(p) for p in report.problems)


def test_a_non_yaml_include_inside_the_root_is_refused_unread(tmp_path: Path) -> None:
    plan = plan_dir(tmp_path, "")
    (plan.parent / "shadow").write_text(SHADOW_LINE + "\n")
    plan.write_text("version: 1\ninclude: [fabric.yaml, shadow]\n")
    report = plans.validate([plan])
    assert any("not a .yaml or .yml file" in p.message for p in report.problems)
    assert not any("root:" in str(p) for p in report.problems)


def test_plan_roots_variable_allows_another_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "fabric.yaml").write_text((EXAMPLES / "fabric.yaml").read_text())
    team = tmp_path / "team"
    team.mkdir()
    plan = team / "plan.yaml"
    plan.write_text("version: 1\ninclude: [../shared/fabric.yaml]\n")
    assert not plans.validate([plan]).ok
    monkeypatch.setenv("FERRYMAN_PLAN_ROOTS", str(shared))
    assert plans.validate([plan]).ok


def test_a_script_file_inside_the_root_is_inlined(tmp_path: Path) -> None:
    plan = plan_dir(tmp_path, SCRIPT_PLAN.format(file="check.ps1"))
    (plan.parent / "check.ps1").write_text("Write-Output ok\n")
    bundle = plans.load_bundle([plan])
    action = bundle.plans["p"].groups[0].pre[0]
    assert getattr(action, "script", None) == "Write-Output ok\n"


@pytest.mark.parametrize("target", ["/proc/self/environ", "/etc/hostname", "../outside.ps1"])
def test_a_script_file_outside_the_root_is_refused(tmp_path: Path, target: str) -> None:
    (tmp_path / "outside.ps1").write_text("Write-Output secret\n")
    plan = plan_dir(tmp_path, SCRIPT_PLAN.format(file=target))
    report = plans.validate([plan])
    assert report.bundle is None
    assert any("outside the allowed folders" in p.message for p in report.problems)


def test_a_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    (tmp_path / "outside.ps1").write_text("Write-Output secret\n")
    plan = plan_dir(tmp_path, SCRIPT_PLAN.format(file="link.ps1"))
    (plan.parent / "link.ps1").symlink_to(tmp_path / "outside.ps1")
    report = plans.validate([plan])
    assert any("outside the allowed folders" in p.message for p in report.problems)


def test_a_fifo_script_is_refused_without_hanging(tmp_path: Path) -> None:
    plan = plan_dir(tmp_path, SCRIPT_PLAN.format(file="pipe.ps1"))
    os.mkfifo(plan.parent / "pipe.ps1")
    reports: list[plans.ValidationReport] = []
    assert finishes(lambda: reports.append(plans.validate([plan]))) is None
    assert any("not a regular file" in p.message for p in reports[0].problems)


def test_a_fifo_plan_file_is_refused_without_hanging(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "plan.yaml")
    reports: list[plans.ValidationReport] = []
    assert finishes(lambda: reports.append(plans.validate([tmp_path / "plan.yaml"]))) is None
    assert any("not a regular file" in p.message for p in reports[0].problems)


@pytest.mark.parametrize("target", ["/dev/zero", "/proc/self/environ"])
def test_secret_files_in_pseudo_filesystems_are_refused(target: str) -> None:
    error = finishes(lambda: SecretRef.parse(f"file:{target}").resolve())
    assert isinstance(error, ConfigurationError)
    assert "kernel pseudo-filesystem" in str(error) and target in str(error)


def test_a_fifo_secret_is_refused_without_hanging(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "password")
    error = finishes(lambda: SecretRef.parse(f"file:{tmp_path / 'password'}").resolve())
    assert isinstance(error, ConfigurationError) and "not a regular file" in str(error)


def test_a_large_secret_is_refused_and_never_quoted(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text("S3cret" * (MAX_SECRET_BYTES // 6 + 1))
    with pytest.raises(ConfigurationError) as caught:
        SecretRef.parse(f"file:{path}").resolve()
    assert "larger than 64 KiB" in str(caught.value) and "S3cret" not in str(caught.value)


def test_a_binary_secret_is_refused_and_never_quoted(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_bytes(b"\xffS3cret")
    with pytest.raises(ConfigurationError) as caught:
        SecretRef.parse(f"file:{path}").resolve()
    assert "not UTF-8" in str(caught.value) and "S3cret" not in str(caught.value)


def test_secret_roots_confine_secret_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    allowed = tmp_path / "secrets"
    allowed.mkdir()
    (allowed / "password").write_text("inside\n")
    (tmp_path / "password").write_text("outside\n")
    monkeypatch.setenv("FERRYMAN_SECRET_ROOTS", str(allowed))
    assert SecretRef.parse(f"file:{allowed / 'password'}").resolve() == "inside"
    with pytest.raises(ConfigurationError, match="outside the allowed secret folders"):
        SecretRef.parse(f"file:{tmp_path / 'password'}").resolve()
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "password").write_text("systemd\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    assert SecretRef.parse(f"file:{credentials / 'password'}").resolve() == "systemd"


def test_validation_refuses_secret_files_outside_the_roots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = tmp_path / "fabric.yaml"
    plan.write_text(
        "version: 1\nfabric:\n  credentials:\n"
        "    a: {username: u, password: file:/etc/ferryman/password}\n"
    )
    assert plans.validate([plan]).ok
    monkeypatch.setenv("FERRYMAN_SECRET_ROOTS", str(tmp_path))
    report = plans.validate([plan])
    assert [p.line for p in report.errors] == [4]
    assert "outside the allowed secret folders" in report.errors[0].message


def test_read_bounded_stops_past_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(b"x" * 2048)
    with pytest.raises(FileRefused, match="larger than 1 KiB"):
        read_bounded(path, limit=1024)
    assert read_bounded(path, limit=4096) == b"x" * 2048


@pytest.mark.parametrize(
    ("target", "message"),
    [("/dev/zero", "kernel pseudo-filesystem"), ("/proc/self/environ", "kernel pseudo-filesystem")],
)
def test_ca_bundles_are_regular_files(world: World, target: str, message: str) -> None:
    world.set(("fabric", "sites", "stockholm", "hosts", "hv-sto-1", "ca_bundle"), target)
    errors = world.validate().errors
    assert len(errors) == 1 and message in errors[0].message
    assert errors[0].path_text.endswith("hv-sto-1.ca_bundle")


def test_a_fifo_ca_bundle_is_refused(world: World, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "ca.pem")
    world.set(("fabric", "sites", "stockholm", "vmm", "ca_bundle"), str(tmp_path / "ca.pem"))
    errors = world.validate().errors
    assert len(errors) == 1 and "not a regular file" in errors[0].message
