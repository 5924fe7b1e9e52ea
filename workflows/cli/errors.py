"""One line for any error a command meets: Ferryman's own errors say what to do; errors of the
infrastructure (database unreachable, missing driver, unknown role, broker down) are named with
the setting to check; anything else is named with its type and the ``--debug`` hint."""

from __future__ import annotations

from plans.errors import FerrymanError

DEBUG_HINT = "(--debug or FERRYMAN_DEBUG=1 shows the traceback)"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _database_error(error: BaseException) -> str | None:
    try:
        from sqlalchemy import exc
    except ImportError:  # pragma: no cover - SQLAlchemy is a dependency
        return None
    if isinstance(error, exc.NoSuchModuleError):
        return f"FERRYMAN_DATABASE_URL names an unknown database driver: {_first_line(error)}"
    if isinstance(error, exc.ArgumentError):
        return f"FERRYMAN_DATABASE_URL cannot be used: {_first_line(error)}"
    if isinstance(error, exc.DBAPIError):
        orig = getattr(error, "orig", None) or error
        reason = _first_line(orig).removeprefix("(psycopg.OperationalError) ")
        if isinstance(error, (exc.OperationalError, exc.InterfaceError)):
            return f"the database (FERRYMAN_DATABASE_URL) cannot be used: {reason}"
        return f"the database refused the request: {reason}"
    if isinstance(error, exc.SQLAlchemyError):
        return f"database error: {_first_line(error)}"
    return None


def _broker_error(error: BaseException) -> str | None:
    module = type(error).__module__
    if module.startswith(("kombu", "redis", "amqp")):
        return f"the broker (FERRYMAN_BROKER_URL) cannot be reached: {_first_line(error)}"
    return None


def describe(error: BaseException) -> str:
    """The one line a command prints for ``error``."""
    if isinstance(error, FerrymanError):
        return _first_line(error) if "\n" not in str(error).strip() else str(error).strip()
    if isinstance(error, ModuleNotFoundError) and error.name in ("psycopg", "psycopg2"):
        return (
            "the PostgreSQL driver is not installed: pip install 'ferryman[postgres]' "
            "(FERRYMAN_DATABASE_URL names PostgreSQL)"
        )
    for known in (_database_error(error), _broker_error(error)):
        if known:
            return known
    if isinstance(error, OSError) and error.filename:
        return f"cannot use {error.filename}: {error.strerror or _first_line(error)}"
    if isinstance(error, ImportError):
        return f"a part of Ferryman cannot be imported: {_first_line(error)} {DEBUG_HINT}"
    return f"{type(error).__name__}: {_first_line(error)} {DEBUG_HINT}"
