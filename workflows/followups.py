"""Follow-up runs linked to an earlier run: cleanup, commit, cancel failover, reverse.

Each compiles from the original run's snapshot and recorded steps (not from today's plan
files), so it acts on exactly the VMs and hosts that run touched.
"""

from __future__ import annotations

from workflows.compensation import RunStarter, step_records
from workflows.compiler import FOLLOW_UPS, CompiledRun, RunOperation, compile_followup
from workflows.events import EventKind
from workflows.statuses import RunStateError, RunStatus
from workflows.store import Run, repository


def start_followup(
    engine: RunStarter, run_id: str, operation: RunOperation, *, by: str, notes: str = ""
) -> Run:
    """Start ``operation`` after ``run_id``; raises RunStateError when it does not fit."""
    with engine.db.session() as session:
        run = repository.get_run(session, run_id=run_id)
        op = RunOperation(run.operation)
        if op not in FOLLOW_UPS[operation]:
            raise RunStateError(
                f"run {run.id} is a {op.value} run; {operation.value} only follows a run of type "
                + " or ".join(sorted(o.value for o in FOLLOW_UPS[operation]))
                + " run"
            )
        source = run
        if operation is RunOperation.REVERSE and op is RunOperation.COMMIT:
            assert run.parent_id is not None
            source = repository.get_run(session, run_id=run.parent_id)
        children = repository.children_of(session, run_id=source.id)
        done = {RunOperation(c.operation) for c in children if c.status == RunStatus.SUCCEEDED}
        if operation is RunOperation.CLEANUP:
            ok = run.status in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)
        else:
            ok = source.status == RunStatus.SUCCEEDED
        if not ok:
            raise RunStateError(
                f"run {source.id} is {source.status}; {operation.value} needs it finished"
            )
        if operation in done:
            raise RunStateError(f"run {source.id} already had a successful {operation.value}")
        if operation is RunOperation.REVERSE and RunOperation.COMMIT not in done:
            raise RunStateError(
                f"commit run {source.id} first ('ferryman runs commit "
                f"{source.id}'): replication reverses only after a commit"
            )
        if operation is RunOperation.COMMIT and RunOperation.CANCEL_FAILOVER in done:
            raise RunStateError(f"the failover of run {source.id} was cancelled; nothing to commit")
        compiled = compile_followup(
            CompiledRun.from_json(source.compiled), operation, step_records(session, source.id)
        )
        repository.add_event(
            session,
            run_id=source.id,
            event=EventKind.FOLLOW_UP,
            actor=by,
            message=f"{operation.value} requested" + (f": {notes}" if notes else ""),
        )
    return engine.start_child(source, compiled, requested_by=by, notes=notes)
