"""A script whose answer is lost after it ran is not run again without an operator."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import World
from workflows.statuses import RunStatus
from workflows.store import repository

pytestmark = pytest.mark.integration

SCRIPT_STEP = "g1.databases.quiesce-order-intake/script"


@pytest.mark.parametrize(("fail", "skip"), [("http500", False), ("reset", True)])
def test_a_script_is_not_retried_when_its_outcome_is_unknown(
    world: World, fail: str, skip: bool
) -> None:
    engine = world.runtime.engine
    rule = {"cmdlet": "Script", "host": "vmm-sto", "fail": fail, "after": True, "count": 1}
    assert world.lab.admin("POST", "/faults", rule)[0] == 201
    run = engine.start(world.bundle, "three-tier", "planned", requested_by="e2e")
    failed = world.settle(run.id)
    assert failed.status == RunStatus.FAILED
    assert failed.error.startswith(f"{SCRIPT_STEP}: script of the run on vmm-sto failed")
    assert (
        f"outcome unknown on vmm-sto: check, then `ferryman runs resume {run.id}` or "
        f"`ferryman runs skip {run.id}`"
    ) in failed.error
    with world.runtime.db.session() as session:
        step = repository.get_step(session, run_id=run.id, key=SCRIPT_STEP)
    assert (step.status, step.attempts) == ("failed", 1)
    _status, body = world.lab.admin("GET", "/audit?cmdlet=Script")
    assert [e["fault"] for e in body["entries"]] == [fail]  # it ran once, its answer was lost
    assert all(e["cmdlet"] != "Stop-VM" for e in world.audit())  # nothing went on after it

    # the operator checked the host: it did its work (skip), or it did not (resume runs it)
    engine.resume(run.id, by="e2e", skip_failed=skip)
    assert world.settle(run.id).status == RunStatus.WAITING
    _status, body = world.lab.admin("GET", "/audit?cmdlet=Script")
    assert [e["fault"] for e in body["entries"]] == ([fail] if skip else [fail, None])
    with world.runtime.db.session() as session:
        step = repository.get_step(session, run_id=run.id, key=SCRIPT_STEP)
    assert step.status == ("skipped" if skip else "succeeded")
    assert world.state()["sql-01@stockholm"]["state"] == "Off"  # the failover went on
