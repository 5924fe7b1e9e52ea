"""Topology loading: the example world, validation, credentials, the clock."""

from __future__ import annotations

import pytest

from lab.clock import Clock
from lab.topology import TopologyError, load_topology
from lab.world import HostInfo, Lab
from tests.lab.test_domain_support import EXAMPLE, example_dict


def test_example_topology_has_the_shared_world() -> None:
    topo = load_topology(EXAMPLE)
    assert topo.sites == ("stockholm", "gothenburg")
    assert {h.name: h.port for h in topo.hosts} == {
        "vmm-sto": 15985,
        "vmm-got": 15986,
        "hv-sto-1": 15987,
        "hv-sto-2": 15988,
        "hv-got-1": 15989,
        "hv-got-2": 15990,
    }
    assert topo.admin_port == 15999
    protected = [v.name for v in topo.vms if v.replication]
    assert len(protected) == 12
    # Two VMs wait for `ferryman protect apply` to enable their replication.
    assert sorted(v.name for v in topo.vms if v.replication is None) == ["crm-01", "hr-01"]
    assert topo.replication_bandwidth_mbps == 10000 and topo.resync_after_seconds == 3600
    assert {z.name for z in topo.zones} == {"corp.example", "test.corp.example"}
    www = next(r for r in topo.zones[0].records if r.name == "www")
    assert len(www.data) == 4


def test_lab_hosts_and_credentials() -> None:
    lab = Lab.from_topology(EXAMPLE, time_scale=0)
    assert lab.hosts["vmm-sto"] == HostInfo("vmm-sto", "stockholm", "vmm", 15985)
    assert (lab.username, lab.domain) == ("ferryman", "LAB")
    assert len(lab.password) >= 16
    for name in ("ferryman", "LAB\\ferryman", "ferryman@LAB", "lab\\FERRYMAN"):
        assert lab.check_password(name, lab.password), name
    assert not lab.check_password("ferryman", lab.password + "x")
    assert not lab.check_password("OTHER\\ferryman", lab.password)
    assert not lab.check_password("admin", lab.password)
    # Each start generates a new password.
    assert Lab.from_topology(EXAMPLE, time_scale=0).password != lab.password


def test_password_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    data = example_dict()
    data["credentials"]["password"] = "env:LAB_TEST_PASSWORD"
    monkeypatch.setenv("LAB_TEST_PASSWORD", "s3cret-from-env")
    assert Lab.from_topology(data, time_scale=0).password == "s3cret-from-env"
    monkeypatch.delenv("LAB_TEST_PASSWORD")
    with pytest.raises(TopologyError, match="LAB_TEST_PASSWORD is not set"):
        load_topology(data)


def test_literal_password_is_refused() -> None:
    data = example_dict()
    data["credentials"]["password"] = "hunter2"
    with pytest.raises(TopologyError, match="never a value"):
        load_topology(data)


def test_every_problem_is_reported_at_once() -> None:
    data = example_dict()
    data["hosts"][0]["role"] = "dc"
    data["hosts"][1]["port"] = 15985
    data["vms"][0]["replication"] = {"frequency": 60, "recovery_history": 30}
    data["vms"][1]["replica"] = "vmm-got"
    data["vms"][2]["ips"] = {"corp-sto": "not-an-ip"}
    data["time_scale"] = -1
    with pytest.raises(TopologyError) as caught:
        load_topology(data)
    problems = "\n".join(caught.value.problems)
    for fragment in (
        "role must be",
        "already used",
        "frequency",
        "recovery_history",
        "vms[1].replica",
        "not-an-ip",
        "time_scale",
    ):
        assert fragment in problems
    assert len(caught.value.problems) >= 7


def test_dns_records_are_checked_and_stored_as_the_server_would() -> None:
    data = example_dict()
    zone = data["dns"]["zones"][0]
    zone["records"] += [
        {"name": "v6", "type": "AAAA", "data": "FD00:0:0::1"},
        {"name": "11.1", "type": "PTR", "data": "sql-01.corp.example"},
    ]
    records = {r.name: r for r in load_topology(data).zones[0].records}
    assert records["v6"].data == ("fd00::1",)
    assert records["11.1"].data == ("sql-01.corp.example.",)
    zone["records"] += [
        {"name": "bad6", "type": "AAAA", "data": "10.10.9.1"},
        {"name": "badttl", "type": "A", "data": "10.10.9.1", "ttl": "an hour"},
    ]
    with pytest.raises(TopologyError) as caught:
        load_topology(data)
    problems = "\n".join(caught.value.problems)
    assert "'10.10.9.1' is not an IPv6 address" in problems
    assert "ttl: must be whole seconds" in problems


def test_unreadable_file(tmp_path) -> None:
    bad = tmp_path / "t.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(TopologyError, match="mapping"):
        load_topology(bad)


def test_time_scale_override_and_frozen_clock() -> None:
    lab = Lab.from_topology(EXAMPLE, time_scale=0)
    assert lab.clock.frozen
    t = lab.clock.now()
    assert lab.clock.now() == t
    assert lab.clock.advance(10) == t + 10
    assert Lab.from_topology(EXAMPLE).clock.time_scale == 0.01
    with pytest.raises(ValueError):
        Clock(-1)


def test_scaled_clock_runs_faster_than_real_time() -> None:
    clock = Clock(0.001)
    start = clock.now()
    clock.sleep(5)  # 5 lab seconds = 5 ms real
    assert clock.now() - start >= 5


def test_fault_entries_are_validated_at_load() -> None:
    data = example_dict()
    data["faults"] = [
        {"cmdlet": "Start-VM", "fail": "explode"},
        {"host_down": "hv-mars-1"},
        {"vm": "nope-01", "no_ip": True},
        {"vm": "sql-01", "health": "Purple"},
        {"cmdlet": "Stop-VM", "fail": "reset", "count": 2},
    ]
    with pytest.raises(TopologyError) as caught:
        load_topology(data)
    assert [p.split(":")[0] for p in caught.value.problems] == [
        "faults[0]",
        "faults[1]",
        "faults[2]",
        "faults[3]",
    ]
