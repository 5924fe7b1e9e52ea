"""HyperVWorld.advance advances only what is due, with the effect of advancing every relationship.

The reference is the original full walk: every relationship some VM record holds (and whose
primary is linked) goes through ``_advance_one`` on every advance. Two labs on identical
frozen clocks get the same seeded random operations through the public paths (cmdlets, the
admin API, clock jumps); one advances the scheduled way, the other by the full walk, and their
whole observable state must stay equal.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from lab.clock import Clock
from lab.hyperv import state
from lab.hyperv.state import HyperVWorld
from lab.objects import CmdletError, TransportFault
from lab.topology import load_topology
from lab.world import Lab
from tests.lab.test_domain_support import call, example_dict

HOSTS = ("hv-sto-1", "hv-sto-2", "hv-got-1", "hv-got-2")
START = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def full_walk(world: HyperVWorld) -> None:
    """The original HyperVWorld.advance: every held, linked relationship, every time."""
    with world.lock:
        now = world.clock.now()
        seen: set[int] = set()
        for vm in world.all_vms():
            rep = vm.replication
            if rep is None or id(rep) in seen or not rep.primary_host:
                continue
            seen.add(id(rep))
            world._advance_one(rep, now)


def topology(extra: int = 24) -> dict[str, Any]:
    """The example world plus ``extra`` VMs: replicating or ready, varied settings, some
    unprotected (to enable), some with no replica."""
    data = example_dict()
    data["initial_replication_seconds"] = 90
    for i in range(extra):
        n = i % 2 + 1
        sto, got = f"hv-sto-{n}", f"hv-got-{n}"
        primary, replica = (sto, got) if i % 3 else (got, sto)
        spec: dict[str, Any] = {
            "name": f"gen-{i:02d}",
            "primary": primary,
            "networks": ["corp-sto" if primary.startswith("hv-sto") else "corp-got"],
            "ips": {"corp-sto": f"10.10.7.{i + 1}", "corp-got": f"10.20.7.{i + 1}"},
            "boot_seconds": 30,
            "running": i % 4 != 0,
        }
        if i % 6 != 5:
            history = (0, 2, 4, 6)[i % 4]
            spec["replica"] = replica
            spec["replication"] = {
                "state": "ready" if i % 3 == 1 else "replicating",
                "frequency": (30, 300, 900)[i % 3],
                "recovery_history": history,
                "app_consistent_hours": 1 if history > 1 and i % 2 else 0,
            }
        data["vms"].append(spec)
    return data


def twin_labs(data: dict[str, Any]) -> tuple[Lab, Lab]:
    """(scheduled, reference): the same world on two frozen clocks at the same time."""
    fast = Lab(load_topology(data), clock=Clock(0, start=START))
    ref = Lab(load_topology(data), clock=Clock(0, start=START))
    ref.world.advance = lambda: full_walk(ref.world)  # type: ignore[method-assign]
    return fast, ref


def observed(lab: Lab) -> list[Any]:
    """Everything a client could see of the world's VMs and relationships."""
    world = lab.world
    out: list[Any] = []
    for vm in world.all_vms():
        row: list[Any] = [vm.host, vm.name, vm.state.name, vm.mode.name]
        row += [vm.replication_state.name, world.health(vm).name, world.guest_ips(vm)]
        rep = vm.replication
        if rep is not None:
            row += [
                rep.primary_host,
                rep.replica_host,
                rep.primary_state.name,
                rep.replica_state.name,
                rep.frequency,
                rep.recovery_history,
                rep.count,
                rep.missed,
                rep.missed_streak,
                rep.last_replication,
                rep.last_app_consistent,
                rep.anchor,
                rep.initial_start_at,
                rep.initial_done_at,
                rep.offline_export,
                rep.broken,
                [(str(p.id), p.time, p.kind.name, p.latest) for p in world.recovery_points(vm)],
            ]
        out.append(row)
    return out


def outcome(lab: Lab, host: str, cmdlet: str, **params: Any) -> Any:
    """A cmdlet's errors (or terminating error) and output names, to compare the two labs."""
    try:
        result = call(lab, host, cmdlet, **params)
    except CmdletError as exc:
        return ("terminating", exc.info.fully_qualified_error_id)
    except TransportFault as exc:  # the host is down
        return ("transport", str(exc))
    names = [getattr(o, "properties", {}).get("Name") for o in result.output]
    return [e.fully_qualified_error_id for e in result.errors], names


def random_step(rng: random.Random, names: list[str], world: HyperVWorld) -> tuple[str, Any]:
    """One operation: ("clock", seconds), ("admin", (method, path, body)) or a cmdlet, mostly
    on a host that has the VM (as ``world`` has it: both labs are equal by then)."""
    kind = rng.random()
    if kind < 0.25:
        seconds = rng.choice(
            [
                rng.uniform(0, 40),
                rng.uniform(0, 400),
                float(rng.choice([30, 90, 300, 900])),
                rng.uniform(3600, 30 * 3600),
                0.0,
            ]
        )
        return "clock", seconds
    if kind < 0.32:
        host = rng.choice(HOSTS)
        body = None
        path = f"/hosts/{host}/{rng.choice(['down', 'up', 'up', 'up'])}"
        if rng.random() < 0.4:
            health = rng.choice(["Critical", "Warning", "Normal", "Normal"])
            path, body = f"/vms/{rng.choice(names)}/health", {"health": health}
        return "admin", ("POST", path, body)
    name = rng.choice(names)
    holders = [h for h in HOSTS if world.find(h, name) is not None]
    host = rng.choice(holders if holders and rng.random() < 0.85 else HOSTS)
    cmdlets: list[tuple[str, dict[str, Any]]] = [
        ("Get-VM", {"Name": name}),
        ("Get-VMReplication", {}),
        ("Measure-VMReplication", {"VMName": name}),
        ("Get-VMSnapshot", {"VMName": name, "SnapshotType": "Replica"}),
        ("Stop-VM", {"Name": name}),
        ("Start-VM", {"Name": name}),
        ("Suspend-VMReplication", {"VMName": name}),
        ("Resume-VMReplication", {"VMName": name}),
        (
            "Set-VMReplication",
            {"VMName": name, "ReplicationFrequencySec": rng.choice([30, 300, 900])},
        ),
        ("Set-VMReplication", {"VMName": name, "RecoveryHistory": rng.choice([0, 3, 8])}),
        ("Start-VMFailover", {"VMName": name, "Prepare": True}),
        ("Start-VMFailover", {"VMName": name}),
        ("Start-VMFailover", {"VMName": name, "AsTest": True}),
        ("Stop-VMFailover", {"VMName": name}),
        ("Complete-VMFailover", {"VMName": name}),
        ("Set-VMReplication", {"VMName": name, "Reverse": True}),
        ("Set-VMReplication", {"VMName": name, "AsReplica": True}),
        (
            "Set-VMReplication",
            {"VMName": name, "Reverse": True, "ReplicaServerName": rng.choice(HOSTS)},
        ),
        ("Remove-VMReplication", {"VMName": name}),
        (
            "Enable-VMReplication",
            {
                "VMName": name,
                "ReplicaServerName": rng.choice(HOSTS),
                "ReplicaServerPort": 8083,
                "AuthenticationType": "Kerberos",
                "ReplicationFrequencySec": rng.choice([30, 300, 900]),
            },
        ),
        ("Start-VMInitialReplication", {"VMName": name}),
        ("Start-VMInitialReplication", {"VMName": name, "DestinationPath": "D:\\export"}),
        ("Start-VMInitialReplication", {"VMName": name, "InitialReplicationStartTime": "later"}),
        ("Import-VMInitialReplication", {"VMName": name, "Path": "D:\\export"}),
    ]
    # The initial replication ones (the last five) twice as often: fewer VMs can take them.
    return "cmdlet", (host, *rng.choice(cmdlets + cmdlets[-5:]))


def apply(lab: Lab, step: tuple[str, Any], later: float) -> Any:
    kind, arg = step
    if kind == "clock":
        return lab.clock.advance(arg)
    if kind == "admin":
        return lab.admin(*arg)
    host, cmdlet, params = arg
    if params.get("InitialReplicationStartTime") == "later":
        params = dict(
            params, InitialReplicationStartTime=lab.clock.datetime(lab.clock.now() + later)
        )
    if cmdlet in ("Stop-VM", "Start-VMFailover", "Stop-VMFailover", "Complete-VMFailover"):
        params = dict(params, Confirm=False) if cmdlet != "Stop-VM" else dict(params, Force=True)
    return outcome(lab, host, cmdlet, **params)


@pytest.mark.parametrize(("seed", "bulk"), [(1, 64), (2, 64), (3, 2), (4, 2)])
def test_scheduled_advance_matches_the_full_walk(
    seed: int, bulk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A low bulk threshold sends this small world through the split/rebuild paths too.
    monkeypatch.setattr(state, "_BULK", bulk)
    data = topology()
    fast, ref = twin_labs(data)
    names = [v["name"] for v in data["vms"]]
    assert observed(fast) == observed(ref)
    rng = random.Random(seed)
    for i in range(500):
        step = random_step(rng, names, fast.world)
        later = rng.uniform(1, 2 * 3600)
        assert apply(fast, step, later) == apply(ref, step, later), (i, step)
        if rng.random() < 0.5:
            fast.tick()
            ref.tick()
            assert observed(fast) == observed(ref), (i, step)
    fast.clock.advance(2 * 24 * 3600)
    ref.clock.advance(2 * 24 * 3600)
    fast.tick()
    ref.tick()
    assert observed(fast) == observed(ref)


def test_cycles_on_the_exact_boundary_and_after_a_long_jump_match() -> None:
    fast, ref = twin_labs(topology(6))
    for seconds in (299.0, 1.0, 0.5, 299.5, 30.0, 7 * 3600 + 0.25, 300.0, 12 * 3600):
        for lab in (fast, ref):
            lab.clock.advance(seconds)
            lab.tick()
        assert observed(fast) == observed(ref), seconds


# gen-01 (hv-sto-2 -> hv-got-2) and gen-04 (hv-sto-1 -> hv-got-1) are ready for initial
# replication, both every 300 s; initial replication takes 90 s; gen-04's is set to start 45 s
# in ("later"). Times are from the start.
SCRIPT: list[tuple[str, Any]] = [
    ("cmdlet", ("hv-sto-2", "Start-VMInitialReplication", {"VMName": "gen-01"})),
    (
        "cmdlet",
        (
            "hv-sto-1",
            "Start-VMInitialReplication",
            {"VMName": "gen-04", "InitialReplicationStartTime": "later"},
        ),
    ),
    ("clock", 44.5),
    ("clock", 0.5),  # 45: gen-04 starts
    ("clock", 44.0),
    ("clock", 1.0),  # 90: gen-01 done
    ("clock", 44.0),
    ("clock", 1.0),  # 135: gen-04 done
    ("clock", 254.9),
    ("clock", 0.1),  # 390: gen-01's first cycle
    ("clock", 45.0),  # 435: gen-04's
    # A change of state alone (no new anchor) reschedules: prepare, let a cycle pass, cancel.
    ("cmdlet", ("hv-sto-1", "Stop-VM", {"Name": "gen-02"})),
    ("cmdlet", ("hv-sto-1", "Start-VMFailover", {"VMName": "gen-02", "Prepare": True})),
    ("clock", 1000.0),
    ("cmdlet", ("hv-sto-1", "Stop-VMFailover", {"VMName": "gen-02"})),
    ("clock", 1000.0),
    # Suspended through a host outage, resumed, then a health override.
    ("cmdlet", ("hv-sto-1", "Suspend-VMReplication", {"VMName": "sql-01"})),
    ("admin", ("POST", "/hosts/hv-got-1/down", None)),
    ("clock", 700.0),
    ("cmdlet", ("hv-sto-1", "Resume-VMReplication", {"VMName": "sql-01"})),
    ("clock", 650.0),
    ("admin", ("POST", "/hosts/hv-got-1/up", None)),
    ("admin", ("POST", "/vms/app-01/health", {"health": "Critical"})),
    ("clock", 3 * 3600.0),
    ("admin", ("POST", "/vms/app-01/health", {"health": "Normal"})),
    ("clock", 299.0),
    ("clock", 1.0),
]


def test_scripted_transitions_at_their_exact_times_match() -> None:
    fast, ref = twin_labs(topology(6))
    for i, step in enumerate(SCRIPT):
        result = apply(fast, step, 45.0)
        assert result == apply(ref, step, 45.0), (i, step)
        assert step[0] != "cmdlet" or result[0] == [], (i, step, result)
        fast.tick()
        ref.tick()
        assert observed(fast) == observed(ref), (i, step)
    states = {(vm.name, vm.host): vm.replication_state.name for vm in fast.world.all_vms()}
    assert states["gen-01", "hv-sto-2"] == states["gen-04", "hv-sto-1"] == "Replicating"
    assert states["gen-02", "hv-sto-1"] == states["sql-01", "hv-sto-1"] == "Replicating"


def test_superseded_heap_entries_are_dropped() -> None:
    fast, ref = twin_labs(topology(6))
    # On a frozen clock, each suspension leaves a superseded entry behind (due 300 s on).
    for i in range(3000):
        for lab in (fast, ref):
            cmdlet = "Resume-VMReplication" if i % 2 else "Suspend-VMReplication"
            assert call(lab, "hv-sto-1", cmdlet, VMName="sql-01").errors == []
    # They are dropped before they pile up (1,500 without it).
    assert len(fast.world._heap) < 1024 + 40
    for lab in (fast, ref):
        lab.clock.advance(900)
        lab.tick()
    assert observed(fast) == observed(ref)


def counting(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every relationship HyperVWorld._advance_one is called with, from now on."""
    calls: list[Any] = []
    original = HyperVWorld._advance_one

    def spy(self: HyperVWorld, rep: Any, now: float) -> None:
        calls.append(rep)
        original(self, rep, now)

    monkeypatch.setattr(HyperVWorld, "_advance_one", spy)
    return calls


def big_world(n: int) -> dict[str, Any]:
    data = example_dict()
    data["vms"] = [
        {
            "name": f"vm-{i:05d}",
            "primary": f"hv-sto-{i % 2 + 1}",
            "replica": f"hv-got-{i % 2 + 1}",
            "networks": ["corp-sto"],
            "ips": {"corp-sto": f"10.10.{i // 250 + 1}.{i % 250 + 1}"},
            "replication": {"state": "replicating", "frequency": 300},
        }
        for i in range(n)
    ]
    return data


def test_advance_with_nothing_due_advances_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    lab = Lab(load_topology(big_world(2000)), clock=Clock(0, start=START))
    calls = counting(monkeypatch)
    lab.tick()
    assert calls == []
    # Reads, changes and time short of the next cycle: still nothing to advance.
    call(lab, "hv-sto-1", "Get-VM", Name="vm-00000")
    call(lab, "hv-sto-2", "Suspend-VMReplication", VMName="vm-00001")
    lab.clock.advance(299)
    call(lab, "hv-sto-2", "Resume-VMReplication", VMName="vm-00001")
    lab.tick()
    assert calls == []
    # The cycle comes due: each relationship once, however many reads follow.
    lab.clock.advance(1)
    lab.tick()
    call(lab, "hv-got-1", "Get-VM", Name="vm-00000")
    assert len(calls) == 1999 and len({id(r) for r in calls}) == 1999
    assert all(r.count == 2 for r in calls)
    calls.clear()
    lab.tick()
    assert calls == []
    # vm-00001 was resumed 299 s in: its own cycle is due 299 s later.
    lab.clock.advance(299)
    lab.tick()
    assert [r.vm_name for r in calls] == ["vm-00001"]


def test_a_relationship_no_vm_holds_is_not_advanced(monkeypatch: pytest.MonkeyPatch) -> None:
    lab = Lab(load_topology(big_world(3)), clock=Clock(0, start=START))
    gone = lab.world.find("hv-sto-2", "vm-00001")
    assert gone is not None and gone.replication is not None
    rep = gone.replication
    for host in ("hv-sto-2", "hv-got-2"):
        assert call(lab, host, "Remove-VMReplication", VMName="vm-00001").errors == []
    calls = counting(monkeypatch)
    lab.clock.advance(3600)
    lab.tick()
    assert rep not in calls and len(calls) == 2
    # Held again by a record (a test reattaching it): advanced again from then on.
    gone.replication = rep
    lab.clock.advance(300)
    lab.tick()
    assert sum(r is rep for r in calls) == 1
    # A record that leaves its host stops holding it.
    lab.world.remove(gone)
    lab.clock.advance(300)
    lab.tick()
    assert sum(r is rep for r in calls) == 1
