"""Values as PowerShell converts them: System.TimeSpan text and wildcard patterns."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lab.hyperv.timespan import (
    FORMAT_MESSAGE,
    OVERFLOW_MESSAGE,
    TimeSpanError,
    parse_timespan,
    whole_seconds,
)
from lab.hyperv.wildcard import has_wildcards, matches, unescape


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("PT5M", timedelta(minutes=5)),
        ("PT1H30M", timedelta(hours=1, minutes=30)),
        ("P1DT2H", timedelta(days=1, hours=2)),
        ("-PT5M", -timedelta(minutes=5)),
        ("P1Y2M", timedelta(days=365 + 60)),
        ("PT0.25S", timedelta(milliseconds=250)),
        ("1.00:00:00", timedelta(days=1)),
        ("00:00:01.0000001", timedelta(seconds=1)),  # one tick is below a microsecond
        (" -1.02:03 ", -timedelta(days=1, hours=2, minutes=3)),
        ("7", timedelta(days=7)),
        ("-1 day, 23:55:00", -timedelta(minutes=5)),
        (10_000_000, timedelta(seconds=1)),
        (timedelta(hours=3), timedelta(hours=3)),
    ],
)
def test_timespan_forms(value: Any, expected: timedelta) -> None:
    assert parse_timespan(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", FORMAT_MESSAGE),
        ("soon", FORMAT_MESSAGE),
        ("PT5X", FORMAT_MESSAGE),
        ("P1.5D", FORMAT_MESSAGE),  # only seconds take a fraction in xs:duration
        ("1:2:3:4:5", FORMAT_MESSAGE),
        ("24:00:00", OVERFLOW_MESSAGE),
        ("00:00:60", OVERFLOW_MESSAGE),
        ("00:00:00.12345678", OVERFLOW_MESSAGE),
        ("99999999", OVERFLOW_MESSAGE),
    ],
)
def test_timespan_junk_carries_dotnets_message(value: str, message: str) -> None:
    with pytest.raises(TimeSpanError) as caught:
        parse_timespan(value)
    assert str(caught.value) == message


@settings(deadline=None)  # a busy machine must not fail a test about values
@given(st.timedeltas(min_value=timedelta(days=-10_000), max_value=timedelta(days=10_000)))
def test_python_and_dotnet_text_of_a_timedelta_round_trip(span: timedelta) -> None:
    # str(timedelta) is what the protocol layer hands over for a deserialised <TS>.
    assert parse_timespan(str(span)) == span
    whole = timedelta(seconds=int(abs(span).total_seconds()))
    days, rest = divmod(int(whole.total_seconds()), 86400)
    text = f"{days}.{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    assert parse_timespan(text) == whole


def test_whole_seconds_truncate_toward_zero() -> None:
    assert whole_seconds(timedelta(seconds=90.9)) == 90
    assert whole_seconds(-timedelta(seconds=90.9)) == -90


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        ("web-*", "WEB-01", True),
        ("web-0?", "web-01", True),
        ("web-0[12]", "web-03", False),
        ("web-0[1-3]", "web-03", True),
        ("sql-01 - (11/29/2026 - 02:49:41 PM)", "sql-01 - (11/29/2026 - 02:49:41 PM)", True),
        ("a`[1`]", "a[1]", True),  # escaped: a literal bracket, not a class
        ("a`[1`]", "a1", False),
        ("a`*", "a*", True),
        ("a`*", "ab", False),
        ("a[1", "a[1", False),  # an unclosed bracket matches nothing
    ],
)
def test_wildcards(pattern: str, text: str, expected: bool) -> None:
    assert matches(pattern, text) is expected


def test_escaped_names_are_literals() -> None:
    assert has_wildcards("web-*") and not has_wildcards("web`-`*01")
    assert unescape("a`[1`]``") == "a[1]`"
