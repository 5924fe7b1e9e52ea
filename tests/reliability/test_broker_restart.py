"""Broker restarts: redis-server (append-only file on) goes away mid-run and comes back.

The run completes and the lab's audit log still shows each mutating cmdlet exactly once per
VM. A worker that exits because it lost the broker is started again, as the systemd units in
deploy/systemd do (Restart=always); the test counts those restarts.
"""

from __future__ import annotations

import pytest

from lab.testing import running_lab
from tests.reliability.conftest import SpawnWorker
from tests.reliability.drill import (
    PLAN,
    Stack,
    approve_until,
    audit_calls,
    drive,
    example_bundle,
    expected_planned_calls,
    step_statuses,
    topology,
)
from tests.support.bind import BindServers
from workflows.statuses import RunStatus


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_run_completes_across_a_redis_restart(
    stack: Stack, bind: BindServers, spawn_worker: SpawnWorker, kill: bool
) -> None:
    workers = [spawn_worker("a")]

    def supervise() -> None:
        if workers[-1].exited:
            workers.append(spawn_worker(f"restart-{len(workers)}"))

    with stack.runtime() as runtime, running_lab(topology(), auth="ntlm") as lab:
        bundle = example_bundle({n: e.url for n, e in lab.endpoints.items()}, bind)
        run = runtime.engine.start(bundle, PLAN, "planned", requested_by="reliability")
        # past the gate, with the application group's failovers under way
        approve_until(
            runtime,
            run.id,
            lambda: len(lab.lab.audit.entries()) >= 20,
            timeout=90,
            what="20 mutating calls",
        )
        stack.redis.stop(kill=kill)
        stack.redis.start()  # same port, same append-only file
        final = drive(runtime, run.id, timeout=120, supervise=supervise)
        _status, audit = lab.admin("GET", "/audit")
        assert final.status == RunStatus.SUCCEEDED, final.error
        assert set(step_statuses(runtime, run.id)) == {"succeeded"}
    calls = audit_calls(audit["entries"])
    assert set(calls) == expected_planned_calls(bundle)
    assert set(calls.values()) == {1}, {c: n for c, n in calls.items() if n != 1}
    print(f"\nredis {'SIGKILL' if kill else 'SIGTERM'}: worker restarts {len(workers) - 1}")
