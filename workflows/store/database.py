"""Opening the database: SQLite (WAL, busy timeout) for one host, PostgreSQL for production."""

from __future__ import annotations

import fcntl
import select
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, event, exc, text
from sqlalchemy.pool import QueuePool
from sqlmodel import Session, SQLModel, create_engine

from workflows.store import tables  # noqa: F401  (registers the tables on SQLModel.metadata)

SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_POOL_SIZE = 8  # connections kept open; more are opened while needed
POOL_SIZE = 5  # SQLAlchemy's default for server databases, for processes without a worker pool
# A worker's threads beyond its task slots that use the store: the gate watch, the step
# heartbeat, and one spare for a chord callback or an operator command in the same process.
EXTRA_CONNECTIONS = 3
# PostgreSQL advisory lock key of schema changes (create_all, migrations): any fixed bigint
# that no other application on the same server uses for its own lock
SCHEMA_LOCK_KEY = 0x4665727279  # "Ferry"
# one process's threads share SQLite's lock file through one flock; serialise them here
_SQLITE_SCHEMA_THREADS = threading.Lock()
# A server connection idle longer than this is pinged (a round trip) before it is used again;
# one used more recently is only checked for what the server sent it meanwhile (no round trip)
PING_AFTER_IDLE_S = 10.0
_RETURNED_AT = "ferryman_returned_at"


def pool_size_for(concurrency: int) -> int:
    """Connections a worker of ``concurrency`` threads keeps open: one per thread that uses
    the store, so no step waits for a connection or pays for opening one."""
    return concurrency + EXTRA_CONNECTIONS


def driver_url(url: str) -> str:
    """The SQLAlchemy URL with its driver: ``postgresql://`` means psycopg 3 here."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def transient_database_error(error: BaseException) -> bool:
    """Whether a database error may pass if tried again later.

    "database is locked" past the busy timeout, a dropped or refused connection, a full
    connection pool: the store is briefly unavailable, not wrong. Integrity and programming
    errors are not transient and are not retried.
    """
    if isinstance(
        error, (exc.OperationalError, exc.InterfaceError, exc.DisconnectionError, exc.TimeoutError)
    ):
        return True
    return isinstance(error, exc.DBAPIError) and error.connection_invalidated


@contextmanager
def schema_lock(engine: Engine) -> Iterator[Connection]:
    """A connection holding the database's schema lock while the block runs.

    Processes that start at once on a fresh database take turns: the first creates or
    migrates the schema, the others then find it done. PostgreSQL: a session advisory lock.
    SQLite: an exclusive ``flock`` on ``DBFILE.schema-lock`` beside the file (SQLite's own
    locks do not cover the reads an upgrade makes before it writes).
    """
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
            connection.commit()
            try:
                yield connection
            finally:
                connection.rollback()
                connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": SCHEMA_LOCK_KEY}
                )
                connection.commit()
        return
    path = engine.url.database if engine.dialect.name == "sqlite" else None
    if not path or path == ":memory:":  # nothing another process could share
        with engine.connect() as connection:
            yield connection
        return
    with (
        _SQLITE_SCHEMA_THREADS,
        open(Path(path).with_name(Path(path).name + ".schema-lock"), "a") as lock,
    ):
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with engine.connect() as connection:
                yield connection
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the engine read while a worker thread writes; the busy timeout makes concurrent
    # writers wait for each other instead of failing with "database is locked"
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    # in WAL mode NORMAL never corrupts the file; it only may lose the last commits on power
    # loss, which redelivery (acks_late + idempotent steps) repairs
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


_KEPT_CURSOR = "ferryman_statements_cursor"


def _idle(dbapi_connection: Any) -> bool:
    """Whether a psycopg connection is open with no transaction in progress."""
    from psycopg import pq

    return bool(dbapi_connection.info.transaction_status == pq.TransactionStatus.IDLE)


def _returned(_dbapi_connection: Any, record: Any) -> None:
    record.info[_RETURNED_AT] = time.monotonic()


def _server_closed(dbapi_connection: Any) -> bool:
    """Whether the server has sent anything to an idle connection: Ferryman listens for no
    notifications, so anything waiting on its socket is the server ending the session (a
    restart's termination notice, then the end of the stream), or the socket is gone."""
    if getattr(dbapi_connection, "closed", False) or getattr(dbapi_connection, "broken", False):
        return True
    try:
        fd = dbapi_connection.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return True


def _checked_out(dialect: Any) -> Any:
    """The pool's liveness check of a server connection as it is handed out.

    SQLAlchemy's ``pool_pre_ping`` costs a round trip (and the server's CPU) every time a
    session takes a connection, several times per step. A connection used moments ago is
    checked without one: if the server ended it (a restart, an administrator's terminate),
    its termination notice or end of stream is waiting on the socket. One idle longer than
    :data:`PING_AFTER_IDLE_S` (time enough for a server host to go away without a word) is
    pinged as before. Either way a dead connection is replaced before anyone uses it.
    """

    def check(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        returned = record.info.get(_RETURNED_AT)
        if _server_closed(dbapi_connection):
            raise exc.DisconnectionError("the server closed the connection")
        if returned is None or time.monotonic() - returned > PING_AFTER_IDLE_S:
            try:
                dialect.do_ping(dbapi_connection)
            except Exception as error:
                raise exc.DisconnectionError(f"the connection failed a ping: {error}") from error

    return check


class Statements:
    """Prebuilt SQL on one pooled driver connection in autocommit (:meth:`Database.statements`).

    Each statement goes straight to the driver with parameters already in the dialect's form
    (``workflows.store.steprows`` builds them once per dialect). What SQLAlchemy does around
    a statement that matters here is kept: the engine's ``before_cursor_execute`` listeners
    see every statement (``conn`` and ``context`` are None: there is no SQLAlchemy connection),
    and a driver error is raised as SQLAlchemy's (``OperationalError``...), after a connection
    it found dead is invalidated, so the pool replaces it and the retry policy reads it as it
    reads any other database error (:func:`transient_database_error`).
    """

    def __init__(self, engine: Engine, proxy: Any, *, keep_cursor: bool = False) -> None:
        self.engine = engine
        self.dialect = engine.dialect
        self._proxy = proxy
        # psycopg: one cursor per pooled connection, kept with it, so the types' dumpers and
        # loaders it looked up serve every later statement on that connection
        self._keep_cursor = keep_cursor

    def execute(self, sql: str, params: Any) -> int:
        """Run one statement; how many rows it changed."""
        with self._cursor(sql, params) as cursor:
            return int(cursor.rowcount)

    def fetch(self, sql: str, params: Any) -> list[Any]:
        """Run one query; its rows as the driver returns them."""
        with self._cursor(sql, params) as cursor:
            return list(cursor.fetchall())

    @contextmanager
    def _cursor(self, sql: str, params: Any) -> Iterator[Any]:
        cursor = self._kept_cursor() if self._keep_cursor else self._proxy.dbapi_connection.cursor()
        try:
            for listener in self.engine.dispatch.before_cursor_execute:
                sql, params = listener(None, cursor, sql, params, None, False)
            cursor.execute(sql, params)
            yield cursor
        except self.dialect.loaded_dbapi.Error as error:
            lost = self.dialect.is_disconnect(error, self._proxy.dbapi_connection, cursor)
            if lost:
                self._proxy.invalidate(error)
            raise exc.DBAPIError.instance(
                sql,
                params,
                error,
                self.dialect.loaded_dbapi.Error,
                connection_invalidated=lost,
                dialect=self.dialect,
            ) from error
        finally:
            if not self._keep_cursor:
                cursor.close()

    def _kept_cursor(self) -> Any:
        raw = self._proxy.dbapi_connection
        info = self._proxy.info  # the pooled connection's, kept across checkouts
        cursor = info.get(_KEPT_CURSOR)
        if cursor is None or cursor.closed or cursor.connection is not raw:
            cursor = info[_KEPT_CURSOR] = raw.cursor()
        return cursor


class Database:
    """An engine plus a session factory; pass it to whatever needs the store."""

    def __init__(self, url: str, *, create: bool = True, pool_size: int | None = None) -> None:
        """``pool_size``: connections kept open (see :func:`pool_size_for`); a connection
        beyond them is opened when needed and closed when returned, which costs a server
        database a new backend process and SQLite its pragmas every time."""
        self.url = driver_url(url)
        kwargs: dict[str, Any] = {}
        if self.url.startswith("sqlite"):
            kwargs["connect_args"] = {
                "check_same_thread": False,
                "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
            }
            # Pooled: opening a connection and setting its pragmas costs more than a step's
            # queries. A pooled connection is rolled back when returned, so no transaction
            # outlives its session; overflow is unbounded (extra connections close on return)
            # so a busy worker's threads never queue for a connection.
            kwargs["poolclass"] = QueuePool
            kwargs["pool_size"] = max(SQLITE_POOL_SIZE, pool_size or 0)
            kwargs["max_overflow"] = -1
        else:
            kwargs["pool_size"] = pool_size or POOL_SIZE
        self.engine: Engine = create_engine(self.url, **kwargs)
        if self.url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            # in place of pool_pre_ping: see _checked_out
            event.listen(self.engine.pool, "checkout", _checked_out(self.engine.dialect))
            event.listen(self.engine.pool, "checkin", _returned)
        if create:
            self.create_all()

    def create_all(self) -> None:
        """Create missing tables, for the embedded demo and tests; a managed deployment runs
        ``ferryman db upgrade`` instead.

        Under the schema lock, so processes starting at once on a fresh database do not race;
        a database that had none of the tables is recorded at the migrations' head (the
        models are the head's schema), so ``ferryman db upgrade`` can take it on later.
        """
        from workflows.migrations import stamp_head, state_of

        with schema_lock(self.engine) as connection:
            fresh = not state_of(connection).has_tables
            SQLModel.metadata.create_all(connection)
            if fresh:
                stamp_head(connection, self.url)
            connection.commit()

    @contextmanager
    def statements(self) -> Iterator[Statements]:
        """One pooled connection whose statements each take effect on their own (the
        driver's autocommit): no BEGIN and COMMIT round trips around them, for work that is a
        sequence of single compare-and-set statements, each of which leaves the store
        consistent by itself (a step's per-step bookkeeping). Anything that must be all or
        nothing uses :meth:`session`.

        The statements are prebuilt SQL run on the driver's connection (:class:`Statements`),
        without an ORM session or a SQLAlchemy connection around them: on a worker's per-step
        path those cost several times the statements' own CPU.
        """
        proxy: Any = self.engine.raw_connection()  # the pool's checkout and liveness check
        dialect = self.engine.dialect
        raw = proxy.dbapi_connection
        # psycopg's autocommit flag is all the dialect's isolation-level calls change here
        direct = dialect.driver == "psycopg"
        try:
            if direct:
                raw.autocommit = True
            else:
                dialect.set_isolation_level(raw, "AUTOCOMMIT")
            yield Statements(self.engine, proxy, keep_cursor=direct)
        finally:
            if proxy.is_valid:
                try:
                    if direct:
                        raw.autocommit = False
                    else:
                        dialect.reset_isolation_level(raw)
                except Exception as error:  # a connection that cannot be reset is not reused
                    proxy.invalidate(error)
            if direct and proxy.is_valid and _idle(raw):
                # autocommit left no transaction: the pool's rollback on return has nothing
                # to do (SQLAlchemy's own checkin after a reset transaction, as here)
                proxy._close_special(transaction_reset=True)
            else:
                proxy.close()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success and rolled back on error."""
        with Session(self.engine, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def dispose(self) -> None:
        """Close pooled connections."""
        self.engine.dispose()
