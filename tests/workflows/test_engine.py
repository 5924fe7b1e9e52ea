"""The engine with an in-process worker and a fake executor: lifecycle, gates, failures."""

from __future__ import annotations

import pytest
from rich.table import Table

from plans import Bundle
from tests.workflows.fakes import FakeExecutor, on_other_vms
from workers.embedded import Runtime
from workflows.compensation import compensate
from workflows.compiler import RunOperation
from workflows.engine import RunStateError
from workflows.followups import start_followup
from workflows.progress import snapshot, wait_for
from workflows.statuses import TERMINAL_RUN, RunStatus
from workflows.steps import StepKind
from workflows.store import Run, repository

SETTLED = [*TERMINAL_RUN, RunStatus.WAITING]


def settle(rt: Runtime, run_id: str, statuses: list[RunStatus] | None = None) -> Run:
    return wait_for(rt.db, run_id, statuses or SETTLED, timeout=30, interval=0.02)


def steps(rt: Runtime, run_id: str) -> dict[str, str]:
    with rt.db.session() as session:
        return {s.key: s.status for s in repository.steps_of(session, run_id=run_id)}


def variant(bundle: Bundle, **changes: object) -> Bundle:
    plan = bundle.plan("three-tier")
    groups = changes.pop("groups", None)
    if groups is not None:
        plan = plan.model_copy(update={"groups": groups})
    plan = plan.model_copy(update=changes)
    return Bundle(fabric=bundle.fabric, plans={"three-tier": plan})


def without_gate(bundle: Bundle) -> Bundle:
    groups = [
        g.model_copy(update={"post": [a for a in g.post if a.kind != "manual"]})
        for g in bundle.plan("three-tier").groups
    ]
    return variant(bundle, groups=groups)


def test_test_run_waits_at_the_gate_then_finishes(
    runtime: Runtime, bundle: Bundle, executor: FakeExecutor
) -> None:
    run = runtime.engine.start(bundle, "three-tier", "test", requested_by="ops")
    waiting = settle(runtime, run.id)
    assert waiting.status == RunStatus.WAITING
    assert executor.count(StepKind.TEST_FAILOVER) == 2  # group 1 only, then the gate
    runtime.engine.approve(run.id, by="alice", comment="AG healthy")
    done = settle(runtime, run.id)
    assert done.status == RunStatus.SUCCEEDED, done.error
    assert executor.count(StepKind.TEST_FAILOVER) == 7
    assert max(executor.calls.values()) == 1  # every step ran exactly once
    with runtime.db.session() as session:
        gate = repository.approvals_of(session, run_id=run.id)[0]
        events = [e.event for e in repository.events_of(session, run_id=run.id)]
    assert (gate.status, gate.decided_by, gate.comment) == ("approved", "alice", "AG healthy")
    assert events[0] == "created" and "gate_opened" in events and events[-1] == "finished"
    # UPDATE_DNS saw the address WAIT_IP found for the same VM
    dns_ctx = [c for c in executor.contexts if "wait_ip" in c.prior]
    assert dns_ctx and all(c.failover_type == "test" for c in executor.contexts)
    assert run.content_hash == bundle.content_hash


def test_a_rejected_test_run_is_compensated_automatically(
    runtime: Runtime, bundle: Bundle, executor: FakeExecutor
) -> None:
    run = runtime.engine.start(bundle, "three-tier", "test")
    settle(runtime, run.id)
    runtime.engine.reject(run.id, by="bob", comment="AG broken")
    done = settle(runtime, run.id, [RunStatus.COMPENSATED])
    assert "rejected by bob: AG broken" in done.error
    undone = [u["action"] for u in executor.compensated]
    assert undone.count("stop_test_failover") == 2 and undone.count("restore_dns") == 2
    # newest first: DNS of a VM is restored before its test VM goes
    assert undone.index("restore_dns") < undone.index("stop_test_failover")


def test_transient_errors_are_retried(
    runtime: Runtime, bundle: Bundle, executor: FakeExecutor
) -> None:
    executor.transient[("start_vm", "sql-01")] = 2
    run = runtime.engine.start(without_gate(bundle), "three-tier", "test")
    assert settle(runtime, run.id).status == RunStatus.SUCCEEDED
    with runtime.db.session() as session:
        step = repository.get_step(session, run_id=run.id, key="g1.databases/sql-01/start_vm")
        retries = [
            e for e in repository.events_of(session, run_id=run.id) if e.event == "step_retry"
        ]
    assert step.attempts == 3 and step.status == "succeeded"
    assert len(retries) == 2 and "connection reset by hv-got-1" in retries[0].message
    assert executor.calls[("test_failover", "sql-01")] == 1  # the retry skipped done steps


def test_exhausted_retries_fail_the_step(
    runtime: Runtime, bundle: Bundle, executor: FakeExecutor
) -> None:
    executor.transient[("start_vm", "sql-01")] = 99
    run = runtime.engine.start(bundle, "three-tier", "planned")
    done = settle(runtime, run.id)
    assert done.status == RunStatus.FAILED
    assert "gave up after 4 attempts" in done.error


def test_permanent_failure_then_resume(
    runtime: Runtime, bundle: Bundle, executor: FakeExecutor
) -> None:
    executor.permanent.add(("failover", "app-02"))
    run = runtime.engine.start(without_gate(bundle), "three-tier", "planned")
    failed = settle(runtime, run.id)
    assert failed.status == RunStatus.FAILED
    key = "g2.application/app-02/failover"
    assert failed.error.startswith(f"{key}: failover of VM app-02 on hv-got-2 failed (permanent)")
    assert "replication state Error" in failed.error
    assert steps(runtime, run.id)["g3.web/web-01/failover"] == "pending"  # group 3 never began
    # a real failover is never compensated automatically
    assert executor.compensated == []
    executor.permanent.clear()
    runtime.engine.resume(run.id, by="carol")
    assert settle(runtime, run.id).status == RunStatus.SUCCEEDED
    assert executor.calls[("failover", "app-02")] == 2
    assert executor.calls[("failover", "app-01")] == 1  # succeeded steps were not re-run
    assert executor.calls[("shutdown_primary", "sql-01")] == 1


def test_compensate_a_failed_planned_run_on_request(
    runtime: Runtime, bundle: Bundle, executor: FakeExecutor
) -> None:
    executor.permanent.add(("reverse", "sql-02"))
    run = runtime.engine.start(bundle, "three-tier", "planned")
    assert settle(runtime, run.id).status == RunStatus.FAILED
    child = compensate(runtime.engine, run.id, by="dave")
    assert child is not None and child.parent_id == run.id
    assert settle(runtime, child.id).status == RunStatus.SUCCEEDED
    assert settle(runtime, run.id, [RunStatus.COMPENSATED]).status == RunStatus.COMPENSATED
    # both VMs of group 1 had failed over (sql-02 failed at the reverse after it)
    assert sorted(u["vm"] for u in executor.compensated if u["action"] == "cancel_failover") == [
        "sql-01",
        "sql-02",
    ]
    with pytest.raises(RunStateError):
        runtime.engine.resume(run.id, by="dave")


def test_unplanned_shutdown_attempt_may_fail(
    runtime: Runtime, bundle: Bundle, executor: FakeExecutor
) -> None:
    executor.permanent.add(("shutdown_primary", "sql-01"))
    run = runtime.engine.start(without_gate(bundle), "three-tier", "unplanned")
    done = settle(runtime, run.id)
    assert done.status == RunStatus.SUCCEEDED, done.error
    assert steps(runtime, run.id)["g1.databases/sql-01/shutdown_primary"] == "failed"
    commit = start_followup(runtime.engine, run.id, RunOperation.COMMIT, by="erin")
    with pytest.raises(RunStateError, match="commit run"):
        start_followup(runtime.engine, run.id, RunOperation.REVERSE, by="erin")
    assert settle(runtime, commit.id).status == RunStatus.SUCCEEDED
    reverse = start_followup(runtime.engine, run.id, RunOperation.REVERSE, by="erin")
    assert settle(runtime, reverse.id).status == RunStatus.SUCCEEDED
    assert executor.count(StepKind.SET_AS_REPLICA) == 7
    assert executor.count(StepKind.START_INITIAL_REPLICATION) == 7
    assert all(c.failover_type == "unplanned" for c in executor.contexts)


def test_cleanup_after_a_test(runtime: Runtime, bundle: Bundle, executor: FakeExecutor) -> None:
    run = runtime.engine.start(without_gate(bundle), "three-tier", "test")
    assert settle(runtime, run.id).status == RunStatus.SUCCEEDED
    with pytest.raises(RunStateError, match="only follows a run of type unplanned"):
        start_followup(runtime.engine, run.id, RunOperation.COMMIT, by="x")
    cleanup = start_followup(
        runtime.engine, run.id, RunOperation.CLEANUP, by="frank", notes="app team signed off"
    )
    done = settle(runtime, cleanup.id)
    assert done.status == RunStatus.SUCCEEDED and done.notes == "app team signed off"
    assert executor.count(StepKind.TEST_CLEANUP) == 7
    assert executor.count(StepKind.RESTORE_DNS) == 7
    # the follow-up's own stages are counted (one), never "stage 2/1"
    table = snapshot(runtime.db, cleanup.id)
    assert isinstance(table, Table)
    title = str(table.title)
    assert "stage 1/1: cleanup" in title, title
    with pytest.raises(RunStateError, match="already had a successful cleanup"):
        start_followup(runtime.engine, run.id, RunOperation.CLEANUP, by="frank")


def test_gates_hold_no_worker_slot(runtime: Runtime, bundle: Bundle) -> None:
    # four worker threads, six runs parked at their gates: another run still goes through
    waiting = [
        runtime.engine.start(on_other_vms(bundle, str(i)), "three-tier", "test") for i in range(6)
    ]
    for run in waiting:
        assert settle(runtime, run.id).status == RunStatus.WAITING
    other = runtime.engine.start(on_other_vms(without_gate(bundle), "x"), "three-tier", "test")
    assert settle(runtime, other.id).status == RunStatus.SUCCEEDED
    for run in waiting:
        runtime.engine.approve(run.id, by="ops")
    for run in waiting:
        assert settle(runtime, run.id).status == RunStatus.SUCCEEDED


def test_gate_timeout_policies(runtime: Runtime, bundle: Bundle) -> None:
    def timed(policy: str) -> Bundle:
        groups = list(bundle.plan("three-tier").groups)
        gate = groups[0].post[0].model_copy(update={"timeout": 0.0, "on_timeout": policy})
        groups[0] = groups[0].model_copy(update={"post": [gate]})
        return variant(bundle, groups=groups)

    passing = runtime.engine.start(timed("continue"), "three-tier", "test")
    failing = runtime.engine.start(on_other_vms(timed("fail"), "x"), "three-tier", "test")
    assert settle(runtime, passing.id, [*TERMINAL_RUN]).status == RunStatus.SUCCEEDED
    assert settle(runtime, failing.id, [RunStatus.COMPENSATED]).error == (
        "gate confirm-databases timed out"
    )
    with runtime.db.session() as session:
        gate = repository.approvals_of(session, run_id=passing.id)[0]
    assert (gate.status, gate.decided_by) == ("timed_out", "ferryman (timeout)")


def test_cancel_a_waiting_run(runtime: Runtime, bundle: Bundle) -> None:
    run = runtime.engine.start(bundle, "three-tier", "test")
    settle(runtime, run.id)
    runtime.engine.cancel(run.id, by="gina", reason="drill postponed")
    with pytest.raises(RunStateError, match="not waiting at a gate"):
        runtime.engine.approve(run.id, by="gina")
    states = steps(runtime, run.id)
    assert states["g3.web/web-01/test_failover"] == "cancelled"
    assert states["g1.databases/sql-01/test_failover"] == "succeeded"


def test_idempotency_key_starts_one_run(runtime: Runtime, bundle: Bundle) -> None:
    first = runtime.engine.start(bundle, "three-tier", "test", idempotency_key="drill-42")
    second = runtime.engine.start(bundle, "three-tier", "test", idempotency_key="drill-42")
    assert first.id == second.id
    with runtime.db.session() as session:
        found = repository.find_run_by_key(session, idempotency_key="drill-42")
    assert found is not None and found.id == first.id


def test_group_failure_policy_continue(
    runtime: Runtime, bundle: Bundle, executor: FakeExecutor
) -> None:
    executor.permanent.add(("test_failover", "sql-01"))
    run = runtime.engine.start(
        variant(without_gate(bundle), on_group_failure="continue"), "three-tier", "test"
    )
    done = settle(
        runtime, run.id, [RunStatus.FAILED, RunStatus.COMPENSATING, RunStatus.COMPENSATED]
    )
    assert done.error.startswith("g1.databases/sql-01/test_failover")
    assert executor.calls[("test_failover", "web-02")] == 1  # later groups still ran
