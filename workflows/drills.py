"""Scheduled drills: a test failover of a plan at the times of its cron schedule, its cleanup,
and the report kept; webhooks told when a drill succeeds, fails or is missed.

A plan's schedule (:class:`~workflows.store.tables.DrillSchedule`) is a five-field cron
expression (minute, hour, day of month, month, day of week) in a time zone, UTC unless given.
Celery beat sends :data:`TASK_DRILLS` every minute (one beat per deployment); each
:func:`tick` then, for every schedule:

- starts the drill of the latest slot that has come, if it came less than ``grace`` ago: its
  row (unique plan and slot) is inserted first, so two beats, a redelivered tick or a
  ``ferryman drills run-due`` at the same time start one drill for a slot; the test failover
  carries the idempotency key ``drill:PLAN:SLOT``, so a tick that died between the two
  finds the same run again;
- records as missed each slot since the last one dealt with that passed without a start
  (the beat was down), and a slot whose start was refused because the plan's VMs are held by
  another run;
- moves started drills on: once the test failover (which runs the plan's health checks) is
  over, the drill cleans it up, and once the cleanup is over keeps the report (a summary with
  the health checks, linked to the run's full report) and says succeeded or failed.

A drill's run is an ordinary test failover: it waits at the plan's gates like any other
(approvers are told through ``gate_waiting`` webhooks).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from plans.errors import ConfigurationError, FerrymanError
from workflows.compiler import RunOperation
from workflows.engine import BundleLike, Engine
from workflows.notifications import NotificationEvent, notify
from workflows.operations import Operations
from workflows.settings import Settings
from workflows.statuses import RunStatus
from workflows.steps import DRILL_TICK, TASK_DRILLS
from workflows.store import AuditEvent, Database, Run, repository, utcnow
from workflows.store.repository import VmLocked
from workflows.store.tables import Drill, DrillSchedule

log = logging.getLogger(__name__)

GRACE = timedelta(minutes=10)  # a slot not started within this is missed
BACKFILL = 20  # slots looked back at per schedule and tick
RESTART_AFTER = timedelta(minutes=2)  # a drill stuck starting or cleaning this long is retried
ACTOR = "drill-scheduler (operator via drill schedule)"
HORIZON_DAYS = 4 * 366 + 1  # a cron day (29 February, a Monday) comes within this

STARTING, TESTING, CLEANING = "starting", "testing", "cleaning"
SUCCEEDED, FAILED, MISSED = "succeeded", "failed", "missed"
IN_PROGRESS = (STARTING, TESTING, CLEANING)
FINISHED_RUN = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.COMPENSATED, RunStatus.CANCELLED)


class CronInvalid(ConfigurationError):
    """A cron expression or time zone that cannot be used; the message says what to fix."""


class DrillScheduleNotFound(FerrymanError):
    """The plan has no drill schedule."""


# -- cron ---------------------------------------------------------------------------------------

FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)
NAMES = {
    3: ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
    4: ["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
}
HINT = "give five fields: minute hour day-of-month month day-of-week, e.g. '0 3 * * sun'"


def _value(text: str, index: int) -> int:
    name, low, high = FIELDS[index]
    names = NAMES.get(index)
    if names and text.lower() in names:
        return names.index(text.lower()) + (1 if index == 3 else 0)
    if not re.fullmatch(r"\d{1,2}", text):
        hint = f" or a name ({names[0]}..{names[-1]})" if names else ""
        raise ValueError(f"{name} {text!r} is not a number{hint}")
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{name} {value} is out of {low}-{high}")
    return value


def _field(text: str, index: int) -> tuple[frozenset[int], bool]:
    """The values a field allows, and whether it is ``*`` (unrestricted)."""
    name, low, high = FIELDS[index]
    values: set[int] = set()
    for part in text.split(","):
        body, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not re.fullmatch(r"\d{1,2}", step_text) or int(step_text) == 0:
                raise ValueError(f"{name} step {step_text!r} must be a number from 1")
            step = int(step_text)
        if body == "*":
            first, last = low, high
        elif "-" in body:
            start, _, end = body.partition("-")
            first, last = _value(start, index), _value(end, index)
            if first > last:
                raise ValueError(f"{name} range {body!r} runs backwards")
        else:
            first = _value(body, index)
            last = high if slash else first
        values.update(range(first, last + 1, step))
    if index == 4 and 7 in values:  # both 0 and 7 are Sunday
        values.discard(7)
        values.add(0)
    return frozenset(values), text == "*"


@dataclass(frozen=True)
class Cron:
    """A five-field cron expression: when it matches, and its slots before or after a time."""

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # day of month is *
    any_weekday: bool  # day of week is *

    @classmethod
    def parse(cls, expression: str) -> Cron:
        """Parse ``expression`` (raises :class:`CronInvalid` saying what to fix)."""
        parts = expression.split()
        if len(parts) != 5:
            raise CronInvalid(f"cron expression {expression!r} has {len(parts)} fields: {HINT}")
        try:
            parsed = [_field(part, index) for index, part in enumerate(parts)]
        except ValueError as exc:
            raise CronInvalid(f"cron expression {expression!r}: {exc}; {HINT}") from None
        cron = cls(
            " ".join(parts),
            parsed[0][0],
            parsed[1][0],
            parsed[2][0],
            parsed[3][0],
            parsed[4][0],
            parsed[2][1],
            parsed[4][1],
        )
        if cron.following(datetime(2000, 1, 1, tzinfo=UTC), UTC) is None:
            raise CronInvalid(f"cron expression {expression!r} never comes (no such day)")
        return cron

    def matches_day(self, day: date) -> bool:
        """Whether ``day`` is a day of the schedule (day of month OR day of week when both
        are restricted, as cron has it)."""
        if day.month not in self.months:
            return False
        in_month = day.day in self.days
        in_week = day.isoweekday() % 7 in self.weekdays
        if self.any_day or self.any_weekday:
            return in_month and in_week
        return in_month or in_week

    def _times(self, reverse: bool) -> list[time]:
        return [
            time(h, m)
            for h in sorted(self.hours, reverse=reverse)
            for m in sorted(self.minutes, reverse=reverse)
        ]

    def previous(self, at: datetime, zone: tzinfo) -> datetime | None:
        """The latest slot at or before ``at`` (UTC), or None within four years."""
        local = at.astimezone(zone)
        day = local.date()
        times = self._times(reverse=True)
        for _ in range(HORIZON_DAYS):
            if self.matches_day(day):
                for moment in times:
                    slot = datetime.combine(day, moment, tzinfo=zone)
                    if slot <= local:
                        return slot.astimezone(UTC)
            day -= timedelta(days=1)
        return None

    def following(self, at: datetime, zone: tzinfo) -> datetime | None:
        """The first slot after ``at`` (UTC), or None within four years."""
        local = at.astimezone(zone)
        day = local.date()
        times = self._times(reverse=False)
        for _ in range(HORIZON_DAYS):
            if self.matches_day(day):
                for moment in times:
                    slot = datetime.combine(day, moment, tzinfo=zone)
                    if slot > local:
                        return slot.astimezone(UTC)
            day += timedelta(days=1)
        return None


def zone_of(name: str) -> ZoneInfo:
    """The time zone called ``name`` (raises :class:`CronInvalid` for an unknown one)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronInvalid(
            f"unknown time zone {name!r}: give an IANA name such as UTC or Europe/Stockholm"
        ) from None


# -- schedules ----------------------------------------------------------------------------------


def _audit(session: Session, event: str, actor: str, message: str, data: dict[str, Any]) -> None:
    session.add(AuditEvent(run_id="", event=event, actor=actor, message=message, data=data))


def set_schedule(
    session: Session, *, plan: str, cron: str, timezone: str = "UTC", by: str
) -> DrillSchedule:
    """Drill ``plan`` at the slots of ``cron`` in ``timezone`` from now on (audited)."""
    parsed = Cron.parse(cron)
    zone_of(timezone)
    now = utcnow()
    row = session.exec(select(DrillSchedule).where(DrillSchedule.plan == plan)).first()
    if row is None:
        row = DrillSchedule(plan=plan, cron=parsed.expression, created_by=by, created_at=now)
    row.cron = parsed.expression
    row.timezone = timezone
    row.enabled = True
    row.since = now
    row.updated_at = now
    row.updated_by = by
    session.add(row)
    _audit(
        session,
        "drill_schedule_set",
        by,
        f"plan {plan}: drill at {parsed.expression!r} ({timezone})",
        {"plan": plan, "cron": parsed.expression, "timezone": timezone},
    )
    session.flush()
    return row


def remove_schedule(session: Session, *, plan: str, by: str) -> DrillSchedule:
    """Stop drilling ``plan`` (its drills stay on record; audited)."""
    row = session.exec(select(DrillSchedule).where(DrillSchedule.plan == plan)).first()
    if row is None:
        raise DrillScheduleNotFound(f"plan {plan!r} has no drill schedule")
    session.delete(row)
    _audit(session, "drill_schedule_removed", by, f"plan {plan}: no more drills", {"plan": plan})
    session.flush()
    return row


def get_schedule(session: Session, plan: str) -> DrillSchedule:
    """The drill schedule of ``plan``."""
    row = session.exec(select(DrillSchedule).where(DrillSchedule.plan == plan)).first()
    if row is None:
        raise DrillScheduleNotFound(f"plan {plan!r} has no drill schedule")
    return row


def list_schedules(session: Session) -> list[DrillSchedule]:
    """Every drill schedule, by plan."""
    return list(session.exec(select(DrillSchedule).order_by(col(DrillSchedule.plan))).all())


def drills_of(session: Session, plan: str | None = None, limit: int = 20) -> list[Drill]:
    """The latest drills (of ``plan``), newest slot first."""
    query = select(Drill).order_by(col(Drill.slot).desc()).limit(limit)
    if plan:
        query = query.where(Drill.plan == plan)
    return list(session.exec(query).all())


def next_slot(schedule: DrillSchedule, now: datetime | None = None) -> datetime | None:
    """When ``schedule`` next drills."""
    cron = Cron.parse(schedule.cron)
    return cron.following(now or utcnow(), zone_of(schedule.timezone))


def schedule_json(schedule: DrillSchedule, now: datetime | None = None) -> dict[str, Any]:
    """A schedule as the API and ``--json`` show it."""
    upcoming = next_slot(schedule, now)
    return {
        "plan": schedule.plan,
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "enabled": schedule.enabled,
        "next": upcoming.isoformat() if upcoming else None,
        "since": _iso(schedule.since),
        "created_by": schedule.created_by,
        "updated_by": schedule.updated_by,
        "updated_at": _iso(schedule.updated_at),
    }


def drill_json(drill: Drill) -> dict[str, Any]:
    """A drill as the API and ``--json`` show it (``report`` links the run's full report)."""
    return {
        "id": drill.id,
        "plan": drill.plan,
        "slot": _iso(drill.slot),
        "status": drill.status,
        "run": drill.run_id,
        "cleanup": drill.cleanup_run_id,
        "error": drill.error,
        "summary": drill.report,
        "report": f"/api/v1/runs/{drill.run_id}/report" if drill.run_id else None,
        "created_at": _iso(drill.created_at),
        "finished_at": _iso(drill.finished_at),
    }


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# -- the tick -----------------------------------------------------------------------------------


@dataclass
class TickResult:
    """What a tick did, by drill id."""

    started: list[int] = field(default_factory=list)
    missed: list[int] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """As the task's result and ``drills run-due --json``."""
        return {
            "started": self.started,
            "missed": self.missed,
            "finished": self.finished,
            "errors": self.errors,
        }


def slot_key(plan: str, slot: datetime) -> str:
    """The idempotency key of the test failover of ``plan``'s drill at ``slot``."""
    return f"drill:{plan}:{_utc(slot).astimezone(UTC):%Y-%m-%dT%H:%MZ}"


class Drills:
    """Starts due drills and moves started ones on, over one engine."""

    def __init__(
        self,
        engine: Engine,
        load_bundle: Callable[[], BundleLike],
        *,
        grace: timedelta = GRACE,
    ) -> None:
        self.engine = engine
        self.operations = Operations(engine)
        self.load_bundle = load_bundle
        self.grace = grace
        self._bundle: BundleLike | None = None

    @property
    def db(self) -> Database:
        """The store."""
        return self.engine.db

    def bundle(self) -> BundleLike:
        """The plans, read once per tick."""
        if self._bundle is None:
            self._bundle = self.load_bundle()
        return self._bundle

    def tick(self, now: datetime | None = None) -> TickResult:
        """Start what is due, record what was missed, move started drills on."""
        now = _utc(now or utcnow())
        self._bundle = None
        result = TickResult()
        with self.db.session() as session:
            schedules = list(
                session.exec(select(DrillSchedule).where(DrillSchedule.enabled == True)).all()  # noqa: E712
            )
        for schedule in schedules:
            try:
                self._due(schedule, now, result)
            except FerrymanError as exc:
                result.errors.append(f"plan {schedule.plan}: {exc}")
        with self.db.session() as session:
            going = list(
                session.exec(select(Drill).where(col(Drill.status).in_(IN_PROGRESS))).all()
            )
        for drill in going:
            try:
                self._advance(drill, result)
            except FerrymanError as exc:
                result.errors.append(f"drill {drill.id} of plan {drill.plan}: {exc}")
        return result

    # -- starting

    def _slots(self, schedule: DrillSchedule, now: datetime) -> Iterator[datetime]:
        """The schedule's slots from the latest back to its start, newest first."""
        cron = Cron.parse(schedule.cron)
        zone = zone_of(schedule.timezone)
        since = _utc(schedule.since)
        at = now
        for _ in range(BACKFILL):
            slot = cron.previous(at, zone)
            if slot is None or slot < since:
                return
            yield slot
            at = slot - timedelta(seconds=1)

    def _due(self, schedule: DrillSchedule, now: datetime, result: TickResult) -> None:
        for index, slot in enumerate(self._slots(schedule, now)):
            with self.db.session() as session:
                known = session.exec(
                    select(Drill.id).where(Drill.plan == schedule.plan, Drill.slot == slot)
                ).first()
            if known is not None:
                return  # this slot and the ones before it were dealt with
            if index == 0 and now - slot <= self.grace:
                drill_id = self._insert(schedule.plan, slot, STARTING)
                if drill_id is not None:
                    self._start(drill_id, result)
                continue
            reason = (
                f"no drill was started within {int(self.grace.total_seconds() // 60)} min "
                f"of the slot {slot.isoformat()} (was the beat running?)"
            )
            drill_id = self._insert(schedule.plan, slot, MISSED, error=reason, now=now)
            if drill_id is not None:
                result.missed.append(drill_id)

    def _insert(
        self,
        plan: str,
        slot: datetime,
        status: str,
        *,
        error: str = "",
        now: datetime | None = None,
    ) -> int | None:
        """The new drill's id; None when another tick inserted that slot first."""
        try:
            with self.db.session() as session:
                drill = Drill(plan=plan, slot=slot, status=status, error=error)
                if status == MISSED:
                    drill.finished_at = now or utcnow()
                session.add(drill)
                session.flush()
                if status == MISSED:
                    _notify(session, drill, NotificationEvent.DRILL_MISSED)
                return drill.id
        except IntegrityError:
            return None

    def _start(self, drill_id: int, result: TickResult) -> None:
        with self.db.session() as session:
            drill = session.get(Drill, drill_id)
            assert drill is not None
        key = slot_key(drill.plan, drill.slot)
        try:
            outcome = self.operations.start(
                self.bundle(), drill.plan, "test", "failover", by=ACTOR, idempotency_key=key
            )
            run_id, new = outcome.run.id, not outcome.replayed
        except IntegrityError:
            # a tick retrying a stale start raced another with the same key: its run stands
            with self.db.session() as session:
                found = repository.find_run_by_key(session, idempotency_key=key)
            if found is None:
                raise
            run_id, new = found.id, False
        except VmLocked as exc:
            self._finish(drill_id, (STARTING,), MISSED, error=f"not started: {exc}")
            result.missed.append(drill_id)
            return
        except FerrymanError as exc:
            self._finish(drill_id, (STARTING,), FAILED, error=f"not started: {exc}")
            result.finished.append(drill_id)
            return
        with self.db.session() as session:
            session.execute(
                update(Drill)
                .where(col(Drill.id) == drill_id, col(Drill.status) == STARTING)
                .values(status=TESTING, run_id=run_id, updated_at=utcnow())
            )
        if new:  # not when a retried start found the run made before
            result.started.append(drill_id)

    # -- moving on

    def _advance(self, drill: Drill, result: TickResult) -> None:
        # how long a drill or run has been in a state is measured on the store's clock (the
        # tick's ``now`` may be given, to act as of a slot)
        stale = _older(drill.updated_at, utcnow(), RESTART_AFTER)
        if drill.status == STARTING:
            if stale:  # the tick that inserted it died before starting the run
                self._start(drill.id or 0, result)
            return
        if drill.run_id is None:
            return
        with self.db.session() as session:
            run = session.get(Run, drill.run_id)
        if run is None:
            self._finish(drill.id or 0, IN_PROGRESS, FAILED, error="the drill's run is gone")
            result.finished.append(drill.id or 0)
            return
        if drill.status == TESTING:
            if RunStatus(run.status) not in FINISHED_RUN:
                return
            error = "" if run.status == RunStatus.SUCCEEDED else _run_failure(run)
            if run.status != RunStatus.SUCCEEDED and self.engine.settings.auto_compensate_test:
                # a failed test failover is undone by a compensation run of its own
                undo = self._child(run, RunOperation.COMPENSATE)
                if undo is None and not _older(run.finished_at, utcnow(), RESTART_AFTER):
                    return  # its compensation is about to start
                if undo is not None:
                    if RunStatus(undo.status) not in FINISHED_RUN:
                        return
                    if undo.status != RunStatus.SUCCEEDED:
                        error += f"; its undo {_run_failure(undo)}"
                    if self._finish(drill.id or 0, (TESTING,), FAILED, error=error):
                        result.finished.append(drill.id or 0)
                    return
            if not self._claim(drill.id or 0, TESTING, CLEANING, error):
                return
            self._cleanup(drill.id or 0, run, result)
            return
        # cleaning
        cleanup = self._cleanup_run(drill, run)
        if cleanup is None:
            if stale:  # the tick that claimed the cleanup died before starting it
                self._cleanup(drill.id or 0, run, result)
            return
        if RunStatus(cleanup.status) not in FINISHED_RUN:
            return
        error = self._error_of(drill.id or 0)
        if cleanup.status != RunStatus.SUCCEEDED:
            error = "; ".join(filter(None, [error, f"cleanup {_run_failure(cleanup)}"]))
        final = FAILED if error else SUCCEEDED
        if self._finish(drill.id or 0, (CLEANING,), final, error=error, cleanup=cleanup):
            result.finished.append(drill.id or 0)

    def _child(self, run: Run, operation: RunOperation) -> Run | None:
        """The latest ``operation`` run started after ``run``."""
        with self.db.session() as session:
            return session.exec(
                select(Run)
                .where(Run.parent_id == run.id, Run.operation == operation.value)
                .order_by(col(Run.created_at).desc())
            ).first()

    def _cleanup_run(self, drill: Drill, run: Run) -> Run | None:
        if drill.cleanup_run_id:
            with self.db.session() as session:
                return session.get(Run, drill.cleanup_run_id)
        found = self._child(run, RunOperation.CLEANUP)
        if found is not None:
            with self.db.session() as session:
                session.execute(
                    update(Drill)
                    .where(col(Drill.id) == drill.id)
                    .values(cleanup_run_id=found.id, updated_at=utcnow())
                )
        return found

    def _cleanup(self, drill_id: int, run: Run, result: TickResult) -> None:
        try:
            outcome = self.operations.follow_up(run.id, RunOperation.CLEANUP, by=ACTOR)
        except FerrymanError as exc:
            error = self._error_of(drill_id)
            error = "; ".join(filter(None, [error, f"cleanup not started: {exc}"]))
            if self._finish(drill_id, (CLEANING,), FAILED, error=error):
                result.finished.append(drill_id)
            return
        with self.db.session() as session:
            session.execute(
                update(Drill)
                .where(col(Drill.id) == drill_id)
                .values(cleanup_run_id=outcome.run.id, updated_at=utcnow())
            )

    def _error_of(self, drill_id: int) -> str:
        with self.db.session() as session:
            drill = session.get(Drill, drill_id)
        return drill.error if drill is not None else ""

    def _claim(self, drill_id: int, current: str, new: str, error: str = "") -> bool:
        with self.db.session() as session:
            done = session.execute(
                update(Drill)
                .where(col(Drill.id) == drill_id, col(Drill.status) == current)
                .values(status=new, error=error, updated_at=utcnow())
            )
            return bool(done.rowcount)  # type: ignore[attr-defined]

    def _finish(
        self,
        drill_id: int,
        current: tuple[str, ...],
        final: str,
        *,
        error: str = "",
        cleanup: Run | None = None,
    ) -> bool:
        """Record the drill's outcome, its report and the notification in one transaction;
        False when another tick recorded it first."""
        with self.db.session() as session:
            drill = session.get(Drill, drill_id)
            if drill is None or drill.status not in current:
                return False
            now = utcnow()
            done = session.execute(
                update(Drill)
                .where(col(Drill.id) == drill_id, col(Drill.status) == drill.status)
                .values(
                    status=final,
                    error=error,
                    updated_at=now,
                    finished_at=now,
                    report=_summary(session, drill, cleanup) if drill.run_id else None,
                )
            )
            if not done.rowcount:  # type: ignore[attr-defined]
                return False
            session.refresh(drill)
            event = {
                SUCCEEDED: NotificationEvent.DRILL_SUCCEEDED,
                FAILED: NotificationEvent.DRILL_FAILED,
                MISSED: NotificationEvent.DRILL_MISSED,
            }[final]
            _notify(session, drill, event)
        return True


def _older(moment: datetime | None, now: datetime, age: timedelta) -> bool:
    return moment is not None and now - _utc(moment) > age


def _run_failure(run: Run) -> str:
    return f"run {run.id} {run.status}" + (f": {run.error}" if run.error else "")


def _summary(session: Session, drill: Drill, cleanup: Run | None) -> dict[str, Any]:
    """What the drill keeps of its run's report: outcome, RTO, health checks, gates."""
    from workflows import report

    data = report.build(session, drill.run_id or "")
    run = data["run"]
    return {
        "run": {
            "id": run["id"],
            "status": run["status"],
            "error": run["error"],
            "started_at": run["started_at"],
            "finished_at": run["finished_at"],
            "duration": run["duration"],
        },
        "rto": data.get("rto"),
        "health_checks": [
            {
                "key": s["key"],
                "vm": s["vm"],
                "status": s["status"],
                "duration": s["duration"],
                "error": s["error"],
            }
            for s in data["steps"]
            if s["kind"] == "health_check"
        ],
        "approvals": [
            {"name": a["name"], "status": a["status"], "decided_by": a["decided_by"]}
            for a in data["approvals"]
        ],
        "cleanup": (
            {"id": cleanup.id, "status": cleanup.status, "error": cleanup.error}
            if cleanup is not None
            else None
        ),
        "report": f"/api/v1/runs/{run['id']}/report",
    }


def _notify(session: Session, drill: Drill, event: NotificationEvent) -> None:
    notify(
        session,
        event,
        subject=f"drill:{drill.id}:{event.value}",
        plan=drill.plan,
        run_id=drill.run_id,
        payload={"message": drill.error or drill.status, "drill": drill_json(drill)},
    )


class DrillTicker:
    """Ticks every ``interval`` seconds in a daemon thread: the beat of a single process
    (``ferryman serve`` with the in-memory broker, where no Celery beat can reach its
    worker). A tick at the same time as another starts nothing twice."""

    def __init__(self, drills: Drills, *, interval: float = DRILL_TICK) -> None:
        self.drills = drills
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ferryman-drills", daemon=True)

    def start(self) -> DrillTicker:
        """Start the thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread (after its current tick)."""
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                result = self.drills.tick()
                for line in result.errors:
                    log.warning("drills: %s", line)
            except Exception:  # a bad tick must not end the schedule; it is logged
                log.exception("drill tick failed")
            self._stop.wait(self.interval)


def plans_loader(settings: Settings) -> Callable[[], BundleLike]:
    """Reads the configured plan files (``FERRYMAN_PLAN_PATHS``) afresh at each call."""

    def load() -> BundleLike:
        from plans.bundle import validate
        from plans.problems import PlanInvalid
        from workflows.triggers import plan_files

        files = plan_files(settings.plan_paths)
        if not files:
            raise FerrymanError("no plan files configured: set FERRYMAN_PLAN_PATHS")
        found = validate(files)
        if found.bundle is None:
            raise PlanInvalid(found.problems)
        return found.bundle

    return load


def tick(
    engine: Engine, load_bundle: Callable[[], BundleLike], now: datetime | None = None
) -> TickResult:
    """One round of the drill scheduler (what the beat's task and ``drills run-due`` do)."""
    return Drills(engine, load_bundle).tick(now)


__all__ = [
    "DRILL_TICK",
    "TASK_DRILLS",
    "Cron",
    "CronInvalid",
    "DrillScheduleNotFound",
    "DrillTicker",
    "Drills",
    "TickResult",
    "drill_json",
    "drills_of",
    "get_schedule",
    "list_schedules",
    "plans_loader",
    "remove_schedule",
    "schedule_json",
    "set_schedule",
    "tick",
]
