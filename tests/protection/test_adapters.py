"""Failover of a VM on several networks: each adapter by its own network's mapping.

The lab names every adapter "Network Adapter", as Hyper-V does, so the worker must pick one
by its Id on the host; a client's copy of an adapter sent back as ``-VMNetworkAdapter`` is
refused, as a real host refuses it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from plans import Bundle, load_bundle
from plans.rules import WARNING, check_bundle
from workers.embedded import Runtime
from workers.errors import CmdletFailed
from workflows.compiler import compile_run
from workflows.demo import PASSWORD_VARIABLE, lab_topology, point_at_lab
from workflows.progress import wait_for
from workflows.readiness import static_checks
from workflows.statuses import TERMINAL_RUN
from workflows.store import Run

from .conftest import FABRIC, TIME_SCALE

pytestmark = pytest.mark.integration

VM = "web-01"
PRIMARY, REPLICA = "hv-sto-1", "hv-got-1"


def _topology() -> dict[str, Any]:
    """The lab with web-01 on two networks (two adapters, both named "Network Adapter")."""
    topology = lab_topology()
    for vm in topology["vms"]:
        if vm["name"] == VM:
            vm["networks"] = ["corp-sto", "mgmt-sto"]
            vm["ips"] = {**vm.get("ips", {}), "mgmt-sto": "10.11.1.31", "mgmt-got": "10.21.1.31"}
    return topology


def _bundle(urls: dict[str, str], *, map_mgmt: bool) -> Bundle:
    """The example fabric with web-01 on corp-sto and mgmt-sto and a one-VM plan for it;
    ``map_mgmt``: also map mgmt-sto to gothenburg's mgmt-got."""
    snapshot = point_at_lab(load_bundle([FABRIC]), urls).snapshot()
    fabric = snapshot["fabric"]
    fabric["pairings"]["gold"]["vms"][VM]["networks"] = ["corp-sto", "mgmt-sto"]
    if map_mgmt:
        fabric["sites"]["gothenburg"]["networks"]["mgmt-got"] = {"subnets": ["10.21.0.0/16"]}
        fabric["network_mappings"].append(
            {
                "source": {"site": "stockholm", "network": "mgmt-sto"},
                "target": {"site": "gothenburg", "network": "mgmt-got"},
            }
        )
    snapshot["plans"] = {
        "multi": {
            "pairing": "gold",
            "groups": [{"name": "web", "vms": [{"name": VM, "wait_for_ip": False}]}],
        }
    }
    return Bundle.from_snapshot(snapshot)


@contextmanager
def _lab() -> Iterator[Any]:
    from lab.testing import running_lab
    from workers.hyperv.psrp import shared_cache

    with running_lab(_topology(), auth="ntlm", time_scale=TIME_SCALE) as lab:
        previous = os.environ.get(PASSWORD_VARIABLE)
        os.environ[PASSWORD_VARIABLE] = lab.password
        try:
            yield lab
        finally:
            shared_cache().close()
            if previous is None:
                os.environ.pop(PASSWORD_VARIABLE, None)
            else:
                os.environ[PASSWORD_VARIABLE] = previous


def _urls(lab: Any) -> dict[str, str]:
    return {name: endpoint.url for name, endpoint in lab.endpoints.items()}


@pytest.fixture(autouse=True)
def _vms_free(request: pytest.FixtureRequest) -> None:
    """Each test starts with no VM held: the module's runtime is shared, and a failover left
    uncommitted by one test would otherwise hold web-01 for the next."""
    if "runtime" not in request.fixturenames:
        return
    from sqlmodel import delete

    from workflows.store.tables import VmLock

    runtime: Runtime = request.getfixturevalue("runtime")
    with runtime.db.session() as session:
        session.exec(delete(VmLock))


def _runner(lab: Any, host: str) -> Any:
    """A pypsrp runner for one lab host (NTLM, as the example fabric)."""
    from plans.credentials import SecretRef
    from workers.hyperv.connection import AuthMethod, PsrpEndpoint
    from workers.hyperv.psrp import PsrpRunner

    endpoint = lab.endpoints[host]
    return PsrpRunner(
        PsrpEndpoint(
            host=host,
            url=endpoint.url,
            auth=AuthMethod.NTLM,
            username=endpoint.username,
            password_ref=SecretRef.parse(f"env:{PASSWORD_VARIABLE}"),
        ),
        default_timeout=60,
    )


def _adapters(lab: Any, host: str) -> list[dict[str, Any]]:
    """web-01's adapters on ``host``, read over WinRM + PSRP as a worker reads them."""
    result = _runner(lab, host).run("Get-VMNetworkAdapter", {"VMName": VM})
    assert not result.errors
    return [dict(o) for o in result.output]


def _failover(runtime: Runtime, bundle: Bundle) -> Run:
    compiled = compile_run(bundle.fabric, "multi", bundle.plans["multi"], "unplanned")
    run = runtime.engine.start_compiled(bundle, compiled, requested_by="test")
    return wait_for(runtime.db, run.id, TERMINAL_RUN, timeout=120, interval=0.05)


def _connect_result(runtime: Runtime, run_id: str) -> dict[str, Any]:
    from workflows.store import repository

    with runtime.db.session() as session:
        steps = repository.steps_of(session, run_id=run_id)
        (step,) = [s for s in steps if s.kind == "connect_network"]
        return dict(step.result or {})


def test_each_adapter_connects_to_its_own_networks_mapping(runtime: Runtime) -> None:
    with _lab() as lab:
        before = _adapters(lab, REPLICA)
        assert [a["Name"] for a in before] == ["Network Adapter", "Network Adapter"]
        assert [a["SwitchName"] for a in before] == [None, None]
        bundle = _bundle(_urls(lab), map_mgmt=True)
        assert not [
            f
            for f in check_bundle(bundle.fabric, bundle.plans)
            if f.severity is WARNING and "network mapping" in f.message
        ]

        run = _failover(runtime, bundle)

        assert run.status == "succeeded", run.error
        after = _adapters(lab, REPLICA)
        assert [a["SwitchName"] for a in after] == ["corp-got", "mgmt-got"]
        # Same adapters (by Id), each moved by itself.
        assert [a["Id"] for a in after] == [a["Id"] for a in before]
        result = _connect_result(runtime, run.id)
        assert [a["switch"] for a in result["adapters"]] == ["corp-got", "mgmt-got"]
        assert "warnings" not in result


def test_an_unmapped_adapter_stays_disconnected_and_is_warned_about(runtime: Runtime) -> None:
    with _lab() as lab:
        bundle = _bundle(_urls(lab), map_mgmt=False)
        warnings = [
            f.message
            for f in check_bundle(bundle.fabric, bundle.plans)
            if f.severity is WARNING and "mgmt-sto" in f.message
        ]
        assert len(warnings) == 1 and VM in warnings[0]
        # names the one adapter left unconnected, not the whole VM
        assert warnings[0].startswith(f"adapter 2 of VM {VM!r} is on network 'mgmt-sto'")
        assert "that adapter is left unconnected" in warnings[0]
        assert "other 1 adapter(s) are connected by their own" in warnings[0]
        checks = static_checks(bundle.fabric, bundle.plans["multi"])
        assert [(c.verdict.value, c.detail) for c in checks if c.check == "network mapped"] == [
            ("pass", "corp-sto"),
            ("warn", "mgmt-sto is unmapped: its adapter stays disconnected"),
        ]

        run = _failover(runtime, bundle)

        assert run.status == "succeeded", run.error
        assert [a["SwitchName"] for a in _adapters(lab, REPLICA)] == ["corp-got", None]
        result = _connect_result(runtime, run.id)
        assert [a["switch"] for a in result["adapters"]] == ["corp-got", None]
        (warning,) = result["warnings"]
        assert "adapter 2" in warning and "unmapped" in warning


def test_a_clients_copy_of_an_adapter_is_refused_as_on_windows() -> None:
    with _lab() as lab:
        first, _second = _adapters(lab, PRIMARY)
        with pytest.raises(CmdletFailed) as refused:
            _runner(lab, PRIMARY).run(
                "Connect-VMNetworkAdapter", {"VMNetworkAdapter": first, "SwitchName": "mgmt-sto"}
            )
        assert "Deserialized.Microsoft.HyperV.PowerShell.VMNetworkAdapter" in str(refused.value)
        assert refused.value.fully_qualified_error_id.startswith("CannotConvertArgument")
        assert [a["SwitchName"] for a in _adapters(lab, PRIMARY)] == ["corp-sto", "mgmt-sto"]
