"""The SQL store: tables, the database handle and repository functions."""

from workflows.store.database import Database
from workflows.store.repository import Conflict, RunNotFound
from workflows.store.tables import Approval, AuditEvent, Run, Step, utcnow

__all__ = ["Approval", "AuditEvent", "Conflict", "Database", "Run", "RunNotFound", "Step", "utcnow"]
