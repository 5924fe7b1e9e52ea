"""Narrow reads and writes on the per-step path, the compiled-run cache, transient errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from plans.errors import FerrymanError
from tests.workflows.test_store import make_run
from workflows.cache import CompiledRuns
from workflows.compiler import CompiledRun
from workflows.statuses import RunStatus, StepStatus
from workflows.store import (
    Conflict,
    Database,
    Run,
    RunNotFound,
    repository,
    steprows,
    transient_database_error,
)
from workflows.store.database import EXTRA_CONNECTIONS, pool_size_for


def terminate_backend(pid: int) -> None:
    """End PostgreSQL backend ``pid`` as a server restart would, and wait until it is gone."""
    import psycopg

    from tests.support.servers import wait_for
    from tests.workflows.conftest import PG_ADMIN

    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

        # the terminate is a signal: the backend ends (and its socket says so) a moment later
        def gone() -> bool:
            found = admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,))
            return found.fetchone() is None

        wait_for(gone, timeout=30, what=f"backend {pid} to end")


@contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    """Every SQL statement the database runs inside the block."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


def test_run_status_reads_the_status_column_only(db: Database) -> None:
    make_run(db)
    with statements(db) as seen, db.session() as session:
        assert repository.run_status(session, run_id="abcdef123456") is RunStatus.PENDING
    selects = [s for s in seen if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 1
    assert "snapshot" not in selects[0] and "compiled" not in selects[0]
    with db.session() as session, pytest.raises(RunNotFound, match="runs list"):
        repository.run_status(session, run_id="nope")


def test_a_light_run_leaves_its_inputs_unread_until_touched(db: Database) -> None:
    make_run(db)
    with statements(db) as seen, db.session() as session:
        run = repository.get_run(session, run_id="abcdef123456", with_inputs=False)
        assert run.status == RunStatus.PENDING
        assert "snapshot" not in seen[0] and "compiled" not in seen[0]
        assert run.snapshot == {"fabric": {"x": 1}}  # still there when asked for
    with db.session() as session:
        assert repository.compiled_of(session, run_id="abcdef123456") == {"stages": []}


def test_a_step_write_is_one_update_and_shows_its_values(db: Database) -> None:
    run = make_run(db)
    with db.session() as session:
        step = repository.get_step(session, run_id=run.id, key="s0")
        with statements(db) as seen:
            repository.set_step_status(session, step=step, status=StepStatus.RUNNING, task_id="t")
        assert [s.split()[0].upper() for s in seen] == ["UPDATE"]
        assert (step.status, step.attempts, step.task_id) == ("running", 1, "t")
        assert step not in session.dirty  # the values are not written a second time
    with db.session() as session:
        stored = repository.get_step(session, run_id=run.id, key="s0")
    assert (stored.status, stored.attempts, stored.task_id) == ("running", 1, "t")


def with_compiled(db: Database, run_id: str) -> dict[str, Any]:
    """A stored run whose compiled column holds a (tiny) real compiled run."""
    compiled = {"plan": "p", "operation": "test", "direction": "failover", "hosts": {}}
    compiled["stages"] = []
    make_run(db, run_id=run_id, vm=f"vm-{run_id}")  # a VM is held by one run at a time
    with db.session() as session:
        query = update(Run).where(Run.id == run_id)  # type: ignore[arg-type]
        session.execute(query.values(compiled=compiled))
    return compiled


def test_compiled_runs_are_read_narrowly_and_decoded_once_per_run(db: Database) -> None:
    compiled = with_compiled(db, "abcdef123456")
    cache = CompiledRuns(size=1)
    with statements(db) as seen, db.session() as session:
        first = cache.get(session, "abcdef123456")
        again = cache.get(session, "abcdef123456")
    assert first is again and first == CompiledRun.from_json(compiled)
    assert len(seen) == 1 and "snapshot" not in seen[0]
    with_compiled(db, "fedcba654321")
    with db.session() as session:
        cache.get(session, "fedcba654321")
    assert len(cache) == 1  # bounded: the oldest run is forgotten (decoded again if asked)
    with statements(db) as seen, db.session() as session:
        assert cache.get(session, "abcdef123456") == first
    assert len(seen) == 1


def test_which_database_errors_are_transient() -> None:
    locked = OperationalError("UPDATE step", {}, Exception("database is locked"))
    duplicate = IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed"))
    assert transient_database_error(locked)
    assert not transient_database_error(duplicate)
    assert not transient_database_error(ValueError("x"))


def test_read_to_run_reads_status_step_and_prior_results_in_one_query(db: Database) -> None:
    run = make_run(db)
    with db.session() as session:
        done = repository.get_step(session, run_id=run.id, key="s0")
        repository.set_step_status(session, step=done, status=StepStatus.RUNNING)
        repository.set_step_status(
            session, step=done, status=StepStatus.SUCCEEDED, result={"addresses": ["10.0.0.5"]}
        )
    with statements(db) as seen, db.session() as session:
        read = repository.read_to_run(session, run_id=run.id, key="s1", vm="vm")
    assert len(seen) == 1
    assert read.run_status is RunStatus.PENDING
    assert (read.step.key, read.step.status) == ("s1", "pending")
    assert read.prior == {"start_vm": {"addresses": ["10.0.0.5"]}}
    with db.session() as session:
        assert repository.read_to_run(session, run_id=run.id, key="s1").prior == {}
        with pytest.raises(RunNotFound):
            repository.read_to_run(session, run_id="nope", key="s1")
        with pytest.raises(FerrymanError, match="no step 'zz'"):
            repository.read_to_run(session, run_id=run.id, key="zz", vm="vm")


def test_a_postgres_connection_the_server_dropped_is_replaced_before_use(
    postgres_url: str,
) -> None:
    """An operator's command right after a database restart must not fail on a stale
    pooled connection: a checkout finds the server's termination waiting on the socket (one
    idle longer is pinged), and a dead connection is replaced."""
    db = Database(postgres_url)
    try:
        with db.session() as session:
            pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        terminate_backend(pid)
        with db.session() as session:
            assert session.execute(text("SELECT pg_backend_pid()")).scalar() != pid
    finally:
        db.dispose()


def test_start_step_starts_a_pending_step_of_a_running_run_only(db: Database) -> None:
    run = make_run(db)  # pending: not running yet
    with db.session() as session:
        read = repository.read_to_run(session, run_id=run.id, key="s0", vm="vm")
    assert set(read.rows) == {"s0", "s1", "s2", "s3"}  # the VM's steps, read once
    with db.session() as session:
        assert not repository.start_step(session, step=read.rows["s1"], task_id="t")
        session.execute(update(Run).where(Run.id == run.id).values(status="running"))  # type: ignore[arg-type]
    with db.session() as session, statements(db) as seen:
        assert repository.start_step(session, step=read.rows["s1"], task_id="t")
        assert [s.split()[0].upper() for s in seen] == ["UPDATE"]
    assert (read.rows["s1"].status, read.rows["s1"].attempts) == ("running", 1)
    with db.session() as session:
        assert not repository.start_step(session, step=read.rows["s1"], task_id="t")  # not pending
        stale = repository.get_step(session, run_id=run.id, key="s2")
        repository.set_step_status(session, step=stale, status=StepStatus.RUNNING, task_id="x")
        # the row read earlier still says pending; the UPDATE's check sees the truth
        assert not repository.start_step(session, step=read.rows["s2"], task_id="t")
        stored = repository.get_step(session, run_id=run.id, key="s1")
    assert (stored.status, stored.task_id, stored.heartbeat_at is not None) == (
        "running",
        "t",
        True,
    )


def test_a_units_read_and_a_stages_read_use_their_indexes(tmp_path: Any) -> None:
    """On SQLite (its query planner says how): no read scans every step of the run."""
    db = Database(f"sqlite:///{tmp_path}/plan.db")
    run = make_run(db)
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        seen.append((statement, parameters))

    try:
        event.listen(db.engine, "before_cursor_execute", record)
        try:
            with db.session() as session:
                repository.read_to_run(session, run_id=run.id, key="s1", vm="vm")
                repository.steps_of(session, run_id=run.id, stage=1)
        finally:
            event.remove(db.engine, "before_cursor_execute", record)
        with db.engine.connect() as conn:
            plans = [
                " | ".join(
                    str(row[-1])
                    for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params)
                )
                for statement, params in seen
            ]
        assert len(plans) == 2, plans
        assert "ix_step_run_id_vm" in plans[0], plans[0]
        assert "ix_step_run_id_stage" in plans[1], plans[1]
        assert not any("SCAN step" in plan for plan in plans), plans
    finally:
        db.dispose()


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_a_worker_sized_pool_keeps_every_threads_connection_open(
    store: str, tmp_path: Any, request: pytest.FixtureRequest
) -> None:
    """Sixteen task threads plus the watch and heartbeat, all in the store at once, round
    after round: after the first round no connection is opened again. A pool smaller than
    the threads closes the extra connections on return and reopens them on the next step
    (a new backend process on PostgreSQL, the pragmas again on SQLite) on every step."""
    import threading

    url = (
        f"sqlite:///{tmp_path}/pool.db"
        if store == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    threads = 16 + EXTRA_CONNECTIONS
    db = Database(url, pool_size=pool_size_for(16))
    opened: list[int] = []
    event.listen(db.engine, "connect", lambda *_: opened.append(1))
    try:

        def round_of_sessions() -> None:
            barrier = threading.Barrier(threads)

            def use() -> None:
                with db.session() as session:
                    session.execute(text("SELECT 1"))  # checks a connection out
                    barrier.wait(timeout=30)  # every thread holds one at once

            workers = [threading.Thread(target=use) for _ in range(threads)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()

        round_of_sessions()
        first = len(opened)  # creating the tables left one connection in the pool
        assert first in (threads - 1, threads)
        for _ in range(3):
            round_of_sessions()
        assert len(opened) == first
    finally:
        db.dispose()


def test_without_a_worker_the_pool_keeps_the_default_size(tmp_path: Any) -> None:
    assert Database(f"sqlite:///{tmp_path}/a.db").engine.pool.size() == 8  # type: ignore[attr-defined]
    assert pool_size_for(16) == 16 + EXTRA_CONNECTIONS


def test_a_runs_steps_go_in_as_one_insert_with_the_models_defaults(db: Database) -> None:
    run = Run(
        id="0123456789ab",
        plan="p",
        operation="test",
        direction="failover",
        status=RunStatus.PENDING.value,
        snapshot={},
        compiled={"stages": []},
    )
    rows = [
        {"run_id": run.id, "key": f"k{i}", "seq": i, "stage": 0, "unit": "u", "kind": "start_vm",
         "status": "pending", "vm": f"vm-{i}"}
        for i in range(500)
    ]  # fmt: skip
    with statements(db) as seen, db.session() as session:
        repository.add_run(session, run=run, steps=rows)
    # the run, its VM locks, the steps
    assert [s.split()[0].upper() for s in seen] == ["INSERT", "INSERT", "INSERT"]
    with db.session() as session:
        stored = repository.steps_of(session, run_id=run.id)
    assert len(stored) == 500
    assert {(s.attempts, s.error, s.on_error, s.task_id) for s in stored} == {(0, "", "stop", None)}
    with pytest.raises(ValueError, match="needs \\['kind'\\]"), db.session() as session:
        incomplete = {k: v for k, v in rows[0].items() if k != "kind"}
        repository.add_run(session, run=run.model_copy(update={"id": "x" * 12}), steps=[incomplete])


def test_a_units_steps_read_on_the_driver_match_the_orm_read(db: Database) -> None:
    run = make_run(db)
    with db.session() as session:
        done = repository.get_step(session, run_id=run.id, key="s0")
        repository.set_step_status(session, step=done, status=StepStatus.RUNNING)
        repository.set_step_status(
            session, step=done, status=StepStatus.SUCCEEDED, result={"addresses": ["10.0.0.5"]}
        )
        orm = repository.read_to_run(session, run_id=run.id, key="s1", vm="vm")
    with statements(db) as seen, db.statements() as driver:
        read = steprows.read_unit(driver, run_id=run.id, key="s1", vm="vm")
    assert len(seen) == 1
    assert read.run_status is orm.run_status is RunStatus.PENDING
    assert (read.step.key, read.step.status, read.step.id) == ("s1", "pending", orm.step.id)
    assert read.prior == orm.prior == {"start_vm": {"addresses": ["10.0.0.5"]}}
    assert {key: (row.status, row.attempts) for key, row in read.rows.items()} == {
        key: (row.status, row.attempts) for key, row in orm.rows.items()
    }
    with db.statements() as driver:
        assert steprows.read_unit(driver, run_id=run.id, key="s1", vm=None).prior == {}
        # a step not filed under the unit's VM is found by its key
        assert steprows.read_unit(driver, run_id=run.id, key="s2", vm="other").step.key == "s2"
        with pytest.raises(RunNotFound):
            steprows.read_unit(driver, run_id="nope", key="s1", vm="vm")
        with pytest.raises(FerrymanError, match="no step 'zz'"):
            steprows.read_unit(driver, run_id=run.id, key="zz", vm="vm")


def test_step_writes_on_the_driver_keep_their_compare_and_set_guards(db: Database) -> None:
    run = make_run(db)  # pending: not running yet
    with db.statements() as driver:
        rows = steprows.read_unit(driver, run_id=run.id, key="s0", vm="vm").rows
        assert not steprows.start_next(driver, step=rows["s1"], task_id="t")  # run not running
    with db.session() as session:
        session.execute(update(Run).where(Run.id == run.id).values(status="running"))  # type: ignore[arg-type]
    with db.statements() as driver, statements(db) as seen:
        assert steprows.start_next(driver, step=rows["s1"], task_id="t")
        assert not steprows.start_next(driver, step=rows["s1"], task_id="t")  # not pending
        with pytest.raises(Conflict):  # held by "t", not by "u"
            steprows.move_step(driver, step=rows["s1"], status=StepStatus.SUCCEEDED, owner="u")
        steprows.move_step(
            driver,
            step=rows["s1"],
            status=StepStatus.SUCCEEDED,
            owner="t",
            result={"ip": ["10.0.0.7"], "n": 1},
            undo=None,
            changed=True,
            error="",
        )
    assert [s.split()[0].upper() for s in seen] == ["UPDATE"] * 3
    assert (rows["s1"].status, rows["s1"].attempts) == ("succeeded", 1)
    with db.session() as session:
        stale = repository.get_step(session, run_id=run.id, key="s2")
        repository.set_step_status(session, step=stale, status=StepStatus.RUNNING, task_id="x")
    with db.statements() as driver:
        # the row read earlier still says pending; the UPDATE's check sees the truth
        assert not steprows.start_next(driver, step=rows["s2"], task_id="t")
        with pytest.raises(Conflict):
            steprows.move_step(driver, step=rows["s3"], status=StepStatus.SKIPPED, owner=None)
            steprows.move_step(driver, step=rows["s2"], status=StepStatus.RUNNING, task_id="t")
    with db.session() as session:
        stored = repository.get_step(session, run_id=run.id, key="s1")
        other = repository.get_step(session, run_id=run.id, key="s2")
    assert (stored.status, stored.task_id, stored.changed) == ("succeeded", "t", True)
    assert stored.result == {"ip": ["10.0.0.7"], "n": 1}
    assert stored.started_at is not None and stored.finished_at is not None
    assert (other.status, other.task_id) == ("running", "x")


def test_a_statement_on_a_connection_the_server_dropped_fails_as_transient(
    postgres_url: str,
) -> None:
    """The driver path raises SQLAlchemy's error for a lost connection (so the retry policy
    retries the unit), and the pool replaces the connection for the next statements."""
    db = Database(postgres_url)
    run = make_run(db, run_id="droppedbackend1", vm="vm-of-dropped")
    try:
        with db.statements() as driver:
            pid = driver.fetch("SELECT pg_backend_pid()", {})[0][0]
            terminate_backend(pid)
            with pytest.raises(OperationalError) as lost:
                steprows.read_unit(driver, run_id=run.id, key="s0", vm="vm-of-dropped")
        assert transient_database_error(lost.value)
        assert lost.value.connection_invalidated
        with db.statements() as driver:
            read = steprows.read_unit(driver, run_id=run.id, key="s0", vm="vm-of-dropped")
        assert read.step.key == "s0"
    finally:
        db.dispose()


def test_a_success_and_the_next_start_keep_both_guards(db: Database) -> None:
    """On PostgreSQL one statement; on SQLite two: the same outcomes either way."""
    run = make_run(db)
    with db.session() as session:
        session.execute(update(Run).where(Run.id == run.id).values(status="running"))  # type: ignore[arg-type]
    with db.statements() as driver:
        rows = steprows.read_unit(driver, run_id=run.id, key="s0", vm="vm").rows
        steprows.move_step(driver, step=rows["s0"], status=StepStatus.RUNNING, task_id="t")
        # held by "t": recorded, and the next step started for "t"
        assert steprows.succeed_then_start(
            driver, step=rows["s0"], owner="t", then=rows["s1"], task_id="t", result={"a": 1}
        )
        assert (rows["s0"].status, rows["s1"].status, rows["s1"].attempts) == (
            "succeeded",
            "running",
            1,
        )
    with db.session() as session:  # another delivery takes s1 over meanwhile
        s1 = repository.get_step(session, run_id=run.id, key="s1")
        repository.set_step_status(session, step=s1, status=StepStatus.PENDING, owner="t")
        repository.set_step_status(session, step=s1, status=StepStatus.RUNNING, task_id="x")
    with db.statements() as driver, pytest.raises(Conflict):
        steprows.succeed_then_start(
            driver, step=rows["s1"], owner="t", then=rows["s2"], task_id="t"
        )
    with db.session() as session:  # nothing written: s1 stays the other's, s2 pending
        s1 = repository.get_step(session, run_id=run.id, key="s1")
        assert (s1.status, s1.task_id) == ("running", "x")
        assert repository.get_step(session, run_id=run.id, key="s2").status == "pending"
        session.execute(update(Run).where(Run.id == run.id).values(status="cancelled"))  # type: ignore[arg-type]
    rows["s1"].task_id = "x"
    with db.statements() as driver:
        # the run was cancelled: the success is written, the next step is not started
        assert not steprows.succeed_then_start(
            driver, step=rows["s1"], owner="x", then=rows["s2"], task_id="x"
        )
    with db.session() as session:
        stored = [repository.get_step(session, run_id=run.id, key=f"s{i}") for i in range(4)]
    assert [s.status for s in stored] == ["succeeded", "succeeded", "pending", "pending"]
    assert stored[0].result == {"a": 1} and stored[0].finished_at is not None


def test_a_units_first_start_reads_and_starts_in_one_statement_on_postgres(
    db: Database,
) -> None:
    """The read of a unit and its step's start: one statement on PostgreSQL, two on SQLite;
    the step starts only while pending and its run running, and the read shows it started."""
    run = make_run(db)
    with db.session() as session:
        done = repository.get_step(session, run_id=run.id, key="s0")
        repository.set_step_status(session, step=done, status=StepStatus.RUNNING)
        repository.set_step_status(
            session, step=done, status=StepStatus.SUCCEEDED, result={"addresses": ["10.0.0.5"]}
        )
    with db.statements() as driver:  # the run is not running yet: nothing starts
        read, started = steprows.read_and_start(
            driver, run_id=run.id, key="s1", vm="vm", task_id="t"
        )
    assert not started and (read.run_status, read.step.status) == (RunStatus.PENDING, "pending")
    with db.session() as session:
        session.execute(update(Run).where(Run.id == run.id).values(status="running"))  # type: ignore[arg-type]
    with statements(db) as seen, db.statements() as driver:
        read, started = steprows.read_and_start(
            driver, run_id=run.id, key="s1", vm="vm", task_id="t"
        )
    assert len(seen) == (1 if db.engine.dialect.name == "postgresql" else 2)
    assert started and read.run_status is RunStatus.RUNNING
    assert (read.step.status, read.step.attempts, read.step.task_id) == ("running", 1, "t")
    assert read.rows["s1"] is read.step and set(read.rows) == {"s0", "s1", "s2", "s3"}
    assert read.prior == {"start_vm": {"addresses": ["10.0.0.5"]}}
    with db.session() as session:
        stored = repository.get_step(session, run_id=run.id, key="s1")
    assert (stored.status, stored.attempts, stored.task_id) == ("running", 1, "t")
    assert stored.started_at is not None and stored.heartbeat_at is not None
    with db.statements() as driver:
        # running now: another delivery reads it held by "t" and starts nothing
        again, started = steprows.read_and_start(
            driver, run_id=run.id, key="s1", vm="vm", task_id="u"
        )
        assert not started and (again.step.status, again.step.task_id) == ("running", "t")
        # a step not filed under the unit's VM is found (and started) by its key
        other, started = steprows.read_and_start(
            driver, run_id=run.id, key="s2", vm="other", task_id="t"
        )
        assert started and (other.step.key, other.step.status, other.step.attempts) == (
            "s2",
            "running",
            1,
        )
        with pytest.raises(RunNotFound):
            steprows.read_and_start(driver, run_id="nope", key="s1", vm="vm", task_id="t")
        with pytest.raises(FerrymanError, match="no step 'zz'"):
            steprows.read_and_start(driver, run_id=run.id, key="zz", vm=None, task_id="t")
    with db.session() as session:
        session.execute(update(Run).where(Run.id == run.id).values(status="cancelled"))  # type: ignore[arg-type]
    with db.statements() as driver:  # the run stopped: a pending step is not started
        late, started = steprows.read_and_start(
            driver, run_id=run.id, key="s3", vm=None, task_id="t"
        )
    assert not started and (late.run_status, late.step.status) == (RunStatus.CANCELLED, "pending")


def test_per_step_statements_hand_their_connection_back_ready_for_transactions(
    db: Database,
) -> None:
    """The per-step statements run in autocommit; the connection goes back to the pool out
    of it and with no transaction open, so a session after them is all or nothing, and a
    failed statement leaves the connection usable."""
    run = make_run(db)
    for _ in range(3):  # later checkouts reuse what earlier ones set up on the connection
        with db.statements() as driver:
            assert steprows.read_unit(driver, run_id=run.id, key="s1", vm="vm").step.key == "s1"
    with pytest.raises(DBAPIError), db.statements() as driver:
        driver.fetch("SELECT no_such_column FROM step", {})
    with db.statements() as driver:
        assert steprows.read_unit(driver, run_id=run.id, key="s0", vm="vm").step.key == "s0"
    with pytest.raises(RuntimeError), db.session() as session:
        session.execute(update(Run).where(Run.id == run.id).values(status="running"))  # type: ignore[arg-type]
        raise RuntimeError("the block fails: nothing of it is kept")
    with db.session() as session:
        assert repository.run_status(session, run_id=run.id) is RunStatus.PENDING


def test_the_engines_step_facts_are_the_step_records_values_in_order(db: Database) -> None:
    run = make_run(db)
    with db.session() as session:
        step = repository.get_step(session, run_id=run.id, key="s2")
        repository.set_step_status(session, step=step, status=StepStatus.RUNNING, task_id="t")
    with db.session() as session:
        facts = repository.step_facts(session, run_id=run.id)
        of_stage = repository.step_facts(session, run_id=run.id, stage=1)
        records = repository.steps_of(session, run_id=run.id)
    assert [fact._asdict() for fact in facts] == [
        {name: getattr(record, name) for name in repository.StepFact._fields} for record in records
    ]
    assert [(fact.key, fact.status, fact.task_id) for fact in of_stage] == [
        ("s2", "running", "t"),
        ("s3", "pending", None),
    ]
    assert of_stage[0].started_at is not None
