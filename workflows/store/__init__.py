"""The SQL store: tables, the database handle and repository functions."""

from workflows.store import outbox  # noqa: F401  (audit events of note get outbox rows)
from workflows.store.database import Database, transient_database_error
from workflows.store.repository import Conflict, RunNotFound
from workflows.store.tables import Approval, AuditEvent, Run, Step, utcnow

__all__ = [
    "Approval",
    "AuditEvent",
    "Conflict",
    "Database",
    "Run",
    "RunNotFound",
    "Step",
    "transient_database_error",
    "utcnow",
]
