"""Run options: a typed schema per failover type, so a typo never means the default.

A run request carries ``options`` (from a queue trigger's JSON or the CLI's ``--option``).
Without a schema, ``try_shutdwn: false`` was ignored and an unplanned failover shut the
primary down after all. Each failover type accepts exactly these options:

=================  =====================================================  ===================
option             meaning                                                types
=================  =====================================================  ===================
wait_ip_timeout    seconds to wait for each VM's address (1 to 86400)     test, planned,
                                                                          unplanned
try_shutdown       try to shut the primary VMs down first (true/false)    unplanned
recovery_point     ``latest``, a recovery point's name, or a mapping      unplanned
                   VM -> name
=================  =====================================================  ===================

An unknown option, one that does not apply to the type, or a wrongly typed value is an
:class:`OptionsInvalid` error naming each of them.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError

from plans.errors import ConfigurationError
from plans.model import DAY, FailoverType

Timeout = Annotated[float, Field(gt=0, le=DAY, allow_inf_nan=False)]
PointName = Annotated[StrictStr, Field(min_length=1, max_length=256)]


class OptionsInvalid(ConfigurationError):
    """Run options that do not fit the failover type's schema; the message names each one."""


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class TestOptions(_Options):
    """Options of a test failover."""

    wait_ip_timeout: Timeout = 600
    """Seconds to wait for each VM's address."""


class PlannedOptions(_Options):
    """Options of a planned failover."""

    wait_ip_timeout: Timeout = 600
    """Seconds to wait for each VM's address."""


class UnplannedOptions(_Options):
    """Options of an unplanned failover."""

    wait_ip_timeout: Timeout = 600
    """Seconds to wait for each VM's address."""
    try_shutdown: StrictBool = True
    """Try to shut the primary VMs down before failing over."""
    recovery_point: PointName | dict[StrictStr, PointName] = "latest"
    """``latest``, a recovery point's name, or per VM a name."""


SCHEMAS: dict[FailoverType, type[_Options]] = {
    FailoverType.TEST: TestOptions,
    FailoverType.PLANNED: PlannedOptions,
    FailoverType.UNPLANNED: UnplannedOptions,
}


def validate_options(failover_type: FailoverType | str, options: Any) -> dict[str, Any]:
    """``options`` checked against the schema of ``failover_type``: the options given, typed.

    Only the options given are returned (defaults stay the compiler's), so a stored run keeps
    what was asked. Raises :class:`OptionsInvalid` naming every unknown or wrongly typed
    option.
    """
    try:
        kind = FailoverType(str(getattr(failover_type, "value", failover_type)))
    except ValueError:
        raise OptionsInvalid(
            f"unknown failover type {failover_type!r}; types: test, planned, unplanned"
        ) from None
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise OptionsInvalid("options must be a mapping of option names to values")
    schema = SCHEMAS[kind]
    try:
        parsed = schema.model_validate(options)
    except ValidationError as exc:
        raise OptionsInvalid(_describe(exc, kind, schema)) from None
    return parsed.model_dump(mode="json", exclude_unset=True)


def _describe(exc: ValidationError, kind: FailoverType, schema: type[_Options]) -> str:
    allowed = ", ".join(sorted(schema.model_fields))
    problems: list[str] = []
    seen: set[str] = set()
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        name = str(loc[0]) if loc else "options"
        if name in seen:
            continue  # one line per option (a union reports each member)
        seen.add(name)
        shown = ascii(name) if len(name) <= 60 else ascii(name[:57] + "...")
        if error["type"] == "extra_forbidden":
            other = [t.value for t, s in SCHEMAS.items() if name in s.model_fields]
            hint = f" (only for {', '.join(other)})" if other else ""
            problems.append(
                f"unknown option {shown} for {_article(kind)} failover{hint}; options: {allowed}"
            )
        else:
            problems.append(f"option {shown}: {_expected(name)}, got {_value(error.get('input'))}")
    return "; ".join(problems)


def _expected(name: str) -> str:
    return {
        "wait_ip_timeout": "expected seconds, a number greater than 0 and at most 86400",
        "try_shutdown": "expected true or false",
        "recovery_point": "expected 'latest', a recovery point's name, or a mapping VM: name",
    }.get(name, "invalid value")


def _value(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _article(kind: FailoverType) -> str:
    return f"an {kind.value}" if kind is FailoverType.UNPLANNED else f"a {kind.value}"
