"""Operator actions for an authenticated principal: the role is checked, then
:class:`workflows.operations.Operations` (the CLI's own implementation) acts, as that principal.

Which permission an action needs follows from what it would do: starting or following up a
test failover (cleanup, and cancel, resume or compensate of a test or cleanup run) needs
``test``; the same on a planned or unplanned failover or its follow-ups needs ``failover``;
deciding a gate needs ``decide``. A refusal raises :class:`Forbidden` before anything changes;
what is done records the principal's :attr:`~workflows.tokens.Principal.actor`.
"""

from __future__ import annotations

from typing import Any

from plans.errors import FerrymanError
from workflows.compiler import RunOperation
from workflows.engine import BundleLike
from workflows.operations import Operations, Outcome
from workflows.tokens import Permission, Principal

TEST_OPERATIONS = frozenset({RunOperation.TEST, RunOperation.CLEANUP})


class Forbidden(FerrymanError):
    """The principal's role does not allow the action; nothing was changed."""

    def __init__(self, message: str, *, principal: Principal, needed: Permission) -> None:
        super().__init__(message)
        self.principal = principal
        self.needed = needed


def permission_for(operation: RunOperation | str) -> Permission:
    """What starting ``operation``, or acting on a run of it, requires."""
    return Permission.TEST if RunOperation(operation) in TEST_OPERATIONS else Permission.FAILOVER


def require(principal: Principal, permission: Permission, what: str) -> None:
    """Raise :class:`Forbidden` unless ``principal`` holds ``permission``."""
    if not principal.may(permission):
        raise Forbidden(
            f"{principal.name} has role {principal.role.value}, which may not {what}",
            principal=principal,
            needed=permission,
        )


class Actions:
    """The operations, each behind its role check."""

    def __init__(self, operations: Operations) -> None:
        self.operations = operations

    def _operation_of(self, run_id: str) -> RunOperation:
        run = self.operations.get(run_id)
        operation = RunOperation(run.operation)
        if operation is RunOperation.COMPENSATE and run.parent_id:
            # undoing a run is as sensitive as the run it undoes
            return self._operation_of(run.parent_id)
        return operation

    def _on_run(self, principal: Principal, run_id: str, what: str) -> None:
        require(principal, permission_for(self._operation_of(run_id)), what)

    def start(
        self,
        principal: Principal,
        bundle: BundleLike,
        plan: str,
        failover_type: str,
        direction: str = "failover",
        *,
        options: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Outcome:
        """Start a failover of ``plan``."""
        require(principal, permission_for(failover_type), f"start a {failover_type} failover")
        return self.operations.start(
            bundle,
            plan,
            failover_type,
            direction,
            options=options,
            by=principal.actor,
            idempotency_key=idempotency_key,
        )

    def decide(
        self,
        principal: Principal,
        run_id: str,
        *,
        approved: bool,
        comment: str,
        idempotency_key: str | None = None,
    ) -> Outcome:
        """Approve or reject the gate ``run_id`` waits at."""
        require(principal, Permission.DECIDE, "approve or reject gates")
        if approved:
            return self.operations.approve(
                run_id, by=principal.actor, comment=comment, idempotency_key=idempotency_key
            )
        return self.operations.reject(
            run_id, by=principal.actor, comment=comment, idempotency_key=idempotency_key
        )

    def follow_up(
        self, principal: Principal, run_id: str, operation: RunOperation, *, notes: str = ""
    ) -> Outcome:
        """Start a cleanup, commit, cancel-failover or reverse run after ``run_id``."""
        require(principal, permission_for(operation), f"start a {operation.value} run")
        return self.operations.follow_up(run_id, operation, by=principal.actor, notes=notes)

    def cancel(self, principal: Principal, run_id: str, *, reason: str = "") -> Outcome:
        """Stop a run (nothing new starts)."""
        self._on_run(principal, run_id, "cancel this run")
        return self.operations.cancel(run_id, by=principal.actor, reason=reason)

    def resume(self, principal: Principal, run_id: str) -> Outcome:
        """Re-run a failed run's failed steps."""
        self._on_run(principal, run_id, "resume this run")
        return self.operations.resume(run_id, by=principal.actor)

    def compensate(self, principal: Principal, run_id: str) -> Outcome:
        """Undo a run's completed steps as a run of its own."""
        self._on_run(principal, run_id, "compensate this run")
        return self.operations.compensate(run_id, by=principal.actor)
