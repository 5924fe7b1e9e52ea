"""Ferryman's settings: ``FERRYMAN_*`` environment variables with embedded defaults.

The defaults run everything in one process (SQLite file in the working directory, in-memory
broker); production points ``FERRYMAN_DATABASE_URL`` at PostgreSQL and ``FERRYMAN_BROKER_URL``
at Redis. Settings hold URLs and references, never secret values: a password in a URL must be
given as ``FERRYMAN_BROKER_URL_FILE``-style references by the deployment, not here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from plans.errors import ConfigurationError

PREFIX = "FERRYMAN_"


class RetryPolicy(BaseModel):
    """Exponential backoff with jitter for transient errors, bounded in count and delay."""

    model_config = ConfigDict(frozen=True)

    max_retries: Annotated[int, Field(ge=0)] = 5
    base_delay: Annotated[float, Field(gt=0)] = 1.0
    max_delay: Annotated[float, Field(gt=0)] = 60.0

    def delay(self, attempt: int, jitter: float) -> float:
        """The wait before retry number ``attempt`` (0-based); ``jitter`` in [0, 1)."""
        ceiling = min(self.max_delay, self.base_delay * (2**attempt))
        # "equal jitter": half fixed, half random, so retries spread but never come at once
        return ceiling / 2 + ceiling / 2 * jitter


class Settings(BaseModel):
    """Every knob of the engine and its workers; build with :meth:`from_env`."""

    model_config = ConfigDict(frozen=True)

    database_url: str = "sqlite:///ferryman.db"
    broker_url: str = "memory://"
    result_backend: str = "cache+memory://"
    plan_paths: list[str] = Field(default_factory=list)
    retry: RetryPolicy = Field(default_factory=lambda: RetryPolicy())
    gate_timeout: float | None = None  # default for manual actions without their own timeout
    visibility_timeout: int = 7200  # longer than the longest task (scripts, IP waits)
    worker_concurrency: int = 16
    auto_compensate_test: bool = True
    advance_poll: float = 0.5  # wait before re-checking a stage whose steps are still running
    # how long a stage may stay committed but unsent before the workers' watch sends it again
    # (its process died between the commit and the send); sending twice is harmless
    dispatch_grace: float = 30.0
    # a worker refreshes the heartbeat of the steps it runs every ``step_heartbeat`` seconds;
    # a running step whose heartbeat is older than ``step_lease`` lost its worker (killed,
    # its message gone) and the workers' watch hands it to a fresh delivery
    step_heartbeat: Annotated[float, Field(gt=0)] = 10.0
    step_lease: Annotated[float, Field(gt=0)] = 120.0

    @field_validator("plan_paths", mode="before")
    @classmethod
    def _split_paths(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part for part in value.split(os.pathsep) if part]
        return value

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

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``FERRYMAN_*`` variables (``FERRYMAN_RETRY_MAX_RETRIES`` etc.), then overrides."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        retry: dict[str, Any] = {}
        for name in cls.model_fields:
            key = PREFIX + name.upper()
            if name != "retry" and key in env:
                values[name] = env[key]
        for name in RetryPolicy.model_fields:
            key = f"{PREFIX}RETRY_{name.upper()}"
            if key in env:
                retry[name] = env[key]
        if retry:
            values["retry"] = retry
        values.update(overrides)
        try:
            return cls.model_validate(values)
        except ValueError as exc:
            raise ConfigurationError(f"invalid FERRYMAN_* setting: {exc}") from None
