"""The world's indexed lookups answer what a search over every record answers."""

from __future__ import annotations

import dataclasses
import uuid

from lab.hyperv.enums import AuthenticationType
from lab.hyperv.replication import listener_ports
from lab.hyperv.state import VM, HyperVWorld
from lab.objects import Command
from lab.world import Lab
from tests.lab.scenario import scenario_topology


def _scan(world: HyperVWorld, host: str, vm_id: str) -> VM | None:
    for vm in world.vms.get(host, {}).values():
        if str(vm.id).lower() == vm_id.lower():
            return vm
    return None


def _check_ids(world: HyperVWorld, extra: list[str]) -> int:
    checked = 0
    for host, slot in world.vms.items():
        for wanted in [*(str(vm.id) for vm in slot.values()), *extra]:
            for form in (wanted, wanted.upper()):
                assert world.find_by_id(host, form) is _scan(world, host, form)
                checked += 1
    return checked


def test_find_by_id_follows_test_failovers_and_records_sharing_an_id() -> None:
    lab = Lab.from_topology(scenario_topology(), time_scale=0)
    world = lab.world
    replica = next(vm for vm in world.all_vms() if vm.mode.label == "Replica")
    host, name = replica.host, replica.name
    lab.invoke(host, [Command("Start-VMFailover", [("VMName", name), ("AsTest", True)])])
    test = world.find(host, f"{name} - Test")
    assert test is not None and world.find_by_id(host, str(test.id)) is test
    assert _check_ids(world, [str(uuid.UUID(int=1))]) > 10
    lab.invoke(host, [Command("Stop-VMFailover", [("VMName", name)])])
    assert world.find(host, f"{name} - Test") is None
    assert world.find_by_id(host, str(test.id)) is None
    # two records of one ID on a host: the first in the host's order, as a search finds
    twin = dataclasses.replace(replica, name="twin-of-replica", replication=None)
    world.add(twin)
    assert world.find_by_id(host, str(replica.id)) is replica
    world.remove(replica)
    assert world.find_by_id(host, str(replica.id)) is twin
    world.add(replica)
    assert world.find_by_id(host, str(replica.id)) is _scan(world, host, str(replica.id))
    _check_ids(world, [str(test.id)])


def test_disks_and_listener_ports_read_from_the_topology_as_before() -> None:
    lab = Lab.from_topology(scenario_topology(), time_scale=0)
    world = lab.world
    for vm in world.all_vms():
        if vm.replication is not None:
            spec = next(s for s in world.topology.vms if s.name == vm.replication.vm_name)
            assert world.disk_bytes(vm.replication) == int(spec.disk_gb * 1024**3)

    class Ctx:  # listener_ports reads only the world
        pass

    ctx = Ctx()
    ctx.world = world  # type: ignore[attr-defined]
    for host in world.hosts:
        for auth in AuthenticationType:
            expected = {8083 if auth is AuthenticationType.Kerberos else 8084}
            for spec in world.topology.vms:
                r = spec.replication
                if r and r.auth == auth.name.lower() and host in (spec.primary, spec.replica):
                    expected.add(r.port)
            assert listener_ports(ctx, host, auth) == expected  # type: ignore[arg-type]
