"""What an operator can do to runs, in one implementation for the CLI, the HTTP API and the
queue's commands: start, approve, reject, the follow-ups (cleanup, commit, cancel-failover,
reverse), resume, cancel and compensate. The free text they carry (who acted, a comment, notes,
a reason) is refused with a ConfigurationError when it holds control characters
(plans/FORMAT.md, "Free text").

Each operation returns an :class:`Outcome` saying what happened: the run it acted on or
started, whether the work was sent to the workers (``dispatched``: False when the broker was
unreachable; the change is recorded and the workers' watch sends it once the broker is back),
and whether an idempotency key made it return an earlier answer (``replayed``). Refusals raise
:class:`~plans.errors.FerrymanError` subclasses whose message says what to do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from plans.errors import FerrymanError
from plans.model import Direction, FailoverType
from plans.names import require_text
from workflows.compensation import compensate as start_compensation
from workflows.compiler import RunOperation
from workflows.engine import BundleLike, Engine, RunStateError
from workflows.events import EventKind
from workflows.followups import start_followup
from workflows.options import validate_options
from workflows.runtime import BrokerUnavailable
from workflows.statuses import RunStatus
from workflows.store import Run, repository
from workflows.store.repository import Conflict

# the follow-up runs an operator starts after a run, by command name
FOLLOW_UP_COMMANDS: dict[str, RunOperation] = {
    "cleanup": RunOperation.CLEANUP,
    "commit": RunOperation.COMMIT,
    "cancel-failover": RunOperation.CANCEL_FAILOVER,
    "reverse": RunOperation.REVERSE,
}
# what a finished run's status means for a caller waiting on it
SUCCESSFUL = (RunStatus.SUCCEEDED,)
UNSUCCESSFUL = (RunStatus.FAILED, RunStatus.COMPENSATED, RunStatus.CANCELLED)


@dataclass(frozen=True)
class Outcome:
    """What an operation did.

    ``run``: the run acted on, or the run started (a new run or a follow-up); ``target``: the
    run the operator named, when a follow-up was started from it; ``dispatched``: False when
    the change is recorded but the broker could not be reached (the workers send it later);
    ``replayed``: an idempotency key returned an earlier answer and nothing new was done.
    """

    action: str
    run: Run
    target: Run | None = None
    dispatched: bool = True
    replayed: bool = False
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        """The outcome as JSON (the API's answer, ``--json`` output)."""
        return {
            "action": self.action,
            "run": self.run.id,
            "status": str(self.run.status),
            "target": self.target.id if self.target else None,
            "dispatched": self.dispatched,
            "replayed": self.replayed,
            "detail": self.detail,
        }


class Operations:
    """Operator actions over one engine (built by :mod:`workflows.runtime`)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- reading

    def get(self, run_id: str) -> Run:
        """The run ``run_id`` (a unique prefix is enough); RunNotFound otherwise."""
        with self.engine.db.session() as session:
            return repository.get_run(session, run_id=run_id)

    def _fresh(self, run_id: str) -> Run:
        with self.engine.db.session() as session:
            return repository.get_run(session, run_id=run_id, with_inputs=False)

    # -- starting

    def start(
        self,
        bundle: BundleLike,
        plan: str,
        failover_type: FailoverType | str,
        direction: Direction | str = Direction.FAILOVER,
        *,
        options: dict[str, Any] | None = None,
        by: str,
        idempotency_key: str | None = None,
        on_recorded: Callable[[str], None] | None = None,
    ) -> Outcome:
        """Start a run of ``plan``; with a used ``idempotency_key``, return that run instead.

        ``on_recorded`` is told the run's id as soon as the run is committed, before its first
        stage is sent (a command prints it at once, whatever the broker does next).
        """
        by = _actor(by)
        options = validate_options(failover_type, options)  # one schema for CLI, API, queue
        if idempotency_key:
            with self.engine.db.session() as session:
                existing = repository.find_run_by_key(session, idempotency_key=idempotency_key)
            if existing is not None:
                asked = (
                    plan,
                    str(getattr(failover_type, "value", failover_type)),
                    str(getattr(direction, "value", direction)),
                )
                if (existing.plan, existing.operation, existing.direction) != asked:
                    raise RunStateError(
                        f"idempotency key {idempotency_key!r} was used by run {existing.id} "
                        f"({existing.operation} {existing.direction} of {existing.plan}), not "
                        f"for {asked[1]} {asked[2]} of {plan}: use a new key for a new request"
                    )
                return Outcome("start", existing, replayed=True, detail=_same_request(existing))
        announced: set[str] = set()

        def recorded(run_id: str) -> None:
            if on_recorded is not None and run_id not in announced:
                announced.add(run_id)
                on_recorded(run_id)

        dispatcher = self.engine.dispatcher
        hooked = hasattr(dispatcher, "on_recorded")
        if hooked:
            dispatcher.on_recorded = recorded  # type: ignore[attr-defined]
        try:
            run = self.engine.start(
                bundle,
                plan,
                failover_type,
                direction,
                options=options,
                requested_by=by,
                idempotency_key=idempotency_key,
            )
        except BrokerUnavailable as exc:
            return Outcome("start", self._fresh(exc.run_id), dispatched=False, detail=exc.reason)
        finally:
            if hooked:
                dispatcher.on_recorded = None  # type: ignore[attr-defined]
        recorded(run.id)  # a run that opened a gate first sends nothing
        return Outcome("start", run)

    # -- gates

    def approve(
        self, run_id: str, *, by: str, comment: str = "", idempotency_key: str | None = None
    ) -> Outcome:
        """Approve the gate ``run_id`` waits at; the run continues."""
        return self._decide(run_id, True, by=by, comment=comment, key=idempotency_key)

    def reject(
        self, run_id: str, *, by: str, comment: str = "", idempotency_key: str | None = None
    ) -> Outcome:
        """Reject the gate ``run_id`` waits at; the run fails (a test run is compensated)."""
        return self._decide(run_id, False, by=by, comment=comment, key=idempotency_key)

    def _decide(
        self, run_id: str, approved: bool, *, by: str, comment: str, key: str | None
    ) -> Outcome:
        action = "approve" if approved else "reject"
        by, comment = _actor(by), require_text(comment, "comment")
        run = self.get(run_id)
        if key:
            earlier = self._decision_with_key(run.id, key)
            if earlier is not None:
                return self._replay(action, run.id, key, earlier)
        try:
            decide = self.engine.approve if approved else self.engine.reject
            decided = decide(run.id, by=by, comment=comment, key=key)
        except BrokerUnavailable as exc:
            return Outcome(action, self._fresh(exc.run_id), dispatched=False, detail=exc.reason)
        except (RunStateError, Conflict):
            # a retry racing its first attempt: the first one's decision is the answer
            earlier = self._decision_with_key(run.id, key) if key else None
            if earlier is None:
                raise
            return self._replay(action, run.id, key or "", earlier)
        return Outcome(action, self._fresh(decided.id))

    def _decision_with_key(self, run_id: str, key: str) -> str | None:
        """The event kind of the decision made with ``key`` on ``run_id``, if any."""
        with self.engine.db.session() as session:
            for event in repository.events_of(session, run_id=run_id):
                if (event.data or {}).get("idempotency_key") == key:
                    return str(event.event)
        return None

    def _replay(self, action: str, run_id: str, key: str, event: str) -> Outcome:
        wanted = EventKind.GATE_APPROVED if action == "approve" else EventKind.GATE_REJECTED
        if event != wanted.value:
            raise RunStateError(
                f"idempotency key {key!r} was used for a different decision ({event}) on run "
                f"{run_id}: use a new key for a new request"
            )
        return Outcome(action, self._fresh(run_id), replayed=True, detail="decided earlier")

    # -- follow-ups and operator actions

    def follow_up(
        self, run_id: str, operation: RunOperation, *, by: str, notes: str = ""
    ) -> Outcome:
        """Start a follow-up run (cleanup, commit, cancel-failover, reverse) of ``run_id``."""
        by, notes = _actor(by), require_text(notes, "notes")
        target = self.get(run_id)
        return self._child(
            operation.value,
            target,
            lambda: start_followup(self.engine, target.id, operation, by=by, notes=notes),
        )

    def cleanup(self, run_id: str, *, by: str, notes: str = "") -> Outcome:
        """Clean up a test failover (delete its test VMs, restore DNS)."""
        return self.follow_up(run_id, RunOperation.CLEANUP, by=by, notes=notes)

    def commit(self, run_id: str, *, by: str, notes: str = "") -> Outcome:
        """Commit an unplanned failover (Complete-VMFailover)."""
        return self.follow_up(run_id, RunOperation.COMMIT, by=by, notes=notes)

    def cancel_failover(self, run_id: str, *, by: str, notes: str = "") -> Outcome:
        """Cancel an uncommitted unplanned failover (Stop-VMFailover)."""
        return self.follow_up(run_id, RunOperation.CANCEL_FAILOVER, by=by, notes=notes)

    def reverse(self, run_id: str, *, by: str, notes: str = "") -> Outcome:
        """Reverse replication after a committed unplanned failover."""
        return self.follow_up(run_id, RunOperation.REVERSE, by=by, notes=notes)

    def compensate(self, run_id: str, *, by: str) -> Outcome:
        """Undo a run's completed steps, newest first, as a linked compensation run."""
        by = _actor(by)
        target = self.get(run_id)
        return self._child(
            "compensate", target, lambda: start_compensation(self.engine, target.id, by=by)
        )

    def resume(self, run_id: str, *, by: str) -> Outcome:
        """Run a failed run's failed steps again and continue."""
        by = _actor(by)
        target = self.get(run_id)
        try:
            self.engine.resume(target.id, by=by)
        except BrokerUnavailable as exc:
            return Outcome("resume", self._fresh(exc.run_id), dispatched=False, detail=exc.reason)
        return Outcome("resume", self._fresh(target.id))

    def skip(self, run_id: str, *, by: str) -> Outcome:
        """Record a failed run's failed steps skipped (an operator checked them) and continue."""
        by = _actor(by)
        target = self.get(run_id)
        try:
            self.engine.resume(target.id, by=by, skip_failed=True)
        except BrokerUnavailable as exc:
            return Outcome("skip", self._fresh(exc.run_id), dispatched=False, detail=exc.reason)
        return Outcome("skip", self._fresh(target.id))

    def cancel(self, run_id: str, *, by: str, reason: str = "") -> Outcome:
        """Stop a run: nothing new starts; steps already running finish."""
        by, reason = _actor(by), require_text(reason, "reason")
        target = self.get(run_id)
        self.engine.cancel(target.id, by=by, reason=reason)
        return Outcome("cancel", self._fresh(target.id))

    def _child(self, action: str, target: Run, start: Callable[[], Run | None]) -> Outcome:
        try:
            child = start()
        except BrokerUnavailable as exc:
            return Outcome(
                action, self._fresh(exc.run_id), target, dispatched=False, detail=exc.reason
            )
        if child is None:  # nothing to undo: the run is marked compensated at once
            return Outcome(action, self._fresh(target.id), detail="nothing to undo")
        return Outcome(action, self._fresh(child.id), target)


def _actor(by: str) -> str:
    """Who acted: one line of free text (plans/FORMAT.md, "Free text")."""
    return require_text(by, "by", lines=False)


def _same_request(run: Run) -> str:
    return f"idempotency key already used by run {run.id} ({run.operation} of {run.plan})"


def exit_status_for(run: Run) -> int:
    """What a finished run means to a script: 0 succeeded or waiting, 1 otherwise."""
    return 1 if RunStatus(run.status) in UNSUCCESSFUL else 0


__all__ = [
    "FOLLOW_UP_COMMANDS",
    "BrokerUnavailable",
    "FerrymanError",
    "Operations",
    "Outcome",
    "exit_status_for",
]
