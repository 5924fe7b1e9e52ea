"""Drill schedules without the lab: cron expressions (fields, ranges, steps, names, day of month
OR day of week, time zones), clear refusals, and ``ferryman drills`` on the store."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from tests.workflows.conftest import EXAMPLE
from workflows.cli import main
from workflows.drills import Cron, CronInvalid, zone_of

SUNDAY_NIGHT = datetime(2026, 12, 6, 22, 30, tzinfo=UTC)  # a Sunday


@pytest.mark.parametrize(
    ("expression", "previous", "following"),
    [
        ("0 3 * * sun", "2026-12-06T03:00", "2026-12-13T03:00"),
        ("0 3 * * 7", "2026-12-06T03:00", "2026-12-13T03:00"),
        ("*/15 9-17 * * mon-fri", "2026-12-04T17:45", "2026-12-07T09:00"),
        ("30 22 * * *", "2026-12-06T22:30", "2026-12-07T22:30"),
        ("0 0 1 jan,jul *", "2026-07-01T00:00", "2027-01-01T00:00"),
        # day of month and day of week both given: either matches, as in cron
        ("0 12 15 * mon", "2026-11-30T12:00", "2026-12-07T12:00"),
        ("5,10 1 29 2 *", "2024-02-29T01:10", "2028-02-29T01:05"),
    ],
)
def test_slots_before_and_after(expression: str, previous: str, following: str) -> None:
    cron = Cron.parse(expression)
    before = cron.previous(SUNDAY_NIGHT, UTC)
    after = cron.following(SUNDAY_NIGHT, UTC)
    assert before is not None and after is not None
    assert before.strftime("%Y-%m-%dT%H:%M") == previous
    assert after.strftime("%Y-%m-%dT%H:%M") == following


def test_slots_in_a_time_zone_are_returned_in_utc() -> None:
    cron = Cron.parse("0 3 * * *")
    stockholm = cron.following(SUNDAY_NIGHT, ZoneInfo("Europe/Stockholm"))
    assert stockholm == datetime(2026, 12, 7, 2, 0, tzinfo=UTC)  # 03:00 CET
    summer = cron.following(datetime(2026, 7, 1, tzinfo=UTC), zone_of("Europe/Stockholm"))
    assert summer == datetime(2026, 7, 1, 1, 0, tzinfo=UTC)  # 03:00 CEST


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("* * * *", "has 4 fields: give five fields: minute hour day-of-month month"),
        ("60 * * * *", "minute 60 is out of 0-59"),
        ("0 24 * * *", "hour 24 is out of 0-23"),
        ("0 0 0 * *", "day of month 0 is out of 1-31"),
        ("0 0 * 13 *", "month 13 is out of 1-12"),
        ("0 0 * * 8", "day of week 8 is out of 0-7"),
        ("0 0 * * funday", "day of week 'funday' is not a number"),
        ("*/0 * * * *", "minute step '0' must be a number from 1"),
        ("9-3 * * * *", "minute range '9-3' runs backwards"),
        ("0 0 30 2 *", "never comes"),
    ],
)
def test_bad_expressions_say_what_to_fix(expression: str, says: str) -> None:
    with pytest.raises(CronInvalid) as refused:
        Cron.parse(expression)
    assert says in str(refused.value)
    assert "\n" not in str(refused.value)


def test_an_unknown_time_zone_is_refused() -> None:
    with pytest.raises(CronInvalid, match="unknown time zone 'Europe/Atlantis'"):
        zone_of("Europe/Atlantis")


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FERRYMAN_BROKER_URL", "FERRYMAN_RESULT_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FERRYMAN_DATABASE_URL", f"sqlite:///{tmp_path}/drills.db")
    monkeypatch.setenv("FERRYMAN_PLAN_PATHS", str(EXAMPLE))


def test_drills_set_list_and_remove(store: None) -> None:
    runner = CliRunner()
    made = runner.invoke(main, ["drills", "set", "three-tier", "--cron", "0 3 * * sun"])
    assert made.exit_code == 0, made.output
    assert "plan three-tier: drilled at '0 3 * * sun' (UTC), next 20" in made.output
    listed = json.loads(runner.invoke(main, ["drills", "list", "--json"]).output)
    (schedule,) = listed["schedules"]
    assert schedule["plan"] == "three-tier" and schedule["cron"] == "0 3 * * sun"
    assert "(administrator via local CLI)" in schedule["updated_by"]
    assert datetime.fromisoformat(schedule["next"]).isoweekday() == 7

    bad = runner.invoke(main, ["drills", "set", "three-tier", "--cron", "0 3 * *"])
    assert bad.exit_code == 1
    assert "cron expression '0 3 * *' has 4 fields" in bad.output
    unknown = runner.invoke(main, ["drills", "set", "nope", "--cron", "0 3 * * *"])
    assert unknown.exit_code == 1 and "nope" in unknown.output

    assert runner.invoke(main, ["drills", "remove", "three-tier"]).exit_code == 0
    again = runner.invoke(main, ["drills", "remove", "three-tier"])
    assert again.exit_code == 1 and "plan 'three-tier' has no drill schedule" in again.output
    assert json.loads(runner.invoke(main, ["drills", "list", "--json"]).output)["schedules"] == []


def test_run_due_needs_a_shared_broker(store: None) -> None:
    refused = CliRunner().invoke(main, ["drills", "run-due"])
    assert refused.exit_code == 1
    assert "drills need a shared broker (set FERRYMAN_BROKER_URL)" in refused.output


def test_the_beat_sends_the_drill_tick_every_minute_to_the_engine_queue() -> None:
    from workers.app import create_app
    from workflows.settings import Settings
    from workflows.steps import DRILL_TICK, ENGINE_QUEUE, TASK_DRILLS

    app = create_app(Settings(database_url="sqlite://"))
    entry = app.conf.beat_schedule["ferryman-drills"]
    assert entry["task"] == TASK_DRILLS and entry["schedule"] == DRILL_TICK == 60.0
    assert entry["options"]["queue"] == ENGINE_QUEUE
