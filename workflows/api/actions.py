"""Operator actions on runs, each checked against the principal's role before anything changes.

Which permission an action needs follows from what it would do: starting or following up a
test failover (cleanup, and cancel, resume or compensate of a test or cleanup run) needs
``test``; the same on a planned or unplanned failover or its follow-ups needs ``failover``;
deciding a gate needs ``decide``. Every action records the principal's :attr:`actor`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from plans.errors import FerrymanError
from workflows.compensation import compensate as start_compensation
from workflows.compiler import RunOperation
from workflows.engine import BundleLike, Engine
from workflows.followups import start_followup
from workflows.store import Run, repository
from workflows.tokens import Permission, Principal

TEST_OPERATIONS = frozenset({RunOperation.TEST, RunOperation.CLEANUP})


class Forbidden(FerrymanError):
    """The principal's role does not allow the action; nothing was changed."""


def permission_for(operation: RunOperation | str) -> Permission:
    """What starting ``operation``, or acting on a run of it, requires."""
    return Permission.TEST if RunOperation(operation) in TEST_OPERATIONS else Permission.FAILOVER


def require(principal: Principal, permission: Permission, what: str) -> None:
    """Raise :class:`Forbidden` unless ``principal`` holds ``permission``."""
    if not principal.may(permission):
        raise Forbidden(
            f"{principal.name} has role {principal.role.value}, which may not {what}"
        )


def start(
    engine: Engine,
    principal: Principal,
    bundle: BundleLike,
    plan: str,
    failover_type: str,
    direction: str = "failover",
    *,
    options: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> Run:
    """Start a failover of ``plan`` as ``principal``."""
    require(principal, permission_for(failover_type), f"start a {failover_type} failover")
    return engine.start(
        bundle,
        plan,
        failover_type,
        direction,
        options=options,
        requested_by=principal.actor,
        idempotency_key=idempotency_key,
    )


def _operation_of(engine: Engine, run_id: str) -> RunOperation:
    with engine.db.session() as session:
        run = repository.get_run(session, run_id=run_id, with_inputs=False)
    operation = RunOperation(run.operation)
    if operation is RunOperation.COMPENSATE and run.parent_id:
        # undoing a run is as sensitive as the run it undoes
        return _operation_of(engine, run.parent_id)
    return operation


def decide(
    engine: Engine, principal: Principal, run_id: str, *, approved: bool, comment: str
) -> Run:
    """Approve or reject the gate ``run_id`` waits at, as ``principal``."""
    require(principal, Permission.DECIDE, "approve or reject gates")
    if approved:
        return engine.approve(run_id, by=principal.actor, comment=comment)
    return engine.reject(run_id, by=principal.actor, comment=comment)


def follow_up(
    engine: Engine, principal: Principal, run_id: str, operation: RunOperation, *, notes: str = ""
) -> Run:
    """Start a cleanup, commit, cancel-failover or reverse run after ``run_id``."""
    require(principal, permission_for(operation), f"start a {operation.value} run")
    return start_followup(engine, run_id, operation, by=principal.actor, notes=notes)


def _on_run(
    engine: Engine, principal: Principal, run_id: str, what: str, act: Callable[[], Run | None]
) -> Run | None:
    require(principal, permission_for(_operation_of(engine, run_id)), what)
    return act()


def cancel(engine: Engine, principal: Principal, run_id: str, *, reason: str = "") -> Run:
    """Stop a run (nothing new starts)."""
    run = _on_run(
        engine,
        principal,
        run_id,
        "cancel this run",
        lambda: engine.cancel(run_id, by=principal.actor, reason=reason),
    )
    assert run is not None
    return run


def resume(engine: Engine, principal: Principal, run_id: str) -> Run:
    """Re-run a failed run's failed steps."""
    run = _on_run(
        engine,
        principal,
        run_id,
        "resume this run",
        lambda: engine.resume(run_id, by=principal.actor),
    )
    assert run is not None
    return run


def compensate(engine: Engine, principal: Principal, run_id: str) -> Run | None:
    """Undo a run's completed steps as a run of its own (None: nothing to undo)."""
    return _on_run(
        engine,
        principal,
        run_id,
        "compensate this run",
        lambda: start_compensation(engine, run_id, by=principal.actor),
    )
