"""The settings model: every FERRYMAN_* value validated at start with a message naming the
variable and its form, secrets from ``_FILE`` files and systemd credentials, and the README's
table generated from the model."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from plans.errors import ConfigurationError
from workflows.settings import EMBEDDED_BACKEND, Settings, settings_table

ROOT = Path(__file__).resolve().parents[2]
DB = {"FERRYMAN_DATABASE_URL": "sqlite:///ferryman-test.db"}


def refused(environ: dict[str, str], **kwargs: bool) -> str:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({**DB, **environ}, **kwargs)
    return str(caught.value)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("FERRYMAN_BROKER_URL", "notaurl", "unknown broker URL 'notaurl'"),
        ("FERRYMAN_BROKER_URL", "kafka://broker:9092", "unknown broker URL"),
        ("FERRYMAN_BROKER_URL", "redis://", "names no host"),
        ("FERRYMAN_STEP_LEASE", "abc", "expected a duration"),
        ("FERRYMAN_STEP_LEASE", "1e400", "finite"),
        ("FERRYMAN_DISPATCH_GRACE", "-5", "expected a duration"),
        ("FERRYMAN_DISPATCH_GRACE", "0", "greater than 0"),
        ("FERRYMAN_PSRP_SESSIONS_PER_HOST", "abc", "expected an integer 1..30"),
        ("FERRYMAN_PSRP_SESSIONS_PER_HOST", "31", "expected an integer 1..30"),
        ("FERRYMAN_RETRY_MAX_RETRIES", "many", "expected an integer 0..100"),
        ("FERRYMAN_WORKER_CONCURRENCY", "0", "expected an integer 1..1024"),
        ("FERRYMAN_AUTO_COMPENSATE_TEST", "perhaps", "expected true or false"),
        ("FERRYMAN_DATABASE_URL", "mysql://db/ferryman", "expected sqlite:///PATH"),
        ("FERRYMAN_RESULT_BACKEND", "s3://bucket", "unknown result backend"),
    ],
)
def test_a_bad_value_names_its_variable_and_form(name: str, value: str, expected: str) -> None:
    message = refused({name: value})
    assert message.startswith(name), message
    assert expected in message
    assert "\n" not in message


def test_durations_take_units() -> None:
    settings = Settings.from_env(
        {**DB, "FERRYMAN_STEP_LEASE": "5m", "FERRYMAN_GATE_TIMEOUT": "1h",
         "FERRYMAN_ADVANCE_POLL": "250ms", "FERRYMAN_RETRY_BASE_DELAY": "2s"}
    )  # fmt: skip
    assert (settings.step_lease, settings.gate_timeout) == (300.0, 3600.0)
    assert (settings.advance_poll, settings.retry.base_delay) == (0.25, 2.0)


def test_sessions_per_host_is_a_field_of_the_model() -> None:
    settings = Settings.from_env({**DB, "FERRYMAN_PSRP_SESSIONS_PER_HOST": "12"})
    assert settings.psrp_sessions_per_host == 12
    assert Settings().psrp_sessions_per_host == 8


def test_a_shared_broker_needs_a_shared_backend() -> None:
    amqp = refused({"FERRYMAN_BROKER_URL": "amqp://guest@127.0.0.1:5672//"})
    assert "FERRYMAN_RESULT_BACKEND" in amqp
    memory = refused(
        {
            "FERRYMAN_BROKER_URL": "redis://127.0.0.1:6379/0",
            "FERRYMAN_RESULT_BACKEND": "cache+memory://",
        }
    )
    assert "FERRYMAN_RESULT_BACKEND=cache+memory://" in memory
    derived = Settings.from_env({**DB, "FERRYMAN_BROKER_URL": "redis://:pw@127.0.0.1:6379/0"})
    assert derived.result_backend == "redis://:pw@127.0.0.1:6379/0"
    assert derived.notices and "FERRYMAN_RESULT_BACKEND is not set" in derived.notices[0]
    assert "pw" not in derived.notices[0]  # the notice never shows the password
    given = Settings.from_env(
        {**DB, "FERRYMAN_BROKER_URL": "amqp://g@h//", "FERRYMAN_RESULT_BACKEND": "redis://h/1"}
    )
    assert given.result_backend == "redis://h/1" and not given.notices
    assert Settings().result_backend == EMBEDDED_BACKEND


def test_a_missing_database_url_is_an_error_where_the_store_is_needed() -> None:
    with pytest.raises(ConfigurationError, match="FERRYMAN_DATABASE_URL is not set"):
        Settings.from_env({}, require_database=True)
    assert Settings.from_env({}).database_url == "sqlite:///ferryman.db"


def test_secrets_come_from_files_and_systemd_credentials(tmp_path: Path) -> None:
    secret = tmp_path / "broker-url"
    secret.write_text("redis://:s3cret@127.0.0.1:6379/0\n")
    from_file = Settings.from_env({**DB, "FERRYMAN_BROKER_URL_FILE": str(secret)})
    assert from_file.broker_url == "redis://:s3cret@127.0.0.1:6379/0"

    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "FERRYMAN_DATABASE_URL").write_text("sqlite:////var/lib/ferryman/runs.db")
    (credentials / "FERRYMAN_FLOWER_BASIC_AUTH").write_text("ops:pa55")
    from_systemd = Settings.from_env(
        {"CREDENTIALS_DIRECTORY": str(credentials)}, require_database=True
    )
    assert from_systemd.database_url == "sqlite:////var/lib/ferryman/runs.db"
    assert from_systemd.flower_basic_auth is not None
    assert from_systemd.flower_basic_auth.get_secret_value() == "ops:pa55"
    assert "pa55" not in repr(from_systemd)

    both = refused({"FERRYMAN_BROKER_URL": "memory://", "FERRYMAN_BROKER_URL_FILE": str(secret)})
    assert "keep one" in both


def test_a_secret_file_must_be_a_small_regular_file(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * (64 * 1024 + 1))
    assert "larger than 64 KB" in refused({"FERRYMAN_BROKER_URL_FILE": str(big)})
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # reading it would block forever
    assert "not a regular file" in refused({"FERRYMAN_BROKER_URL_FILE": str(fifo)})
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({"FERRYMAN_DATABASE_URL_FILE": str(tmp_path / "nope")})
    missing = str(caught.value)
    assert missing.startswith("FERRYMAN_DATABASE_URL_FILE: cannot read")
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xffredis://:Secret@127.0.0.1/0")
    message = refused({"FERRYMAN_BROKER_URL_FILE": str(binary)})
    assert message == f"FERRYMAN_BROKER_URL_FILE: {binary} is not UTF-8 text"


def test_a_bad_secret_is_named_without_its_value() -> None:
    message = refused({"FERRYMAN_BROKER_URL": "notaurl-with-Secret"})
    assert message.startswith("FERRYMAN_BROKER_URL:")
    assert "FERRYMAN_BROKER_URL=" not in message  # the given value is not echoed as VAR=...


def test_settings_built_in_code_read_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRYMAN_BROKER_URL", "redis://127.0.0.1:6379/0")
    assert Settings().broker_url == "memory://"
    assert Settings.from_env().broker_url == "redis://127.0.0.1:6379/0"


def test_the_readme_lists_every_variable_as_the_model_says() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(
        r"<!-- settings-table:start -->\n(.*?)<!-- settings-table:end -->", readme, re.S
    )
    assert found, "README.md lacks the settings table markers"
    assert found.group(1) == settings_table(), (
        "README.md's settings table differs from workflows/settings.py: "
        "python -m workflows.settings --readme rewrites it"
    )
    for name in Settings.model_fields:
        if name != "retry":
            assert f"`FERRYMAN_{name.upper()}`" in found.group(1)


# variables named in the tree that are not settings, and why
NOT_SETTINGS = {
    "FERRYMAN_LAB_PASSWORD": "the example fabric's credential reference names it",
    "FERRYMAN_SITE": "docker-compose.yml's own, for a worker's health check",
}


def test_every_variable_the_tree_names_is_a_setting() -> None:
    named: set[str] = set()
    for folder in ("plans", "workflows", "workers", "deploy"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in (".py", ".yaml", ".yml", ".service", ".md", ""):
                text = path.read_text(encoding="utf-8", errors="replace")
                named.update(re.findall(r"\bFERRYMAN_[A-Z][A-Z0-9_]*[A-Z0-9]", text))
    named.update(
        re.findall(r"\bFERRYMAN_[A-Z][A-Z0-9_]*[A-Z0-9]", (ROOT / "docker-compose.yml").read_text())
    )
    table = settings_table()
    missing = sorted(
        name
        for name in named
        if name not in NOT_SETTINGS
        and f"`{name.removesuffix('_FILE')}`" not in table
        and not name.startswith("FERRYMAN_TEST_")
    )
    assert not missing, f"not fields of workflows/settings.py: {missing}"
