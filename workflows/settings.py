"""Ferryman's settings: one pydantic-settings model of every ``FERRYMAN_*`` variable.

:meth:`Settings.from_env` reads the process environment, validates every value once when a
process starts and fails with one line naming the variable and the form it expects. Building
``Settings(...)`` directly reads nothing from the environment: it is a plain value (tests, the
demo). The defaults run everything in one process (in-memory broker); production points
``FERRYMAN_DATABASE_URL`` at PostgreSQL and ``FERRYMAN_BROKER_URL`` at Redis or RabbitMQ.

Secrets (URLs that may carry a password, Flower's credentials) are read from the variable, from
the file that ``NAME_FILE`` names, or from the systemd credential ``NAME`` in
``$CREDENTIALS_DIRECTORY`` (``LoadCredential=FERRYMAN_DATABASE_URL:/etc/ferryman/db-url``), so a
unit file or a container never has to hold the secret itself. :func:`settings_table` renders
the README's table of variables from this model.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from plans.errors import ConfigurationError
from plans.files import FileRefused, FileTooLarge, read_bounded

PREFIX = "FERRYMAN_"
SECRET_FILE_LIMIT = 64 * 1024  # a URL or a password, never more
CREDENTIALS_DIRECTORY = "CREDENTIALS_DIRECTORY"  # systemd's LoadCredential= folder
EMBEDDED_BROKER = "memory://"
EMBEDDED_BACKEND = "cache+memory://"
DEFAULT_DATABASE = "sqlite:///ferryman.db"
BROKER_SCHEMES = ("memory", "redis", "rediss", "sentinel", "amqp", "amqps", "pyamqp")
BACKEND_SCHEMES = ("cache+memory", "redis", "rediss", "sentinel", "db+postgresql", "db+sqlite")
DATABASE_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg", "postgresql+psycopg2")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s|m|h)?\s*$")


def _duration(value: Any) -> Any:
    """``30``, ``30s``, ``250ms``, ``5m`` or ``1h`` as seconds; other values pass to pydantic."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(
                "expected a duration: seconds (120) or with a unit (250ms, 30s, 5m, 1h)"
            )
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
        if not math.isfinite(seconds):
            raise ValueError("expected a finite duration")
        return seconds
    return value


Duration = Annotated[float, BeforeValidator(_duration), Field(gt=0, le=30 * 24 * 3600)]


def _setting(default: Any, meaning: str, form: str, *, secret: bool = False, **kw: Any) -> Any:
    """A field with what the README's table says about it."""
    return Field(
        default, description=meaning, json_schema_extra={"form": form, "secret": secret}, **kw
    )


class RetryPolicy(BaseModel):
    """Exponential backoff with jitter for transient errors, bounded in count and delay."""

    model_config = ConfigDict(frozen=True)

    max_retries: Annotated[int, Field(ge=0, le=100)] = _setting(
        5, "Retries of a step after a transient error.", "an integer 0..100"
    )
    base_delay: Duration = _setting(1.0, "First retry delay (doubles each time).", "a duration")
    max_delay: Duration = _setting(60.0, "Longest retry delay.", "a duration")

    def delay(self, attempt: int, jitter: float) -> float:
        """The wait before retry number ``attempt`` (0-based); ``jitter`` in [0, 1)."""
        ceiling = min(self.max_delay, self.base_delay * (2.0 ** min(attempt, 64)))
        # "equal jitter": half fixed, half random, so retries spread but never come at once
        return ceiling / 2 + ceiling / 2 * jitter


def _scheme(value: str) -> str:
    return urlsplit(value).scheme.lower() if "://" in value else ""


def _redacted(url: str) -> str:
    """``url`` with any password replaced, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


# which source reads the environment: only from_env sets it, so Settings(...) stays a value
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("ferryman_environ", default=None)


class Settings(BaseSettings):
    """Every knob of the engine, its workers and its commands; build with :meth:`from_env`."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid", validate_default=True)
    _notices: tuple[str, ...] = PrivateAttr(default=())

    database_url: str = _setting(
        DEFAULT_DATABASE,
        "The run store. Required outside `ferryman demo`: commands that need the store refuse "
        "to start without it rather than make ./ferryman.db.",
        "sqlite:///PATH or postgresql+psycopg://USER@HOST/DB",
        secret=True,
    )
    broker_url: str = _setting(
        EMBEDDED_BROKER,
        "Celery broker. memory:// runs a worker inside each command (one process only).",
        "memory://, redis[s]://HOST:PORT/DB, sentinel://, amqp[s]://USER@HOST/VHOST",
        secret=True,
    )
    result_backend: str | None = _setting(
        None,
        "Celery result backend (joins a stage's tasks). With a Redis broker and no value, the "
        "broker's URL is used and a notice says so; other brokers need one.",
        "redis[s]://HOST:PORT/DB (cache+memory:// only with memory://)",
        secret=True,
    )
    plan_paths: list[str] = _setting(
        [],
        "Plan files or folders read by `ferryman triggers` for every message; a folder gives "
        "its plan and fabric *.yaml files and skips other YAML with a warning.",
        "paths separated by ':'",
    )
    plan_roots: list[str] = _setting(
        [],
        "Folders, besides each plan file's own, that includes and script files may come from "
        "(plans/FORMAT.md, 'Files a plan names').",
        "paths separated by ':'",
    )
    secret_roots: list[str] = _setting(
        [],
        "Folders credential and TSIG key files (`file:`, `--key-file`) may come from, besides "
        "$CREDENTIALS_DIRECTORY; unset: /etc/ferryman, /run/secrets and "
        "$XDG_CONFIG_HOME/ferryman (~/.config/ferryman).",
        "paths separated by ':'",
    )
    retry: RetryPolicy = Field(default_factory=lambda: RetryPolicy())
    gate_timeout: Duration | None = _setting(
        None,
        "Default timeout of manual actions that have none (unset: wait forever).",
        "a duration",
    )
    visibility_timeout: Annotated[int, Field(ge=1)] = _setting(
        7200, "Redis visibility timeout: longer than the longest task.", "whole seconds"
    )
    worker_concurrency: Annotated[int, Field(ge=1, le=1024)] = _setting(
        16, "Threads per worker (`ferryman worker --concurrency` overrides).", "an integer 1..1024"
    )
    auto_compensate_test: bool = _setting(
        True, "Compensate a failed test failover automatically.", "true or false"
    )
    advance_poll: Duration = _setting(
        0.5, "Wait before re-checking a stage whose steps are still running.", "a duration"
    )
    dispatch_grace: Duration = _setting(
        30.0,
        "How long a stage may stay committed but unsent (its sender died, or the broker was "
        "down) before the workers' watch sends it again.",
        "a duration",
    )
    step_heartbeat: Duration = _setting(
        10.0, "How often a worker refreshes the heartbeat of the steps it runs.", "a duration"
    )
    step_lease: Duration = _setting(
        120.0,
        "A running step whose heartbeat is older is handed to a fresh delivery (>= 3 heartbeats).",
        "a duration",
    )
    psrp_sessions_per_host: Annotated[int, Field(ge=1, le=30)] = _setting(
        8,
        "PowerShell sessions a worker keeps per Hyper-V host (WinRM allows 30 shells per user).",
        "an integer 1..30",
    )
    broker_connect_timeout: Duration = _setting(
        3.0,
        "How long a command tries to reach the broker before it reports the run as recorded "
        "but not yet sent.",
        "a duration",
    )
    flower_basic_auth: SecretStr | None = _setting(
        None,
        "Flower's user:password list; required when `ferryman flower` listens beyond loopback.",
        "user:password[,user:password]",
        secret=True,
    )
    api_trusted_header: str = _setting(
        "",
        "Header in which a trusted reverse proxy names the signed-on user (empty: off).",
        "a header name, e.g. X-Remote-User",
    )
    api_trusted_proxies: str = _setting(
        "",
        "Addresses of that proxy; the header from anywhere else is not believed.",
        "comma-separated addresses or networks",
    )
    api_trusted_roles: str = _setting(
        "",
        "Role of each user signed on by the header; `*` for everyone else.",
        "comma-separated USER=ROLE",
    )
    debug: bool = _setting(False, "Show tracebacks on errors (like --debug).", "true or false")

    @field_validator("plan_paths", "plan_roots", "secret_roots", mode="before")
    @classmethod
    def _split_paths(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part for part in value.split(os.pathsep) if part]
        return value

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: str) -> str:
        if _scheme(value) not in DATABASE_SCHEMES:
            raise ValueError(
                "expected sqlite:///PATH or postgresql+psycopg://USER@HOST/DB, got "
                f"{_redacted(value)!r}"
            )
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_scheme(cls, value: str) -> str:
        scheme = _scheme(value)
        if scheme not in BROKER_SCHEMES:
            raise ValueError(
                f"unknown broker URL {_redacted(value)!r}: expected a URL with a scheme among "
                + ", ".join(f"{s}://" for s in BROKER_SCHEMES)
            )
        if scheme != "memory" and not urlsplit(value).hostname:
            raise ValueError(f"broker URL {_redacted(value)!r} names no host")
        return value

    @field_validator("result_backend")
    @classmethod
    def _backend_scheme(cls, value: str | None) -> str | None:
        if value is not None and _scheme(value) not in BACKEND_SCHEMES:
            raise ValueError(
                f"unknown result backend {_redacted(value)!r}: expected "
                + ", ".join(f"{s}://" for s in BACKEND_SCHEMES)
            )
        return value

    @model_validator(mode="after")
    def _shared_backend(self) -> Settings:
        # a shared broker with the in-memory backend joins every chord in one process only:
        # workers elsewhere never see the results (stages 10-30x slower, or stuck)
        notices: list[str] = []
        if self.result_backend is None:
            if self.embedded:
                backend = EMBEDDED_BACKEND
            elif _scheme(self.broker_url) in ("redis", "rediss", "sentinel"):
                backend = self.broker_url
                notices.append(
                    "FERRYMAN_RESULT_BACKEND is not set: task results go to the broker's Redis "
                    f"({_redacted(self.broker_url)})"
                )
            else:
                raise ValueError(
                    "a shared broker needs a shared result backend: set "
                    "FERRYMAN_RESULT_BACKEND (e.g. redis://HOST:6379/1)"
                )
            object.__setattr__(self, "result_backend", backend)
        elif not self.embedded and self.result_backend.startswith(EMBEDDED_BACKEND):
            raise ValueError(
                "FERRYMAN_RESULT_BACKEND=cache+memory:// only works with the in-memory broker; "
                "with a shared broker set a shared backend (e.g. redis://HOST:6379/1)"
            )
        self._notices = tuple(notices)
        return self

    @model_validator(mode="after")
    def _lease_outlasts_heartbeats(self) -> Settings:
        if self.step_lease < 3 * self.step_heartbeat:
            raise ValueError(
                f"step_lease ({self.step_lease:g} s) must be at least three step_heartbeat "
                f"intervals ({3 * self.step_heartbeat:g} s), or a live step's worker may be "
                "taken for dead after one slow heartbeat: raise FERRYMAN_STEP_LEASE or lower "
                "FERRYMAN_STEP_HEARTBEAT"
            )
        return self

    @property
    def embedded(self) -> bool:
        """True with the in-memory broker: each command runs its own worker."""
        return self.broker_url.startswith(EMBEDDED_BROKER)

    @property
    def notices(self) -> tuple[str, ...]:
        """What was derived rather than given, for a process to say when it starts."""
        return self._notices

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Explicit values first, then (only under :meth:`from_env`) the environment."""
        environ = _ENVIRON.get()
        if environ is None:
            return (init_settings,)
        return (init_settings, FerrymanEnvironment(settings_cls, environ))

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        require_database: bool = False,
        **overrides: Any,
    ) -> Settings:
        """Read and validate the ``FERRYMAN_*`` variables (then ``overrides``).

        ``require_database``: refuse to go on without ``FERRYMAN_DATABASE_URL`` (commands
        that use the store: a default file in the working directory would hide a forgotten
        setting behind an empty run list). Raises ConfigurationError naming the variable.
        """
        env = os.environ if environ is None else environ
        token = _ENVIRON.set(env)
        try:
            if require_database and "database_url" not in overrides:
                source = FerrymanEnvironment(cls, env)
                if source.lookup("database_url") is None:
                    raise ConfigurationError(
                        "FERRYMAN_DATABASE_URL is not set: set it to the run store "
                        "(postgresql+psycopg://USER@HOST/DB, or sqlite:///PATH for one machine)"
                    )
            return cls(**overrides)
        except ValidationError as exc:
            raise ConfigurationError(describe(exc)) from None
        finally:
            _ENVIRON.reset(token)


def variable(loc: tuple[int | str, ...]) -> str:
    """The environment variable of a field location: ("retry", "max_retries") ->
    FERRYMAN_RETRY_MAX_RETRIES."""
    return PREFIX + "_".join(str(part) for part in loc).upper()


def _form(loc: tuple[int | str, ...]) -> str:
    model: type[BaseModel] = Settings
    info: FieldInfo | None = None
    for part in loc:
        info = model.model_fields.get(str(part))
        if info is None:
            return ""
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
    extra = info.json_schema_extra if info is not None else None
    return str(extra.get("form", "")) if isinstance(extra, dict) else ""


def describe(exc: ValidationError) -> str:
    """One line per invalid value: the variable, what was wrong, and the form it expects."""
    lines: list[str] = []
    for error in exc.errors(include_url=False):
        loc = tuple(error.get("loc", ()))
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if not loc:
            lines.append(message)
            continue
        name = variable(loc[:2] if loc[0] == "retry" else loc[:1])
        secret = _is_secret(str(loc[0]))
        given = "" if secret or "input" not in error else f"={error['input']!r}"
        form = _form(loc[:2] if loc[0] == "retry" else loc[:1])
        if form and "expected" not in message:
            message += f" (expected {form})"
        lines.append(f"{name}{given}: {message}")
    return "; ".join(lines)


def _is_secret(name: str) -> bool:
    info = Settings.model_fields.get(name)
    extra = info.json_schema_extra if info is not None else None
    return bool(isinstance(extra, dict) and extra.get("secret"))


def read_secret_file(path: Path, variable_name: str) -> str:
    """A secret's text from a regular file of at most 64 KB, without its final newline; read
    without blocking (a FIFO is refused, not waited on) and within a deadline.

    The file is named by the environment (``NAME_FILE``, ``$CREDENTIALS_DIRECTORY``), which
    the administrator sets, so it is not confined to the secret folders that files named by
    plans and commands are (plans/FORMAT.md, "Files a plan names")."""
    try:
        data = read_bounded(path, limit=SECRET_FILE_LIMIT, what="file")
    except FileTooLarge:
        raise ConfigurationError(f"{variable_name}: {path} is larger than 64 KB") from None
    except FileRefused as exc:
        raise ConfigurationError(f"{variable_name}: {exc}") from None
    try:
        return data.decode("utf-8", errors="strict").rstrip("\r\n")
    except UnicodeDecodeError:
        raise ConfigurationError(f"{variable_name}: {path} is not UTF-8 text") from None


class FerrymanEnvironment(PydanticBaseSettingsSource):
    """``FERRYMAN_*`` values from an environment mapping, secrets also from ``NAME_FILE`` and
    from systemd credentials (``$CREDENTIALS_DIRECTORY/NAME``)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self.environ = environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """The raw value of one field (pydantic-settings' source protocol)."""
        return self.lookup(field_name), field_name, False

    def lookup(self, field_name: str) -> Any:
        """The raw value of ``field_name`` or None when nothing sets it."""
        if field_name == "retry":
            nested = {
                name: self.environ[variable(("retry", name))]
                for name in RetryPolicy.model_fields
                if variable(("retry", name)) in self.environ
            }
            return nested or None
        name = variable((field_name,))
        direct = self.environ.get(name)
        if not _is_secret(field_name):
            return direct
        file_name = f"{name}_FILE"
        if direct is not None and file_name in self.environ:
            raise ConfigurationError(f"both {name} and {file_name} are set: keep one")
        if direct is not None:
            return direct
        if file_name in self.environ:
            return read_secret_file(Path(self.environ[file_name]), file_name)
        credentials = self.environ.get(CREDENTIALS_DIRECTORY)
        if credentials and (Path(credentials) / name).exists():
            return read_secret_file(Path(credentials) / name, f"credential {name}")
        return None

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for field_name in self.settings_cls.model_fields:
            value = self.lookup(field_name)
            if value is not None:
                values[field_name] = value
        return values


def debug_requested(environ: Mapping[str, str] | None = None) -> bool:
    """FERRYMAN_DEBUG read on its own, for error reporting before the settings are valid."""
    raw = (os.environ if environ is None else environ).get(variable(("debug",)), "")
    return raw.strip().lower() in ("1", "true", "yes", "on")


def settings_table() -> str:
    """The README's table of variables, generated from the model."""
    rows = ["| Variable | Default | Form | Meaning |", "| --- | --- | --- | --- |"]

    def add(loc: tuple[str, ...], info: FieldInfo) -> None:
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        default = info.get_default(call_default_factory=True)
        shown = "(unset)" if default is None or default == [] else f"`{_plain(default)}`"
        name = f"`{variable(loc)}`"
        if extra.get("secret"):
            name += f" (or `{variable(loc)}_FILE`, credential)"
        rows.append(f"| {name} | {shown} | {extra.get('form', '')} | {info.description or ''} |")

    for field_name, info in Settings.model_fields.items():
        if field_name == "retry":
            for nested, nested_info in RetryPolicy.model_fields.items():
                add(("retry", nested), nested_info)
            continue
        add((field_name,), info)
    return "\n".join(rows) + "\n"


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


README_START = "<!-- settings-table:start -->\n"
README_END = "<!-- settings-table:end -->"


def rewrite_readme(path: Path) -> bool:
    """Put :func:`settings_table` between the README's markers; True when it changed."""
    text = path.read_text(encoding="utf-8")
    start = text.index(README_START) + len(README_START)
    end = text.index(README_END, start)
    updated = text[:start] + settings_table() + text[end:]
    if updated != text:
        path.write_text(updated, encoding="utf-8")
    return updated != text


if __name__ == "__main__":  # python -m workflows.settings [--readme]: print or rewrite the table
    import sys

    if sys.argv[1:] == ["--readme"]:
        readme = Path(__file__).resolve().parent.parent / "README.md"
        print("README.md updated" if rewrite_readme(readme) else "README.md is up to date")
    else:
        print(settings_table(), end="")
