"""A unit's per-step bookkeeping as prebuilt SQL on one autocommit connection, with plain rows.

A worker runs these for every step: read the unit's VM's steps once, then per step one
compare-and-set UPDATE that records the previous step's success and one that starts the
step. They are the statements :mod:`workflows.store.repository` builds (the same columns,
the same guards), compiled once per dialect and run by :class:`~workflows.store.database.
Statements` with parameters processed as SQLAlchemy would process them (JSON as JSON text,
times as the dialect stores them). The rows read are :class:`StepRow` values, not ORM
objects: building, tracking and syncing an ORM object per step, a session per step and a
statement's parameters per execution cost the worker several times the statements' own CPU.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from sqlalchemy import bindparam, exists, func, or_, select, update

from plans.errors import FerrymanError
from workflows.statuses import RunStatus, StepStatus, check_step
from workflows.store.database import Statements
from workflows.store.repository import (
    ANY_OWNER,
    Conflict,
    RunNotFound,
    _step_update,
    _transition,
    _update_guard,
)
from workflows.store.tables import Run, Step


@dataclass
class StepRow:
    """A step as the per-step path reads it: the columns it decides on, as plain values."""

    id: int
    run_id: str
    key: str
    kind: str
    status: str
    attempts: int
    task_id: str | None
    result: dict[str, Any] | None

    def show(self, values: Mapping[str, Any]) -> None:
        """Take the values an UPDATE of this row wrote (those of its columns kept here)."""
        for name in ("status", "attempts", "task_id", "result"):
            if name in values:
                setattr(self, name, values[name])


@dataclass
class UnitRead:
    """What a worker reads before a unit's first step (see :func:`read_unit`)."""

    run_status: RunStatus
    step: StepRow
    prior: dict[str, dict[str, Any]]  # the VM's succeeded steps' results by kind
    rows: dict[str, StepRow]  # every row read, by key (the unit's next steps among them)


@dataclass(frozen=True)
class Prebuilt:
    """A statement compiled once for a dialect: its SQL text and how to give it parameters."""

    sql: str
    names: tuple[str, ...] | None  # bind names in order when the dialect is positional
    defaults: Mapping[str, Any]  # the statement's own values (literals in its WHERE clause)
    processors: Mapping[str, Callable[[Any], Any]]  # bind name -> its type's processing

    @classmethod
    def of(cls, statement: Any, dialect: Any) -> Prebuilt:
        """Compile ``statement`` for ``dialect``."""
        compiled: Any = statement.compile(dialect=dialect)
        names = tuple(compiled.positiontup) if compiled.positiontup is not None else None
        processors = dict(compiled._bind_processors)
        return cls(compiled.string, names, dict(compiled.params), processors)

    def params(self, given: Mapping[str, Any]) -> Any:
        """The driver's parameters: ``given`` over the defaults, each value processed by its
        type as SQLAlchemy processes it (every value, None too)."""
        values = {**self.defaults, **given}
        for name, process in self.processors.items():
            values[name] = process(values[name])
        if self.names is None:
            return values
        return tuple(values[name] for name in self.names)


@functools.lru_cache(maxsize=128)
def _update(dialect: Any, columns: tuple[str, ...], guard: str) -> Prebuilt:
    return Prebuilt.of(_step_update(columns, guard), dialect)


_COLUMNS = ("id", "key", "kind", "status", "attempts", "task_id", "result")


@functools.lru_cache(maxsize=8)
def _read(dialect: Any, by: str) -> tuple[Prebuilt, Callable[[Any], Any] | None]:
    """The unit read by ``vm`` or by ``key`` (both indexed with ``run_id``), and the JSON
    result column's processing for this dialect."""
    step: Any = Step.__table__  # type: ignore[attr-defined]
    run: Any = Run.__table__  # type: ignore[attr-defined]
    statement = (
        select(*(step.c[name] for name in _COLUMNS), run.c.status.label("run_status"))
        .join_from(step, run, run.c.id == step.c.run_id)
        .where(step.c.run_id == bindparam("run_id"), step.c[by] == bindparam("by"))
        .order_by(step.c.seq)
    )
    return Prebuilt.of(statement, dialect), step.c.result.type._cached_result_processor(
        dialect, None
    )


@functools.lru_cache(maxsize=8)
def _run_status(dialect: Any) -> Prebuilt:
    run: Any = Run.__table__  # type: ignore[attr-defined]
    return Prebuilt.of(select(run.c.status).where(run.c.id == bindparam("run_id")), dialect)


def _step_row(run_id: str, row: Any, load: Callable[[Any], Any] | None) -> StepRow:
    """A row of :data:`_COLUMNS` (the JSON result loaded as the dialect loads it)."""
    result = load(row[6]) if load is not None else row[6]
    return StepRow(row[0], run_id, row[1], row[2], row[3], row[4], row[5], result)


def _rows(statements: Statements, run_id: str, by: str, value: str) -> list[tuple[StepRow, str]]:
    prebuilt, load = _read(statements.dialect, by)
    rows = statements.fetch(prebuilt.sql, prebuilt.params({"run_id": run_id, "by": value}))
    return [(_step_row(run_id, row, load), row[7]) for row in rows]


def _missing(statements: Statements, run_id: str, key: str) -> NoReturn:
    """Raise why the step ``key`` was not found: no such run, or no such step in it."""
    prebuilt = _run_status(statements.dialect)
    if not statements.fetch(prebuilt.sql, prebuilt.params({"run_id": run_id})):
        raise RunNotFound(f"no run {run_id!r}; 'ferryman runs list' shows the runs")
    raise FerrymanError(f"run {run_id} has no step {key!r}; was the run recompiled?")


def _unit_read(rows: list[tuple[StepRow, str]], step: StepRow, vm: str | None) -> UnitRead:
    """The read of a unit: the run's status, the step, the VM's prior results, every row."""
    prior: dict[str, dict[str, Any]] = {}
    if vm is not None:
        for row, _ in rows:
            if row.status == StepStatus.SUCCEEDED and row.result is not None:
                prior[row.kind] = row.result
    return UnitRead(RunStatus(rows[0][1]), step, prior, {row.key: row for row, _ in rows})


def read_unit(statements: Statements, *, run_id: str, key: str, vm: str | None) -> UnitRead:
    """The run's status, the step ``key`` and, with ``vm``, every step of the VM and the
    results of its succeeded steps (as :func:`repository.read_to_run`), in one query."""
    rows = _rows(statements, run_id, "vm", vm) if vm is not None else []
    found = [row for row, _ in rows if row.key == key]
    if not found:  # no VM, or a step not filed under the unit's VM
        extra = _rows(statements, run_id, "key", key)
        rows += extra
        found = [row for row, _ in extra]
    if not found:
        _missing(statements, run_id, key)
    return _unit_read(rows, found[0], vm)


def read_and_start(
    statements: Statements, *, run_id: str, key: str, vm: str | None, task_id: str | None
) -> tuple[UnitRead, bool]:
    """:func:`read_unit`, and the step ``key`` set running for ``task_id`` if it is pending
    and its run running (as :func:`start_next`); the read, and whether it started it.

    A unit's first step on its first start: on PostgreSQL both are one statement (the start
    an UPDATE in a CTE, the read what the statement saw before it), elsewhere the read and
    then the start. When it did not start the step (a step done before, running, a run that
    stopped), nothing was written and the read shows why; a step started by someone else
    between the read and the start reads pending here, and the caller's own compare-and-set
    start then finds it taken.
    """
    if statements.dialect.name != "postgresql":
        read = read_unit(statements, run_id=run_id, key=key, vm=vm)
        if read.run_status is not RunStatus.RUNNING:
            return read, False
        return read, start_next(statements, step=read.step, task_id=task_id)
    # the columns any start writes, but the attempt count: the statement counts it up itself,
    # as the step's own count is read only by the same statement
    values = _transition(_Unread(), StepStatus.RUNNING, {"task_id": task_id})
    del values["attempts"]
    prebuilt, load = _read_and_start(statements.dialect, vm is not None, tuple(sorted(values)))
    params = {f"v_{name}": value for name, value in values.items()}
    params.update(run_id=run_id, key=key, w_status=StepStatus.PENDING.value, by=vm if vm else key)
    fetched = statements.fetch(prebuilt.sql, prebuilt.params(params))
    rows = [(_step_row(run_id, row, load), row[7]) for row in fetched]
    found = [row for row, _ in rows if row.key == key]
    if not found:
        _missing(statements, run_id, key)
    started = fetched[0][8]  # the attempts the start wrote; None when it wrote nothing
    if started is not None:
        values["attempts"] = started
        found[0].show(values)
    return _unit_read(rows, found[0], vm), started is not None


@dataclass
class _Unread:
    """A step whose attempt count is not known (:func:`read_and_start` counts it in SQL)."""

    attempts: int = 0


@functools.lru_cache(maxsize=8)
def _read_and_start(
    dialect: Any, by_vm: bool, columns: tuple[str, ...]
) -> tuple[Prebuilt, Callable[[Any], Any] | None]:
    """``WITH started AS (UPDATE step ... WHERE run_id AND key AND pending AND its run
    running RETURNING attempts) SELECT`` the unit's rows (by VM, and the step by key), each
    with the attempts written (PostgreSQL)."""
    step: Any = Step.__table__  # type: ignore[attr-defined]
    run: Any = Run.__table__  # type: ignore[attr-defined]
    running = exists().where(
        run.c.id == bindparam("run_id"), run.c.status == RunStatus.RUNNING.value
    )
    start = (
        update(step)
        .where(
            step.c.run_id == bindparam("run_id"),
            step.c.key == bindparam("key"),
            step.c.status == bindparam("w_status"),
            running,
        )
        .values(
            {name: bindparam(f"v_{name}", type_=step.c[name].type) for name in columns}
            | {"attempts": step.c.attempts + 1}
        )
        .returning(step.c.attempts)
        .cte("started")
    )
    which = step.c.key == bindparam("key")
    if by_vm:
        which = or_(step.c.vm == bindparam("by"), which)
    statement = (
        select(
            *(step.c[name] for name in _COLUMNS),
            run.c.status.label("run_status"),
            select(start.c.attempts).scalar_subquery().label("started"),
        )
        .join_from(step, run, run.c.id == step.c.run_id)
        .where(step.c.run_id == bindparam("run_id"), which)
        .order_by(step.c.seq)
    )
    return Prebuilt.of(statement, dialect), step.c.result.type._cached_result_processor(
        dialect, None
    )


def start_next(statements: Statements, *, step: StepRow, task_id: str | None) -> bool:
    """Set a pending step running for ``task_id`` if its run is still running, in one UPDATE
    (as :func:`repository.start_step`); False when the step or its run changed since it was
    read, and the caller reads them again to see why."""
    if StepStatus(step.status) is not StepStatus.PENDING:
        return False
    values = _transition(step, StepStatus.RUNNING, {"task_id": task_id})
    params = {"w_id": step.id, "w_status": StepStatus.PENDING.value, "w_run": step.run_id}
    if not _execute(statements, tuple(sorted(values)), "run_running", params, values):
        return False
    step.show(values)
    return True


def move_step(
    statements: Statements,
    *,
    step: StepRow,
    status: StepStatus,
    owner: Any = ANY_OWNER,
    **fields: Any,
) -> StepRow:
    """Move a step to ``status`` (checked) and set other columns, as
    :func:`repository.set_step_status` does: ``owner``, only while the step is held by that
    delivery (None: by none); a step changed meanwhile raises :class:`Conflict`."""
    current = StepStatus(step.status)
    check_step(current, status)
    values = _transition(step, status, fields)
    guard, params = _update_guard(step.id, current, owner)
    if not _execute(statements, tuple(sorted(values)), guard, params, values):
        raise Conflict(f"step {step.key} of run {step.run_id} changed while being updated")
    step.show(values)
    return step


def succeed_then_start(
    statements: Statements,
    *,
    step: StepRow,
    owner: str | None,
    then: StepRow | None,
    task_id: str | None,
    **fields: Any,
) -> bool:
    """Record ``step`` succeeded while held by ``owner`` (as :func:`move_step`), then start
    the unit's next step ``then`` for ``task_id`` (as :func:`start_next`); whether it started.

    Raises :class:`Conflict`, starting nothing, when the step was taken over meanwhile. On
    PostgreSQL both are one statement (one round trip, one transaction): the next step starts
    only if the success was written, so it leaves the states the two statements one after
    the other leave when nothing comes between them, and a crash leaves both or neither.
    """
    if (
        then is None
        or StepStatus(then.status) is not StepStatus.PENDING
        or statements.dialect.name != "postgresql"
    ):
        move_step(statements, step=step, status=StepStatus.SUCCEEDED, owner=owner, **fields)
        return then is not None and start_next(statements, step=then, task_id=task_id)
    current = StepStatus(step.status)
    check_step(current, StepStatus.SUCCEEDED)
    done = _transition(step, StepStatus.SUCCEEDED, fields)
    started = _transition(then, StepStatus.RUNNING, {"task_id": task_id})
    guard = "unowned" if owner is None else "owner"
    prebuilt = _succeed_then_start(
        statements.dialect, tuple(sorted(done)), guard, tuple(sorted(started))
    )
    params = {"d_w_id": step.id, "d_w_status": current.value, "d_w_owner": owner}
    params.update({f"d_v_{name}": value for name, value in done.items()})
    params.update(w_id=then.id, w_status=StepStatus.PENDING.value, w_run=then.run_id)
    params.update({f"v_{name}": value for name, value in started.items()})
    if owner is None:
        del params["d_w_owner"]
    [(succeeded, began)] = statements.fetch(prebuilt.sql, prebuilt.params(params))
    if succeeded != 1:
        raise Conflict(f"step {step.key} of run {step.run_id} changed while being updated")
    step.show(done)
    if began != 1:
        return False
    then.show(started)
    return True


@functools.lru_cache(maxsize=64)
def _succeed_then_start(
    dialect: Any, done: tuple[str, ...], guard: str, started: tuple[str, ...]
) -> Prebuilt:
    """``WITH done AS (UPDATE ... RETURNING id), started AS (UPDATE ... AND EXISTS (SELECT
    FROM done) RETURNING id) SELECT`` how many rows each changed (PostgreSQL)."""
    table: Any = Step.__table__  # type: ignore[attr-defined]
    succeeded = _step_update(done, guard, "d_").returning(table.c.id).cte("done")
    began = (
        _step_update(started, "run_running")
        .where(exists(select(succeeded.c.id)))
        .returning(table.c.id)
        .cte("started")
    )
    counts = (
        select(func.count()).select_from(succeeded).scalar_subquery(),
        select(func.count()).select_from(began).scalar_subquery(),
    )
    return Prebuilt.of(select(*counts), dialect)


def _execute(
    statements: Statements,
    columns: tuple[str, ...],
    guard: str,
    params: dict[str, Any],
    values: dict[str, Any],
) -> bool:
    prebuilt = _update(statements.dialect, columns, guard)
    params.update({f"v_{name}": value for name, value in values.items()})
    return statements.execute(prebuilt.sql, prebuilt.params(params)) == 1
