"""Parameter binding the way PowerShell does it, for the cmdlets the lab implements.

Names match case-insensitively, by alias, or by an unambiguous prefix; positional arguments
fill the cmdlet's positional parameters; the parameter set is chosen from the names bound, so
``Start-VMFailover -AsTest -Prepare`` fails with ``AmbiguousParameterSet`` as it does on a real
host.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lab.hyperv import errors
from lab.hyperv.timespan import TimeSpanError, parse_timespan
from lab.objects import CmdletError, LabObject

# Parameters every cmdlet accepts; the lab reads ErrorAction and ignores the rest.
COMMON = (
    "ErrorAction",
    "WarningAction",
    "InformationAction",
    "Verbose",
    "Debug",
    "ErrorVariable",
    "WarningVariable",
    "InformationVariable",
    "OutVariable",
    "OutBuffer",
    "PipelineVariable",
    "Confirm",
    "WhatIf",
)


# System.Management.Automation.ActionPreference, when a client sends the enum's number.
_ACTIONS: dict[Any, str] = {
    0: "SilentlyContinue",
    1: "Stop",
    2: "Continue",
    3: "Inquire",
    4: "Ignore",
    5: "Suspend",
}


@dataclass(frozen=True)
class Param:
    """One parameter: name, value kind and aliases.

    ``kind`` is ``string``, ``strings``, ``int``, ``bool``, ``switch``, ``datetime``,
    ``timespan`` (a ``timedelta``, converted as PowerShell converts to System.TimeSpan) or
    ``object`` (anything, e.g. a VM object or a DNS record from an earlier call).
    ``accepts`` narrows an ``object`` to live objects of one .NET type (e.g.
    ``Microsoft.HyperV.PowerShell.VMSnapshot``): anything else, a client's deserialised copy
    included, fails to convert as it does on a real host.
    """

    name: str
    kind: str = "string"
    aliases: tuple[str, ...] = ()
    accepts: str | None = None


@dataclass(frozen=True)
class ParamSet:
    """A parameter set: the parameters it requires and the ones it allows besides."""

    name: str
    required: frozenset[str] = frozenset()
    optional: frozenset[str] = frozenset()

    @property
    def allowed(self) -> frozenset[str]:
        """Every parameter the set accepts."""
        return self.required | self.optional


def pset(name: str, required: Sequence[str] = (), optional: Sequence[str] = ()) -> ParamSet:
    """Shorthand for a :class:`ParamSet`."""
    return ParamSet(name, frozenset(required), frozenset(optional))


@dataclass(frozen=True)
class Signature:
    """A cmdlet's parameters, parameter sets (default first) and pipeline binding."""

    cmdlet: str
    params: tuple[Param, ...]
    sets: tuple[ParamSet, ...]
    positional: tuple[str, ...] = ()
    # The parameter that pipeline input objects bind to (e.g. "VM"), if any.
    pipeline: str | None = None
    # Extra common parameters accepted and ignored (Hyper-V's ComputerName, AsJob, ...).
    ignored: tuple[str, ...] = ("ComputerName", "Credential", "CimSession")
    # Pipeline input bound by its type before falling back to ``pipeline``: (.NET type name,
    # parameter), e.g. a VMSnapshot piped into Start-VMFailover binds to -VMRecoverySnapshot.
    pipeline_types: tuple[tuple[str, str], ...] = ()

    def pipeline_target(self, obj: Any) -> str | None:
        """The parameter a piped object binds to (None: the cmdlet takes no pipeline input)."""
        names = obj.type_names if isinstance(obj, LabObject) else []
        for type_name, param in self.pipeline_types:
            if type_name in names:
                return param
        return self.pipeline


@dataclass
class Bound:
    """The outcome of binding: the parameter set chosen and each parameter's value."""

    cmdlet: str
    set_name: str
    values: dict[str, Any] = field(default_factory=dict)
    error_action: str = "Continue"

    def has(self, name: str) -> bool:
        """True when ``name`` was given."""
        return name in self.values

    def get(self, name: str, default: Any = None) -> Any:
        """The value of ``name``, or ``default``."""
        return self.values.get(name, default)

    def switch(self, name: str) -> bool:
        """True when the switch ``name`` was set."""
        return bool(self.values.get(name, False))

    def strings(self, name: str) -> list[str]:
        """A string-list parameter's values (empty when not given)."""
        value = self.values.get(name)
        return [] if value is None else list(value)


def bind(
    signature: Signature,
    parameters: Sequence[tuple[str | None, Any]],
    *,
    has_input: bool,
    piped: Sequence[Any] = (),
) -> Bound:
    """Bind ``parameters`` to ``signature``; raises :class:`CmdletError` as PowerShell would.

    ``piped`` (the pipeline input, if known) chooses the parameter each input object binds
    to by its type; without it, input binds to ``signature.pipeline``.
    """
    cmdlet = signature.cmdlet
    by_name: dict[str, Param] = {}
    for p in signature.params:
        by_name[p.name.lower()] = p
        for alias in p.aliases:
            by_name[alias.lower()] = p
    extra = {n.lower(): n for n in (*COMMON, *signature.ignored)}
    values: dict[str, Any] = {}
    error_action = "Continue"
    positional = list(signature.positional)
    for raw_name, raw_value in parameters:
        if raw_name is None:
            if not positional:
                raise CmdletError(errors.positional_not_found(cmdlet, raw_value))
            target = positional.pop(0)
            param = by_name[target.lower()]
        else:
            key = raw_name.lstrip("-").lower()
            found = by_name.get(key) or _by_prefix(cmdlet, key, by_name)
            if found is None:
                common = extra.get(key) or _prefix_common(key, extra)
                if common is None:
                    raise CmdletError(errors.parameter_not_found(cmdlet, raw_name.lstrip("-")))
                if common == "ErrorAction" and raw_value is not None:
                    error_action = _ACTIONS.get(raw_value, str(raw_value))
                if common in signature.ignored:
                    # Kept so the caller can route -ComputerName to another host.
                    values[common] = raw_value
                continue
            param = found
            if param.name in positional:
                positional.remove(param.name)
        values[param.name] = _coerce(cmdlet, param, raw_value)
    given = {n for n in values if n not in signature.ignored}
    targets = {signature.pipeline_target(obj) for obj in piped} if piped else set()
    if has_input and not targets:
        targets = {signature.pipeline}
    given.update(t for t in targets if t is not None)
    chosen = _choose_set(signature, given)
    return Bound(cmdlet, chosen, values, error_action)


def _by_prefix(cmdlet: str, key: str, by_name: dict[str, Param]) -> Param | None:
    matches = {p.name: p for n, p in by_name.items() if n.startswith(key)}
    if len(matches) > 1:
        raise CmdletError(
            errors.ErrorInfo(
                message=(
                    f"Parameter cannot be processed because the parameter name '{key}' is "
                    f"ambiguous. Possible matches include: {' '.join('-' + m for m in matches)}."
                ),
                fully_qualified_error_id=f"AmbiguousParameter,{errors.cmdlet_class(cmdlet)}",
                category="InvalidArgument",
                exception_type=errors.BINDING_EXCEPTION,
            )
        )
    return next(iter(matches.values()), None)


def _prefix_common(key: str, extra: dict[str, str]) -> str | None:
    matches = [v for k, v in extra.items() if k.startswith(key)]
    return matches[0] if len(matches) == 1 else None


def _choose_set(signature: Signature, given: set[str]) -> str:
    fitting = [s for s in signature.sets if given <= s.allowed]
    complete = [s for s in fitting if s.required <= given]
    if complete:
        return complete[0].name
    if fitting:
        missing = sorted(fitting[0].required - given)
        raise CmdletError(errors.missing_mandatory(signature.cmdlet, missing))
    raise CmdletError(errors.ambiguous_set(signature.cmdlet))


def _coerce(cmdlet: str, param: Param, value: Any) -> Any:
    kind = param.kind
    if kind == "switch":
        # PSRP sends a bare switch as True or as None (present, no argument).
        return value is None or bool(value)
    if kind == "object":
        return value if param.accepts is None else _instance(cmdlet, param, value)
    if kind == "timespan":
        try:
            return parse_timespan(value)
        except TimeSpanError as exc:
            conversion = errors.conversion_message(value, "System.TimeSpan", str(exc))
            info = errors.cannot_convert(cmdlet, param.name, conversion, value)
            raise CmdletError(info) from None
    if kind == "strings":
        items = value if isinstance(value, list | tuple) else [value]
        strings = [str(v) for v in items if v is not None]
        if not strings:
            # As in PowerShell; and an empty name list must never mean "every VM".
            raise CmdletError(
                errors.bad_argument(
                    cmdlet, param.name, "The argument is null, empty, or an empty array.", value
                )
            )
        return strings
    if value is None:
        raise CmdletError(
            errors.bad_argument(cmdlet, param.name, "The argument is null or empty.", value)
        )
    if kind == "string":
        if isinstance(value, list | tuple):
            if len(value) != 1:
                raise CmdletError(
                    errors.bad_argument(cmdlet, param.name, "Give a single value.", value)
                )
            value = value[0]
        return str(value)
    if kind == "int":
        try:
            return int(str(value)) if not isinstance(value, int) else int(value)
        except ValueError:
            raise CmdletError(
                errors.bad_argument(cmdlet, param.name, f"'{value}' is not an integer.", value)
            ) from None
    if kind == "bool":
        if isinstance(value, str):
            return value.strip().lower() in ("true", "1", "$true")
        return bool(value)
    if kind == "datetime":
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError:
            raise CmdletError(
                errors.bad_argument(cmdlet, param.name, f"'{value}' is not a date.", value)
            ) from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return value


def _instance(cmdlet: str, param: Param, value: Any) -> Any:
    """``value`` if it is a live object of ``param.accepts``; else the cast error."""
    if isinstance(value, list | tuple) and len(value) == 1:
        # A one-element array binds to a scalar parameter as its element.
        value = value[0]
    if isinstance(value, LabObject) and param.accepts in value.type_names:
        return value
    assert param.accepts is not None
    conversion = errors.conversion_message(value, param.accepts)
    raise CmdletError(errors.cannot_convert(cmdlet, param.name, conversion, value))
