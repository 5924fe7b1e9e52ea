"""System.TimeSpan values as PowerShell's parameter binding converts them.

A ``[TimeSpan]`` parameter (e.g. ``-TimeToLive``) accepts:

- a TimeSpan itself (``timedelta``; psrpcore's ``PSDuration`` is one);
- TimeSpan text as ``TimeSpan.Parse`` reads it: ``[-]d``, ``[-][d.]hh:mm[:ss[.fffffff]]``
  (``00:05:00``, ``1.00:00:00``; a bare number is *days*);
- xs:duration text, how CLIXML writes a TimeSpan (``PT5M``, ``PT1H30M``, ``P1DT2H``,
  ``PT0.5S``; ``Y`` counts 365 days and ``M`` before ``T`` 30, as ``XmlConvert`` does);
- Python's ``str(timedelta)`` (``0:05:00``, ``1 day, 2:00:00``), because the lab's protocol
  layer hands a deserialised TimeSpan (``<TS>``) to the domain in that form;
- a number, as *ticks* of 100 ns, exactly like ``[TimeSpan]60`` in PowerShell (60 ticks,
  not 60 seconds: clients that send seconds as a number get what a real host would give).

Anything else raises :class:`TimeSpanError` carrying .NET's message.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

# TimeSpan.MaxValue is 10675199.02:48:05.4775807.
_MAX_DAYS = 10_675_199

FORMAT_MESSAGE = "String was not recognized as a valid TimeSpan."
OVERFLOW_MESSAGE = (
    "The TimeSpan could not be parsed because at least one of the numeric components is out "
    "of range or contains too many digits."
)

_CLOCK = re.compile(
    r"^(?P<neg>-)?(?:(?P<d>\d+)\.)?(?P<h>\d+):(?P<m>\d+)(?::(?P<s>\d+)(?:\.(?P<f>\d+))?)?$"
)
_DAYS = re.compile(r"^(?P<neg>-)?(?P<d>\d+)$")
_XS_DURATION = re.compile(
    r"^(?P<neg>-)?P(?:(?P<y>\d+)Y)?(?:(?P<mo>\d+)M)?(?:(?P<d>\d+)D)?"
    r"(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)
_PYTHON = re.compile(
    r"^(?:(?P<d>-?\d+) days?, )?(?P<h>\d{1,2}):(?P<m>\d\d):(?P<s>\d\d)(?:\.(?P<f>\d{1,6}))?$"
)


class TimeSpanError(ValueError):
    """A value that does not convert to System.TimeSpan; the message is .NET's."""


def parse_timespan(value: Any) -> timedelta:
    """``value`` as a TimeSpan, or :class:`TimeSpanError` (see the module docstring)."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or value is None:
        raise TimeSpanError(f'Cannot convert value "{value}" to type "System.TimeSpan".')
    if isinstance(value, int | float):
        # TimeSpan(Int64 ticks); PowerShell rounds a double to the nearest tick count.
        return _checked(timedelta(microseconds=round(value) / 10))
    text = str(value).strip()
    for parse in (_parse_dotnet, _parse_xs_duration, _parse_python):
        found = parse(text)
        if found is not None:
            return _checked(found)
    raise TimeSpanError(FORMAT_MESSAGE)


def _checked(span: timedelta) -> timedelta:
    if abs(span.days) > _MAX_DAYS:
        raise TimeSpanError(OVERFLOW_MESSAGE)
    return span


def _parse_dotnet(text: str) -> timedelta | None:
    bare = _DAYS.match(text)
    if bare:
        days = int(bare["d"])
        if days > _MAX_DAYS:
            raise TimeSpanError(OVERFLOW_MESSAGE)
        return -timedelta(days=days) if bare["neg"] else timedelta(days=days)
    clock = _CLOCK.match(text)
    if clock is None:
        return None
    hours, minutes = int(clock["h"]), int(clock["m"])
    seconds = int(clock["s"] or 0)
    fraction = clock["f"] or ""
    if hours > 23 or minutes > 59 or seconds > 59 or len(fraction) > 7:
        raise TimeSpanError(OVERFLOW_MESSAGE)
    ticks = int(fraction.ljust(7, "0")) if fraction else 0
    span = timedelta(
        days=int(clock["d"] or 0),
        hours=hours,
        minutes=minutes,
        seconds=seconds,
        microseconds=ticks / 10,
    )
    return -span if clock["neg"] else span


def _parse_xs_duration(text: str) -> timedelta | None:
    match = _XS_DURATION.match(text)
    # "P" alone and a "T" with nothing after it are not durations.
    if match is None or text.endswith(("P", "T")):
        return None
    span = timedelta(
        days=int(match["y"] or 0) * 365 + int(match["mo"] or 0) * 30 + int(match["d"] or 0),
        hours=int(match["h"] or 0),
        minutes=int(match["m"] or 0),
        seconds=float(match["s"] or 0),
    )
    return -span if match["neg"] else span


def _parse_python(text: str) -> timedelta | None:
    match = _PYTHON.match(text)
    if match is None:
        return None
    return timedelta(
        days=int(match["d"] or 0),
        hours=int(match["h"]),
        minutes=int(match["m"]),
        seconds=int(match["s"]),
        microseconds=int((match["f"] or "0").ljust(6, "0")),
    )


def whole_seconds(span: timedelta) -> int:
    """A TimeSpan's whole seconds (``TotalSeconds`` truncated), as DNS stores a TTL."""
    micro = (span.days * 86400 + span.seconds) * 1_000_000 + span.microseconds
    # Truncated toward zero, as .NET casts TotalSeconds to an integer.
    return -(-micro // 1_000_000) if micro < 0 else micro // 1_000_000
