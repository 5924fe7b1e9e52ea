"""A protection run and a failover hold each VM by the same lock: neither starts on a VM the
other holds, and the refused one changes nothing on the hosts."""

from __future__ import annotations

from typing import Any

import pytest

from tests.protection.conftest import Sites
from workers.embedded import Runtime
from workflows.progress import wait_for
from workflows.protection import compile_disable, compile_protection
from workflows.statuses import TERMINAL_RUN, RunStatus
from workflows.store.repository import VmLocked
from workflows.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _vms_free(runtime: Runtime) -> None:
    """Each test starts with no VM held: the module's runtime (and store) is shared."""
    from sqlmodel import delete

    from workflows.store.tables import VmLock

    with runtime.db.session() as session:
        session.exec(delete(VmLock))


def _solo(vm: str) -> Any:
    """A bundle edit adding plan ``solo``: one group with ``vm`` and no gate."""

    def edit(snapshot: dict[str, Any]) -> None:
        snapshot["plans"] = {
            "solo": {
                "pairing": "gold",
                "groups": [{"name": "one", "vms": [{"name": vm, "wait_for_ip": False}]}],
            }
        }

    return edit


def test_a_vm_held_by_a_failover_is_refused_to_a_protection_run(sites: Sites) -> None:
    engine = sites.runtime.engine
    bundle = sites.variant(_solo("sql-01"))
    test = engine.start(bundle, "solo", "test", requested_by="test")
    test = wait_for(sites.runtime.db, test.id, TERMINAL_RUN, timeout=120, interval=0.05)
    assert test.status == RunStatus.SUCCEEDED  # its test VM awaits cleanup: sql-01 stays held

    disable = compile_disable(bundle.fabric, sites.reports(), ["sql-01"], delete_replica=True)
    with pytest.raises(VmLocked, match=f"held by run {test.id}"):
        engine.start_compiled(bundle, disable, requested_by="test")

    assert sites.audit("Remove-VMReplication") == []
    assert sites.state()["sql-01@hv-sto-1"]["replication_state"] == "Replicating"


def test_a_vm_held_by_a_protection_run_is_refused_to_a_failover(frozen_sites: Sites) -> None:
    sites = frozen_sites
    engine, db = sites.runtime.engine, sites.runtime.db
    bundle = sites.variant(_solo("crm-01"))
    compiled = compile_protection(bundle.fabric, sites.reports(bundle), vms=["crm-01"])
    assert compiled is not None
    # The lab's clock is frozen: crm-01's initial replication waits, so the run keeps running.
    protect = engine.start_compiled(bundle, compiled, requested_by="test")

    with pytest.raises(VmLocked, match=f"held by run {protect.id}"):
        engine.start(bundle, "solo", "test", requested_by="test")
    assert sites.audit("Start-VMFailover") == []

    # crm-01's 60 GB at 10 Gbit/s take 51.5 lab seconds once the copy has started; then the
    # run ends and lets the VM go.
    copying = wait_until(
        lambda: sites.state()["crm-01@hv-sto-1"]["replication_state"]
        == "InitialReplicationInProgress"
        or None,
        timeout=60,
        interval=0.05,
    )
    assert copying
    assert sites.lab.admin("POST", "/time/advance", {"seconds": 60})[0] == 200
    done = wait_for(db, protect.id, TERMINAL_RUN, timeout=120, interval=0.05)
    assert done.status == RunStatus.SUCCEEDED
    test = engine.start(bundle, "solo", "test", requested_by="test")
    assert test.status == RunStatus.RUNNING
