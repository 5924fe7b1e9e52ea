"""The systemd units: one template worker per site, API, triggers, commands, Flower and a oneshot
migration they require; hardened to an exposure of 4.0 or less by ``systemd-analyze
security``; secrets as credentials that Ferryman reads from $CREDENTIALS_DIRECTORY."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from plans.credentials import SecretRef
from workflows.settings import Settings

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
SERVICES = (
    "ferryman-api",
    "ferryman-triggers",
    "ferryman-commands",
    "ferryman-flower",
    "ferryman-beat",
    "ferryman-worker@",
)
MAX_EXPOSURE = 4.0


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections of a unit file, each key with every value it is given (keys repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value)
    return sections


def all_units() -> list[Path]:
    return sorted(UNITS.glob("*.service"))


def test_the_units_there_are() -> None:
    names = {path.name.removesuffix(".service") for path in all_units()}
    assert names == {*SERVICES, "ferryman-migrate"}
    migrate = read_unit(UNITS / "ferryman-migrate.service")["Service"]
    assert migrate["Type"] == ["oneshot"]
    assert migrate["ExecStart"][0].endswith("ferryman db upgrade")
    worker = read_unit(UNITS / "ferryman-worker@.service")["Service"]
    assert worker["ExecStart"][0].endswith("ferryman worker --site %i")
    for name in SERVICES:
        unit = read_unit(UNITS / f"{name}.service")
        assert "ferryman-migrate.service" in unit["Unit"]["Requires"][0]
        assert "ferryman-migrate.service" in unit["Unit"]["After"][0]
        assert unit["Service"]["Restart"] == ["always"]


def test_secrets_are_credentials_ferryman_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_names = {
        field
        for field, info in Settings.model_fields.items()
        if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("secret")
    }
    variables = {f"FERRYMAN_{name.upper()}" for name in secret_names}
    for path in all_units():
        unit = read_unit(path)["Service"]
        assert not any("PASSWORD" in e or "://" in e for e in unit.get("Environment", []))
        command = " ".join(unit["ExecStart"])
        for credential in unit.get("LoadCredential", []):
            name, _, source = credential.partition(":")
            # a setting's secret by its variable's name, or a file the command names (%d is
            # $CREDENTIALS_DIRECTORY)
            assert name in variables or f"file:%d/{name}" in command, (path.name, name)
            assert source.startswith("/etc/ferryman/credentials/")
    # what systemd hands the service: $CREDENTIALS_DIRECTORY/FERRYMAN_DATABASE_URL
    (tmp_path / "FERRYMAN_DATABASE_URL").write_text("postgresql://ferryman:pw@db/ferryman\n")
    (tmp_path / "FERRYMAN_FLOWER_BASIC_AUTH").write_text("admin:secret\n")
    settings = Settings.from_env({"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert settings.database_url.endswith("ferryman:pw@db/ferryman")
    assert settings.flower_basic_auth is not None
    assert settings.flower_basic_auth.get_secret_value() == "admin:secret"
    # ferryman commands --key file:%d/commands-key: a file reference into that folder is read
    (tmp_path / "commands-key").write_text("the-shared-signing-key\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    key = SecretRef.parse(f"file:{tmp_path}/commands-key").resolve()
    assert key == "the-shared-signing-key"


def exposure(path: Path) -> float:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout + done.stderr)
    assert found, done.stdout + done.stderr
    return float(found.group(1))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
@pytest.mark.parametrize("unit", [p.name for p in all_units()])
def test_hardened(unit: str) -> None:
    assert exposure(UNITS / unit) <= MAX_EXPOSURE
