"""Repository functions over the tables; every argument after the session is keyword-only.

Status changes are compare-and-set updates checked against the transition tables in
:mod:`workflows.statuses`, so two processes racing on one run (a redelivered callback, an
operator's approval) cannot both win.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from sqlalchemy import (
    Text,
    Update,
    and_,
    bindparam,
    cast,
    delete,
    exists,
    func,
    insert,
    or_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import defer
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, select

from plans.errors import FerrymanError
from workflows.events import EventKind
from workflows.statuses import (
    TERMINAL_RUN,
    ApprovalStatus,
    RunStatus,
    StepStatus,
    check_approval,
    check_run,
    check_step,
)
from workflows.steps import StepKind
from workflows.store.tables import Approval, AuditEvent, Run, Step, VmLock, utcnow


def _sync(session: Session, row: Any, values: dict[str, Any]) -> None:
    """Show an UPDATE's values on ``row`` without reading it back.

    The UPDATE's values are exactly what the row now holds, so they are copied over; on an
    attached row they are set as already committed, so the session does not write them again
    (reading the row back would cost one more query per step).
    """
    session.flush()
    attached = row in session
    for name, value in values.items():
        if attached:
            set_committed_value(row, name, value)
        else:
            setattr(row, name, value)


def _update_run(session: Session, run_id: str, values: dict[str, Any], *where: Any) -> bool:
    """``UPDATE run SET values WHERE id = run_id AND where``; whether it changed the row.

    Run on the session's connection, in its transaction, after its pending changes, as
    ``session.execute`` would; the values are then shown on the run if the session holds it.
    The ORM's own synchronisation of an UPDATE (matching its SET keys against every mapped
    column) cost the engine more than the statement, several times per stage.
    """
    session.flush()
    result = session.connection().execute(
        update(Run).where(col(Run.id) == run_id, *where).values(**values)
    )
    if result.rowcount != 1:
        return False
    held = session.identity_map.get(session.identity_key(Run, run_id))
    if held is not None:
        for name, value in values.items():
            set_committed_value(held, name, value)
    return True


class RunNotFound(FerrymanError):
    """No run has that id."""


class Conflict(FerrymanError):
    """Someone else changed the row first; read it again and decide."""


def get_run(session: Session, *, run_id: str, with_inputs: bool = True) -> Run:
    """The run with that id (a unique prefix of at least 4 characters also works).

    ``with_inputs=False`` leaves the large JSON columns (``snapshot``, ``compiled``) unread
    until something touches them: the engine's per-stage decisions need only the small ones.
    """
    if with_inputs:
        run = session.get(Run, run_id)
    else:
        run = session.exec(_light_run(), params={"run_id": run_id}).first()
    if run is not None:
        return run
    if len(run_id) >= 4:
        matches = session.exec(select(Run).where(col(Run.id).startswith(run_id))).all()
        if len(matches) == 1:
            return matches[0]
    raise RunNotFound(f"no run {run_id!r}; 'ferryman runs list' shows the runs")


@functools.cache
def _light_run() -> Any:
    """The run by id without its large JSON columns, built once: the engine reads it for every
    stage, and building the query cost more than running it."""
    large = (defer(Run.snapshot), defer(Run.compiled))  # type: ignore[arg-type]
    return select(Run).where(col(Run.id) == bindparam("run_id")).options(*large)


def run_status(session: Session, *, run_id: str) -> RunStatus:
    """Only the run's status: one narrow query, for the per-step check of workers."""
    status = session.exec(select(Run.status).where(Run.id == run_id)).first()
    if status is None:
        raise RunNotFound(f"no run {run_id!r}; 'ferryman runs list' shows the runs")
    return RunStatus(status)


def compiled_of(session: Session, *, run_id: str) -> dict[str, Any]:
    """Only the run's compiled stages (JSON), without the rest of its row."""
    compiled = session.exec(select(Run.compiled).where(Run.id == run_id)).first()
    if compiled is None:
        raise RunNotFound(f"no run {run_id!r}; 'ferryman runs list' shows the runs")
    return dict(compiled)


def compiled_text_of(session: Session, *, run_id: str) -> str:
    """Only the run's compiled stages, as the JSON text stored (not decoded: see
    :meth:`workflows.compiler.CompiledRun.from_text`)."""
    text = session.exec(select(cast(Run.compiled, Text)).where(Run.id == run_id)).first()
    if text is None:
        raise RunNotFound(f"no run {run_id!r}; 'ferryman runs list' shows the runs")
    return text


def find_run_by_key(session: Session, *, idempotency_key: str) -> Run | None:
    """The run created for that idempotency key, if any."""
    return session.exec(select(Run).where(Run.idempotency_key == idempotency_key)).first()


def list_runs(
    session: Session, *, status: Sequence[RunStatus] | None = None, limit: int = 50
) -> list[Run]:
    """The most recent runs first, optionally only those in the given statuses."""
    query = select(Run).order_by(col(Run.created_at).desc()).limit(limit)
    if status:
        query = query.where(col(Run.status).in_([s.value for s in status]))
    return list(session.exec(query).all())


def children_of(session: Session, *, run_id: str) -> list[Run]:
    """Follow-up runs (cleanup, commit, compensation, ...) linked to a run, oldest first."""
    query = select(Run).where(Run.parent_id == run_id).order_by(col(Run.created_at))
    return list(session.exec(query).all())


def add_run(session: Session, *, run: Run, steps: Sequence[Step | dict[str, Any]]) -> Run:
    """Insert a run and its steps (rows as :class:`Step` objects or dicts of its columns).

    The steps go in as one multi-row INSERT of plain values, not as ORM objects: a 5,000-VM
    run has 20,000 steps, and building and tracking an ORM object for each cost seconds
    before the first stage could be sent. Read them back with :func:`steps_of`.
    """
    session.add(run)
    session.flush()
    rows = [_step_values(s) for s in steps]
    take_vms(session, run=run, vms=[row["vm"] for row in rows if row.get("vm")])
    if rows:
        _insert_steps(session, rows)
    return run


@functools.lru_cache(maxsize=8)
def _step_insert(dialect: Any) -> tuple[str, tuple[str, ...], bool, dict[str, Any]]:
    """The step INSERT as the dialect's SQL text: (text, bind names in order, positional?,
    bind name -> the column type's value processor)."""
    # SQLModel builds __table__ when the class is created but does not declare it
    table: Any = Step.__table__  # type: ignore[attr-defined]
    names = tuple(column.name for column in table.columns if column.name != "id")
    compiled: Any = (
        insert(table).values({name: bindparam(name) for name in names}).compile(dialect=dialect)
    )
    positional = compiled.positiontup is not None
    order = tuple(compiled.positiontup) if positional else names
    return compiled.string, order, positional, dict(compiled._bind_processors)


def _insert_steps(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert step rows (each the columns given, :func:`_step_values`) with the driver's
    executemany.

    The statement is compiled once per dialect and each value goes through its column type's
    processor (JSON columns as JSON text, times as the dialect stores them), as SQLAlchemy's
    own INSERT would do, without SQLAlchemy's per-row parameter processing: on a 5,000-VM run
    (30,000 steps) that processing cost more than the database's write. A column a row does
    not give gets the model's default, processed once.
    """
    connection = session.connection()
    text, order, positional, processors = _step_insert(connection.dialect)
    # Each column's default, processed once; a row's own values replace them, and those its
    # columns' types process are processed. Rows given with the same columns share the plan.
    base = {}
    for name in order:
        if name in _STEP_DEFAULTS:
            default = _STEP_DEFAULTS[name]
            process = processors.get(name)
            base[name] = process(default) if process is not None else default
    pick = operator.itemgetter(*order)
    params: list[Any] = []
    given: Any = None
    processed: list[tuple[str, Any]] = []
    for row in rows:
        if row.keys() != given:
            given = row.keys()
            processed = [
                (name, processors[name]) for name in order if name in given and name in processors
            ]
        values = {**base, **row}
        for name, process in processed:
            values[name] = process(values[name])
        picked = pick(values)
        params.append(picked if positional else dict(zip(order, picked, strict=True)))
    connection.exec_driver_sql(text, params)


def _step_defaults() -> dict[str, Any]:
    defaults = {}
    for name, info in Step.model_fields.items():
        if name != "id" and not info.is_required():
            defaults[name] = info.get_default(call_default_factory=True)
    return defaults


_STEP_DEFAULTS = _step_defaults()
_STEP_REQUIRED = {
    name for name, info in Step.model_fields.items() if name != "id" and info.is_required()
}


def _step_values(step: Step | dict[str, Any]) -> dict[str, Any]:
    """The columns given for a new step row (the model's defaults fill in the others when it
    is inserted); a row without a required column is refused."""
    if isinstance(step, Step):
        return {name: getattr(step, name) for name in (*_STEP_DEFAULTS, *_STEP_REQUIRED)}
    if not step.keys() >= _STEP_REQUIRED:
        raise ValueError(f"a step row needs {sorted(_STEP_REQUIRED - step.keys())}")
    return step


def set_run_status(
    session: Session,
    *,
    run: Run,
    status: RunStatus,
    error: str | None = None,
    expect: RunStatus | None = None,
) -> Run:
    """Move a run to ``status`` if it is still in ``expect`` (default: its current status)."""
    current = RunStatus(expect or run.status)
    check_run(current, status)
    values: dict[str, Any] = {"status": status.value}
    now = utcnow()
    if status is RunStatus.RUNNING and run.started_at is None:
        values["started_at"] = now
    if status in (
        RunStatus.SUCCEEDED,
        RunStatus.FAILED,
        RunStatus.CANCELLED,
        RunStatus.COMPENSATED,
    ):
        values["finished_at"] = now
    elif status is RunStatus.RUNNING:
        values["finished_at"] = None
    if error is not None:
        values["error"] = error
    if not _update_run(session, run.id, values, col(Run.status) == current.value):
        raise Conflict(f"run {run.id} is no longer {current}; it changed while deciding")
    _sync(session, run, values)
    if status is RunStatus.COMPENSATING or (
        status is RunStatus.RUNNING and current in TERMINAL_RUN
    ):
        # resume or compensation acts on the VMs again: hold them again (or be refused)
        take_vms(session, run=run, vms=_vms_of(session, run.id))
    elif status in TERMINAL_RUN and not _keeps_vms(session, run, status):
        release_vms(session, run=run)
    return run


def move_stage(session: Session, *, run_id: str, from_stage: int, to_stage: int) -> bool:
    """Compare-and-set the run's current stage; False when another caller moved it first."""
    values = {"current_stage": to_stage}
    return _update_run(session, run_id, values, col(Run.current_stage) == from_stage)


def steps_of(
    session: Session,
    *,
    run_id: str,
    stage: int | None = None,
    vm: str | None = None,
    status: str | None = None,
    outcomes: bool = True,
) -> list[Step]:
    """A run's steps in compiled order, optionally of one stage, one VM or one status.

    ``outcomes=False`` leaves the JSON columns (``result``, ``undo``) unread until something
    touches them: the engine's decisions on a stage read statuses, not what each step did.
    """
    query = select(Step).where(Step.run_id == run_id)
    if status is not None:
        query = query.where(Step.status == status)
    if not outcomes:
        query = query.options(defer(Step.result), defer(Step.undo))  # type: ignore[arg-type]
    if stage is not None:
        query = query.where(Step.stage == stage)
    if vm is not None:
        query = query.where(Step.vm == vm)
    return list(session.exec(query.order_by(col(Step.seq))).all())


class StepFact(NamedTuple):
    """What the engine's decisions read of a step (``decide.StepFacts``), as plain values."""

    key: str
    stage: int
    unit: str
    seq: int
    status: str
    on_error: str
    error: str
    task_id: str | None
    started_at: datetime | None
    heartbeat_at: datetime | None
    finished_at: datetime | None


_FACT_COLUMNS = StepFact._fields


def step_facts(session: Session, *, run_id: str, stage: int | None = None) -> list[StepFact]:
    """A run's steps (optionally of one stage) in compiled order, as :class:`StepFact` s:
    the columns decisions read, without building a model object for each row."""
    params: dict[str, Any] = {"run_id": run_id}
    if stage is not None:
        params["stage"] = stage
    rows = session.execute(_facts_query(stage is not None), params)
    return [StepFact(*row) for row in rows]


@functools.cache
def _facts_query(of_stage: bool) -> Any:
    """:func:`step_facts`' query (of one stage or of the run), built once."""
    table: Any = Step.__table__  # type: ignore[attr-defined]
    query = select(*(table.c[name] for name in _FACT_COLUMNS))
    query = query.where(table.c.run_id == bindparam("run_id"))
    if of_stage:
        query = query.where(table.c.stage == bindparam("stage"))
    return query.order_by(table.c.seq)


@dataclass
class ToRun:
    """What a worker reads before a step (see :func:`read_to_run`)."""

    run_status: RunStatus
    step: Step
    prior: dict[str, dict[str, Any]]
    # every row read, by key: with a VM, all the VM's steps, so the unit's next steps can be
    # started without reading them again (:func:`start_step`)
    rows: dict[str, Step]


def read_to_run(session: Session, *, run_id: str, key: str, vm: str | None = None) -> ToRun:
    """What a worker reads before a step, in one query: the run's status, the step, and the
    results of the VM's succeeded steps (as :func:`prior_results`; empty without ``vm``)."""
    base = select(Step, Run.status).join(Run, col(Run.id) == col(Step.run_id))
    base = base.where(Step.run_id == run_id)
    # by (run_id, vm) or (run_id, key): both indexed, where an OR of the two would make the
    # database scan every step of the run for every unit
    mine = col(Step.vm) == vm if vm is not None else col(Step.key) == key
    rows = list(session.exec(base.where(mine).order_by(col(Step.seq))).all())
    found = [row for row, _status in rows if row.key == key]
    if not found and vm is not None:  # a step not filed under the unit's VM
        extra = session.exec(base.where(col(Step.key) == key)).all()
        rows += extra
        found = [row for row, _status in extra]
    if not found:
        run_status(session, run_id=run_id)  # raises RunNotFound for a missing run
        raise FerrymanError(f"run {run_id} has no step {key!r}; was the run recompiled?")
    prior: dict[str, dict[str, Any]] = {}
    for row, _status in rows:
        if vm is not None and row.status == StepStatus.SUCCEEDED and row.result is not None:
            prior[row.kind] = row.result
    return ToRun(RunStatus(rows[0][1]), found[0], prior, {row.key: row for row, _ in rows})


def start_step(session: Session, *, step: Step, task_id: str | None) -> bool:
    """Set a pending step running for ``task_id`` if its run is still running, in one UPDATE.

    ``step`` is the row as read earlier (pending then); False when the step or its run has
    changed since, and the caller reads them again (:func:`read_to_run`) to see why.
    """
    if StepStatus(step.status) is not StepStatus.PENDING:
        return False
    values = _transition(step, StepStatus.RUNNING, {"task_id": task_id})
    statement = _step_update(tuple(sorted(values)), "run_running")
    params = {"w_id": step.id, "w_status": StepStatus.PENDING.value, "w_run": step.run_id}
    if not _execute_step_update(session, statement, params, values):
        return False
    _sync(session, step, values)
    return True


@functools.lru_cache(maxsize=64)
def _step_update(columns: tuple[str, ...], guard: str, prefix: str = "") -> Update:
    """``UPDATE step SET <columns> WHERE id AND status [AND guard]`` with bind parameters.

    The per-step path runs a few shapes of this statement thousands of times; building one
    (clause coercion, ORM bulk-update planning) costs more CPU than executing it, so each shape
    is built once and executed on the session's connection with new parameters. ``guard``:
    ``none``; ``owner`` (held by ``w_owner``); ``unowned`` (held by no delivery);
    ``run_running`` (its run ``w_run`` is running). ``prefix`` goes before every bind name
    (two of these statements in one).
    """
    # SQLModel builds __table__ when the class is created but does not declare it
    table: Any = Step.__table__  # type: ignore[attr-defined]
    runs: Any = Run.__table__  # type: ignore[attr-defined]
    statement = update(table).where(
        table.c.id == bindparam(f"{prefix}w_id"), table.c.status == bindparam(f"{prefix}w_status")
    )
    if guard == "owner":
        statement = statement.where(table.c.task_id == bindparam(f"{prefix}w_owner"))
    elif guard == "unowned":
        statement = statement.where(table.c.task_id.is_(None))
    elif guard == "run_running":
        running = exists().where(
            runs.c.id == bindparam(f"{prefix}w_run"), runs.c.status == RunStatus.RUNNING.value
        )
        statement = statement.where(running)
    elif guard != "none":
        raise ValueError(f"unknown guard {guard!r}")
    return statement.values(
        {name: bindparam(f"{prefix}v_{name}", type_=table.c[name].type) for name in columns}
    )


def _execute_step_update(
    session: Session, statement: Update, params: dict[str, Any], values: dict[str, Any]
) -> bool:
    """Run a :func:`_step_update` statement in the session's transaction; True if it changed
    the one row."""
    params.update({f"v_{name}": value for name, value in values.items()})
    session.flush()  # what session.execute would do first: pending ORM changes go before
    result = session.connection().execute(statement, params)
    return bool(result.rowcount == 1)


def get_step(session: Session, *, run_id: str, key: str) -> Step:
    """One step by its key."""
    step = session.exec(select(Step).where(Step.run_id == run_id, Step.key == key)).first()
    if step is None:
        raise FerrymanError(f"run {run_id} has no step {key!r}; was the run recompiled?")
    return step


ANY_OWNER: Any = object()  # a step update without an owner check


class _Attempted(Protocol):
    attempts: int


def _transition(step: _Attempted, status: StepStatus, fields: dict[str, Any]) -> dict[str, Any]:
    """The columns a move of ``step`` to ``status`` writes: the status, the given fields, and
    the times and attempt count that go with it."""
    values: dict[str, Any] = {"status": status.value, **fields}
    now = utcnow()
    if status is StepStatus.RUNNING:
        values.setdefault("started_at", now)
        values["heartbeat_at"] = now
        values["attempts"] = step.attempts + 1
        values["finished_at"] = None
    elif status in (StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED):
        values["finished_at"] = now
    return values


def _silent_before(moment: datetime) -> Any:
    """The condition that a step's last heartbeat (its start, before any beat) is older than
    ``moment``, or that it has neither."""
    last_beat = func.coalesce(col(Step.heartbeat_at), col(Step.started_at))
    return or_(last_beat.is_(None), last_beat < moment)


def _held_by(task_id: str | None) -> Any:
    """The condition that a step is held by that delivery (``task_id``; None for none)."""
    return col(Step.task_id).is_(None) if task_id is None else col(Step.task_id) == task_id


def _update_guard(
    step_id: int | None, current: StepStatus, owner: Any
) -> tuple[str, dict[str, Any]]:
    """The compare-and-set guard of a step update and its parameters: the step still in
    ``current``, and (unless ``owner`` is :data:`ANY_OWNER`) held by that delivery (None: by
    none)."""
    params: dict[str, Any] = {"w_id": step_id, "w_status": current.value}
    if owner is ANY_OWNER:
        return "none", params
    if owner is not None:
        params["w_owner"] = owner
    return ("unowned" if owner is None else "owner"), params


def set_step_status(
    session: Session, *, step: Step, status: StepStatus, owner: Any = ANY_OWNER, **fields: Any
) -> Step:
    """Move a step to ``status`` (checked) and set other columns (result, undo, error...).

    ``owner``: only if the step is still held by that delivery (its ``task_id``); a step
    taken over by another delivery meanwhile raises :class:`Conflict`.
    """
    current = StepStatus(step.status)
    check_step(current, status)
    values = _transition(step, status, fields)
    guard, params = _update_guard(step.id, current, owner)
    statement = _step_update(tuple(sorted(values)), guard)
    if not _execute_step_update(session, statement, params, values):
        raise Conflict(f"step {step.key} of run {step.run_id} changed while being updated")
    _sync(session, step, values)
    return step


def beat(session: Session, *, owners: dict[int, str | None]) -> int:
    """Refresh the heartbeat of running steps still held by the given deliveries (id -> task id).

    Returns how many rows were refreshed; a step taken over meanwhile is left alone.
    """
    if not owners:
        return 0
    held = [and_(col(Step.id) == step_id, _held_by(owner)) for step_id, owner in owners.items()]
    result = session.execute(
        update(Step)
        .where(col(Step.status) == StepStatus.RUNNING.value, or_(*held))
        .values(heartbeat_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def orphaned_steps(session: Session, *, beat_before: datetime) -> list[Step]:
    """Running steps of running runs' current stages whose last heartbeat is before then."""
    query = (
        select(Step)
        .join(Run, col(Run.id) == col(Step.run_id))
        .where(
            col(Run.status) == RunStatus.RUNNING.value,
            col(Step.stage) == col(Run.current_stage),
            col(Step.status) == StepStatus.RUNNING.value,
            _silent_before(beat_before),
        )
        .options(defer(Step.result), defer(Step.undo))  # type: ignore[arg-type]
        .order_by(col(Step.run_id), col(Step.seq))
    )
    return list(session.exec(query).all())


def take_over_step(
    session: Session, *, step: Step, beat_before: datetime, status: StepStatus, **fields: Any
) -> bool:
    """Compare-and-set an orphaned step (still running, same delivery, heartbeat still older
    than ``beat_before``) to ``status``; False if its worker beat or another watch took it."""
    check_step(StepStatus(step.status), status)
    values = _transition(step, status, fields)
    result = session.execute(
        update(Step)
        .where(
            col(Step.id) == step.id,
            col(Step.status) == StepStatus.RUNNING.value,
            _held_by(step.task_id),
            _silent_before(beat_before),
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    _sync(session, step, values)
    return True


def reset_steps(session: Session, *, run_id: str, statuses: Sequence[StepStatus]) -> int:
    """Put steps in ``statuses`` back to pending (resume); returns how many."""
    for status in statuses:
        check_step(status, StepStatus.PENDING)
    result = session.execute(
        update(Step)
        .where(col(Step.run_id) == run_id, col(Step.status).in_([s.value for s in statuses]))
        .values(status=StepStatus.PENDING.value, error="", finished_at=None)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def prior_results(session: Session, *, run_id: str, vm: str) -> dict[str, dict[str, Any]]:
    """Results of the VM's succeeded steps keyed by step kind (the latest of each kind wins)."""
    prior: dict[str, dict[str, Any]] = {}
    for step in steps_of(session, run_id=run_id, vm=vm):
        if step.status == StepStatus.SUCCEEDED and step.result is not None:
            prior[step.kind] = step.result
    return prior


def add_approval(session: Session, *, approval: Approval) -> Approval:
    """Open a gate, or return the one already open for that stage (idempotent)."""
    existing = session.exec(
        select(Approval).where(Approval.run_id == approval.run_id, Approval.stage == approval.stage)
    ).first()
    if existing is not None:
        return existing
    session.add(approval)
    session.flush()
    return approval


def approval_for(session: Session, *, run_id: str, stage: int) -> Approval | None:
    """The gate of that stage, if one was opened."""
    return session.exec(
        select(Approval).where(Approval.run_id == run_id, Approval.stage == stage)
    ).first()


def approvals_of(session: Session, *, run_id: str) -> list[Approval]:
    """Every gate of a run in stage order."""
    query = select(Approval).where(Approval.run_id == run_id).order_by(col(Approval.stage))
    return list(session.exec(query).all())


def pending_approvals(session: Session, *, due_before: datetime | None = None) -> list[Approval]:
    """Open gates, optionally only those whose deadline has passed."""
    if due_before is None:
        return list(session.exec(_open_gates(False)).all())
    return list(session.exec(_open_gates(True), params={"due": due_before}).all())


@functools.cache
def _open_gates(due: bool) -> Any:
    """:func:`pending_approvals`' query, built once (every stage callback asks it)."""
    query = select(Approval).where(Approval.status == ApprovalStatus.PENDING.value)
    if due:
        query = query.where(
            col(Approval.deadline).is_not(None), col(Approval.deadline) <= bindparam("due")
        )
    return query


def decide_approval(
    session: Session, *, approval: Approval, status: ApprovalStatus, by: str, comment: str
) -> Approval:
    """Close a gate, recording who decided, when and why."""
    current = ApprovalStatus(approval.status)
    check_approval(current, status)
    result = session.execute(
        update(Approval)
        .where(col(Approval.id) == approval.id, col(Approval.status) == current.value)
        .values(status=status.value, decided_by=by, comment=comment, decided_at=utcnow())
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"the gate of run {approval.run_id} was decided by someone else first")
    session.flush()
    session.refresh(approval)
    return approval


def add_event(
    session: Session,
    *,
    run_id: str,
    event: EventKind,
    message: str = "",
    actor: str = "",
    data: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append to a run's audit trail."""
    row = AuditEvent(run_id=run_id, event=event.value, message=message, actor=actor, data=data)
    session.add(row)
    session.flush()
    return row


def events_of(session: Session, *, run_id: str) -> list[AuditEvent]:
    """A run's audit trail, oldest first."""
    query = select(AuditEvent).where(AuditEvent.run_id == run_id).order_by(col(AuditEvent.id))
    return list(session.exec(query).all())


def reopen_approval(session: Session, *, approval: Approval, deadline: datetime | None) -> Approval:
    """Ask again at a gate that was rejected or timed out (the run is being resumed)."""
    current = ApprovalStatus(approval.status)
    check_approval(current, ApprovalStatus.PENDING)
    session.execute(
        update(Approval)
        .where(col(Approval.id) == approval.id)
        .values(
            status=ApprovalStatus.PENDING.value,
            requested_at=utcnow(),
            deadline=deadline,
            decided_at=None,
            decided_by="",
            comment="",
        )
    )
    session.flush()
    session.refresh(approval)
    return approval


def set_current_stage(session: Session, *, run_id: str, stage: int) -> None:
    """Point the run at a stage unconditionally (resume, under the run's status lock).

    The stage counts as not sent until :func:`mark_dispatched` says otherwise.
    """
    values = {"current_stage": stage, "dispatched_stage": None, "stage_entered_at": utcnow()}
    _update_run(session, run_id, values)


def mark_dispatched(session: Session, *, run_id: str, stage: int) -> bool:
    """Record that ``stage`` was sent, if the run still points at it; False otherwise."""
    values = {"dispatched_stage": stage}
    return _update_run(session, run_id, values, col(Run.current_stage) == stage)


def claim_resend(
    session: Session, *, run_id: str, stage: int, entered_before: datetime | None
) -> bool:
    """Compare-and-set the entry time of a still unsent stage to now; False if taken first."""
    query = update(Run).where(
        col(Run.id) == run_id,
        col(Run.status) == RunStatus.RUNNING.value,
        col(Run.current_stage) == stage,
        or_(col(Run.dispatched_stage).is_(None), col(Run.dispatched_stage) != stage),
    )
    if entered_before is not None:
        query = query.where(
            or_(col(Run.stage_entered_at).is_(None), col(Run.stage_entered_at) <= entered_before)
        )
    result = session.execute(query.values(stage_entered_at=utcnow()))
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def sent_stages(session: Session, *, entered_before: datetime) -> list[tuple[str, int, datetime]]:
    """(id, stage, entry time) of running runs whose current stage was sent and entered
    before then (the entry time is what :func:`claim_stage` compares)."""
    query = select(Run.id, Run.current_stage, Run.stage_entered_at).where(
        Run.status == RunStatus.RUNNING.value,
        col(Run.dispatched_stage) == col(Run.current_stage),
        col(Run.stage_entered_at) <= entered_before,
    )
    rows = session.exec(query).all()
    # the WHERE clause already leaves out runs that never entered a stage
    return [(run_id, stage, entered) for run_id, stage, entered in rows if entered is not None]


def sent_runs(session: Session, *, entered_before: datetime) -> list[tuple[str, int]]:
    """(id, stage) of running runs whose current stage was sent and entered before then."""
    return [
        (run_id, stage) for run_id, stage, _ in sent_stages(session, entered_before=entered_before)
    ]


def claim_stage(session: Session, *, run_id: str, stage: int, entered: datetime) -> bool:
    """Compare-and-set a sent stage's entry time from ``entered`` to now; False if the run
    moved on or another caller claimed it first."""
    result = session.execute(
        update(Run)
        .where(
            col(Run.id) == run_id,
            col(Run.status) == RunStatus.RUNNING.value,
            col(Run.current_stage) == stage,
            col(Run.dispatched_stage) == stage,
            col(Run.stage_entered_at) == entered,
        )
        .values(stage_entered_at=utcnow())
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def undispatched_runs(session: Session, *, entered_before: datetime) -> list[Run]:
    """Running runs whose current stage was entered before then and never recorded as sent."""
    behind = or_(
        col(Run.dispatched_stage).is_(None), col(Run.dispatched_stage) != col(Run.current_stage)
    )
    query = select(Run).where(
        Run.status == RunStatus.RUNNING.value,
        behind,
        or_(col(Run.stage_entered_at).is_(None), col(Run.stage_entered_at) <= entered_before),
    )
    return list(session.exec(query).all())


# -- VM locks: one run (with its follow-ups) per VM ---------------------------------------------


class VmLocked(FerrymanError):
    """A run would act on VMs that another run holds; nothing was created or changed.

    ``holders`` maps each refused VM's key to the run holding it.
    """

    def __init__(self, message: str, holders: Mapping[str, str]) -> None:
        super().__init__(message)
        self.holders = dict(holders)


# Runs whose success leaves their VMs to a follow-up that must come: a test's cleanup, an
# unplanned failover's commit or cancellation, a commit's reverse replication.
_AWAITS_FOLLOW_UP = frozenset({"test", "unplanned", "commit"})
# Follow-ups that are tried again when they fail or are cancelled, on the same VMs.
_RETRIED_FOLLOW_UPS = frozenset({"cleanup", "commit", "reverse", "cancel_failover"})


def vm_lock_key(site: str, cloud: str, vm: str) -> str:
    """The key a VM is held by: its name in its pairing's primary cloud (``site/cloud/vm``)."""
    return f"{site}/{cloud}/{vm}"


def vm_lock_keys(snapshot: Mapping[str, Any], plan: str, vms: Iterable[str]) -> dict[str, str]:
    """VM name -> lock key for VMs of ``plan`` in a bundle snapshot (a run's ``snapshot``).

    A run of no plan (a protection run) keys each VM by the pairing that lists it, so it and
    a failover of that VM want the same key; a VM no pairing lists is keyed by name alone.
    """
    try:
        pairing = snapshot["plans"][plan]["pairing"]
        primary = snapshot["fabric"]["pairings"][pairing]["primary"]
        site, cloud = str(primary["site"]), str(primary["cloud"])
    except (KeyError, TypeError):
        return {vm: _pairing_key(snapshot, vm) for vm in vms}
    return {vm: vm_lock_key(site, cloud, vm) for vm in vms}


def _pairing_key(snapshot: Mapping[str, Any], vm: str) -> str:
    """The lock key of ``vm`` by the pairing of the snapshot's fabric that lists it."""
    try:
        pairings = snapshot["fabric"]["pairings"].values()
        for pairing in pairings:
            if vm in pairing.get("vms", {}):
                primary = pairing["primary"]
                return vm_lock_key(str(primary["site"]), str(primary["cloud"]), vm)
    except (KeyError, TypeError, AttributeError):
        pass
    return vm


def lineage_root(session: Session, *, run: Run) -> str:
    """The first run of ``run``'s line (a follow-up's parent, its parent's, ...)."""
    root, parent = run.id, run.parent_id
    seen = {root}
    while parent is not None and parent not in seen:
        seen.add(parent)
        root = parent
        parent = session.exec(select(Run.parent_id).where(Run.id == parent)).first()
    return root


def _vms_of(session: Session, run_id: str) -> list[str]:
    query = select(Step.vm).where(Step.run_id == run_id, col(Step.vm).is_not(None)).distinct()
    return [vm for vm in session.exec(query).all() if vm]


def take_vms(session: Session, *, run: Run, vms: Iterable[str]) -> list[str]:
    """Hold ``vms`` for ``run``'s line of runs, in the session's transaction.

    A follow-up inherits the VMs its line already holds. A VM held by another line raises
    :class:`VmLocked` naming that run, and the caller's transaction must roll back. The
    check is the primary key of ``vm_lock``, not a read before the write: of two
    transactions inserting one VM, PostgreSQL makes the second wait for the first and then
    skip the row (``ON CONFLICT DO NOTHING``), and SQLite runs writers one at a time, so the
    second sees the first's row. Returns the keys now held.
    """
    keys = sorted(set(vm_lock_keys(run.snapshot, run.plan, vms).values()))
    if not keys:
        return []
    root = lineage_root(session, run=run)
    now = utcnow()
    rows = [{"vm": key, "run_id": root, "acquired_at": now} for key in keys]
    dialect = session.get_bind().dialect.name
    statement: Any
    if dialect == "postgresql":
        statement = postgresql.insert(VmLock).on_conflict_do_nothing(index_elements=["vm"])
    elif dialect == "sqlite":
        statement = sqlite.insert(VmLock).on_conflict_do_nothing(index_elements=["vm"])
    else:  # another database: its unique violation aborts the transaction instead
        held = set(session.exec(select(VmLock.vm).where(col(VmLock.vm).in_(keys))).all())
        rows = [row for row in rows if row["vm"] not in held]
        statement = insert(VmLock)
    session.flush()
    # sorted keys: two runs wanting overlapping VMs wait for each other in one order, never
    # in a circle (a deadlock)
    taken: set[str] = set()
    if rows:
        result = session.connection().execute(statement.returning(VmLock.vm), rows)
        taken = set(result.scalars().all())
    if taken == set(keys):
        return keys  # every row is new: no other run holds any of them
    refused = {
        key: holder for key, holder in vm_holders(session, keys=keys).items() if holder != root
    }
    if refused:
        raise VmLocked(
            f"{run.operation} of plan {run.plan} not started: "
            + describe_holders(session, holders=refused),
            refused,
        )
    return keys


def release_vms(session: Session, *, run: Run) -> int:
    """Release every VM ``run``'s line of runs holds; returns how many."""
    root = lineage_root(session, run=run)
    result = session.execute(delete(VmLock).where(col(VmLock.run_id) == root))
    return int(result.rowcount)  # type: ignore[attr-defined]


def _keeps_vms(session: Session, run: Run, status: RunStatus) -> bool:
    """Whether ``run``, now at the end in ``status``, leaves its VMs held for what follows.

    A test's VMs are held until its cleanup (or compensation) ends, if a test VM may exist;
    an unplanned failover's through its commit and reverse replication; a follow-up that
    failed or was cancelled keeps them for the next try. A failed planned or unplanned
    failover releases them: a resume or compensation takes them again, or is refused.
    """
    operation = run.operation
    if status is RunStatus.COMPENSATED:
        return False
    if operation == "test":
        return _may_have_test_vms(session, run.id)
    if status is RunStatus.SUCCEEDED:
        return operation in _AWAITS_FOLLOW_UP
    if operation == "compensate":
        # a failed compensation fails its parent, whose own end decides (in this transaction)
        return status is RunStatus.FAILED
    return operation in _RETRIED_FOLLOW_UPS


def _may_have_test_vms(session: Session, run_id: str) -> bool:
    started = (StepStatus.SUCCEEDED.value, StepStatus.FAILED.value, StepStatus.RUNNING.value)
    query = select(Step.id).where(
        Step.run_id == run_id,
        Step.kind == StepKind.TEST_FAILOVER.value,
        col(Step.status).in_(started),
    )
    return session.exec(query.limit(1)).first() is not None


def vm_holders(session: Session, *, keys: Iterable[str]) -> dict[str, str]:
    """Lock key -> the run holding it, for those of ``keys`` that are held."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    rows = session.exec(select(VmLock).where(col(VmLock.vm).in_(wanted))).all()
    return {lock.vm: lock.run_id for lock in rows}


def describe_holders(session: Session, *, holders: Mapping[str, str]) -> str:
    """One line naming, per holding run, the VMs it holds and what ends its hold."""
    by_run: dict[str, list[str]] = {}
    for key, run_id in sorted(holders.items()):
        by_run.setdefault(run_id, []).append(key)
    parts = []
    for run_id, keys in by_run.items():
        what = "VMs " + ", ".join(keys) + " are" if len(keys) > 1 else f"VM {keys[0]} is"
        parts.append(f"{what} held by {describe_holder(session, run_id=run_id)}")
    return "; ".join(parts)


def describe_holder(session: Session, *, run_id: str) -> str:
    """``run ID (test of plan P, succeeded; clean it up: ferryman runs cleanup ID)``."""
    root = session.get(Run, run_id)
    if root is None:
        return f"run {run_id}"
    line = [root, *children_of(session, run_id=root.id)]
    active = [r for r in line if RunStatus(r.status) not in TERMINAL_RUN]
    done = {r.operation for r in line[1:] if r.status == RunStatus.SUCCEEDED}
    if active:
        current = active[-1]
        doing = "; it is" if current is root else f"; its {current.operation} run {current.id} is"
        then = (
            "wait for its compensation"
            if current.status == RunStatus.COMPENSATING
            else f"wait for it, or 'ferryman runs cancel {current.id}'"
        )
        hint = f"{doing} {current.status}: {then}"
    elif root.operation == "test":
        hint = f"; clean it up: 'ferryman runs cleanup {root.id}'"
    elif root.operation == "unplanned" and "commit" in done:
        hint = f"; reverse its replication: 'ferryman runs reverse {root.id}'"
    elif root.operation == "unplanned":
        hint = f"; commit it ('ferryman runs commit {root.id}') or cancel its failover"
    else:
        hint = f"; 'ferryman runs show {root.id}' says what is left"
    return f"run {root.id} ({root.operation} of plan {root.plan}, {root.status}{hint})"
