"""The simulated world: VMs on Hyper-V hosts, their replication relationships, DNS zones.

Both ends of a replication relationship share one :class:`Replication` object, so a
transition changes the primary and the replica together (they live on different hosts, as in
real Hyper-V Replica). Time-driven progress (initial replication finishing, replication
cycles, hourly recovery points, guests booting) is computed from the lab clock by
:meth:`HyperVWorld.advance`, which every read calls first and the background ticker calls
periodically; that keeps a frozen-clock lab deterministic.

:meth:`HyperVWorld.advance` costs what is due, not what exists: the world keeps each
relationship's next due lab time in a heap. A relationship is rescheduled whenever one of the
fields its due time depends on is assigned (``Replication.__setattr__``), and it is advanced
only while some VM record in the world holds it (``VM.__setattr__`` and
:meth:`HyperVWorld.add`/:meth:`HyperVWorld.remove` count the holders), exactly the
relationships a walk over every VM record would find.

All mutation happens under ``HyperVWorld.lock``; nothing in here blocks or sleeps.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import math
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar

from lab.clock import Clock
from lab.hyperv.enums import (
    AuthenticationType,
    ReplicationHealth,
    ReplicationMode,
    ReplicationState,
    SnapshotType,
    VMState,
)
from lab.topology import ReplicaServerSpec, Topology, TopologyHost, VMSpec

HOUR = 3600.0
# Replication keeps working through these; anything else stops the cycles.
_CYCLING = ReplicationState.Replicating

# The fields a relationship's next due time depends on (see HyperVWorld._due), plus primary_host
# (an unlinked relationship is never advanced): assigning one reschedules the relationship.
_SCHEDULE_FIELDS = frozenset(
    {
        "primary_host",
        "primary_state",
        "frequency",
        "anchor",
        "initial_start_at",
        "initial_done_at",
        "offline_export",
        "resync_done_at",
    }
)
GIGABYTE = 1024**3
# A resynchronisation compares both ends and sends what differs: the lab charges a tenth of
# the disks at the replication bandwidth.
RESYNC_SHARE = 0.1
_NEVER = math.inf
# Past this many relationships due (or rescheduled) at once, the heap is split (or rebuilt) in
# one pass instead of popped (or pushed) entry by entry.
_BULK = 64
# Sets an attribute past the class's __setattr__ hook.
_write = object.__setattr__

_NAMESPACE = uuid.UUID("6f0c6a52-3c55-4f5e-9d7e-6a2b8a1c1f00")


def stable_id(*parts: str) -> uuid.UUID:
    """A deterministic UUID, so a topology always yields the same VM and adapter IDs."""
    return uuid.uuid5(_NAMESPACE, "/".join(parts))


@dataclass
class Adapter:
    """A VM network adapter; ``switch`` None means not connected."""

    id: uuid.UUID
    mac: str
    switch: str | None
    name: str = "Network Adapter"


@dataclass
class RecoveryPoint:
    """A replica recovery point (``Get-VMSnapshot -SnapshotType Replica``)."""

    id: uuid.UUID
    time: float
    kind: SnapshotType
    latest: bool = False


@dataclass
class Authorization:
    """A Replica server's authorization entry (``Get-VMReplicationAuthorizationEntry``)."""

    primary_server: str
    storage_location: str
    trust_group: str = "DEFAULT"


@dataclass
class Replication:
    """One replication relationship, shared by its primary and replica VM records.

    ``primary_host`` is empty for a VM made ready by ``Set-VMReplication -AsReplica`` whose
    new primary has not linked to it yet.
    """

    vm_name: str
    primary_host: str
    replica_host: str
    primary_state: ReplicationState
    replica_state: ReplicationState
    frequency: int = 300
    recovery_history: int = 0
    app_consistent_hours: int = 0
    auth: AuthenticationType = AuthenticationType.Kerberos
    port: int = 8083
    compression: bool = True
    last_replication: float | None = None
    last_app_consistent: float | None = None
    count: int = 0
    missed: int = 0
    missed_streak: int = 0
    anchor: float = 0.0
    hourly: list[RecoveryPoint] = field(default_factory=list)
    initial_start_at: float | None = None
    initial_done_at: float | None = None
    offline_export: bool = False
    # When the running initial replication started (its progress), where an offline one was
    # exported, where the Replica server keeps the replica's files.
    initial_started_at: float | None = None
    export_path: str | None = None
    storage_location: str = ""
    resync_done_at: float | None = None
    # Set when the other end failed over for good or dropped the relationship: cycles stop.
    broken: bool = False

    # Its place in the schedule of the HyperVWorld whose VM records hold it (not a field: equality,
    # repr and asdict ignore it); None until a VM record in a world holds it.
    _schedule: ClassVar[Schedule | None] = None

    def __setattr__(self, name: str, value: Any) -> None:
        _write(self, name, value)
        if name in _SCHEDULE_FIELDS:
            schedule = self._schedule
            if schedule is not None:
                schedule.mark(self)

    def state_of(self, host: str) -> ReplicationState:
        """The state as seen from the end on ``host``."""
        return self.primary_state if host == self.primary_host else self.replica_state

    def set_state(self, host: str, state: ReplicationState) -> None:
        """Set the state of the end on ``host``."""
        if host == self.primary_host:
            self.primary_state = state
        else:
            self.replica_state = state


class Schedule:
    """A relationship's bookkeeping in the world that advances it."""

    __slots__ = ("dirty", "holders", "seq", "world")

    def __init__(self, world: HyperVWorld) -> None:
        self.world = world
        # How many VM records on the world's hosts hold the relationship (0: not advanced).
        self.holders = 0
        # The sequence number of its valid heap entry (-1: none).
        self.seq = -1
        # Changed since it was last scheduled: waiting in HyperVWorld._dirty to be rescheduled.
        self.dirty = False

    def mark(self, rep: Replication) -> None:
        """``rep`` (whose schedule this is) changed: reschedule it at the next advance."""
        if not self.dirty:
            self.dirty = True
            self.world._dirty.append(rep)


@dataclass
class VM:
    """One VM record on one Hyper-V host (a replicated VM has one on each end)."""

    name: str
    id: uuid.UUID
    host: str
    spec: VMSpec
    adapters: list[Adapter]
    state: VMState = VMState.Off
    started_at: float | None = None
    replication: Replication | None = None
    test_of: VM | None = None
    test_vm: VM | None = None
    # The recovery point a replica failed over to (None: the latest).
    failover_point: RecoveryPoint | None = None

    # The world's bookkeeping (not fields): the world whose host holds this record, and in how
    # many of its slots (a record normally sits in one).
    _world: ClassVar[HyperVWorld | None] = None
    _slots: ClassVar[int] = 0

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "replication":
            world = self._world
            if world is not None:
                old = self.__dict__.get("replication")
                _write(self, name, value)
                if old is not value:
                    world._hold(value)
                    world._release(old)
                return
        _write(self, name, value)

    @property
    def mode(self) -> ReplicationMode:
        """Primary, Replica, TestReplica or None, seen from this host."""
        if self.test_of is not None:
            return ReplicationMode.TestReplica
        rep = self.replication
        if rep is None:
            return ReplicationMode.None_
        return ReplicationMode.Primary if rep.primary_host == self.host else ReplicationMode.Replica

    @property
    def replication_state(self) -> ReplicationState:
        """This end's replication state (Disabled when not replicating)."""
        rep = self.replication
        return ReplicationState.Disabled if rep is None else rep.state_of(self.host)

    @property
    def partner_host(self) -> str | None:
        """The host of the other end, if linked."""
        rep = self.replication
        if rep is None:
            return None
        other = rep.replica_host if self.mode is ReplicationMode.Primary else rep.primary_host
        return other or None


class HyperVWorld:
    """Every host's VMs plus the overrides the fault injector and admin API set."""

    def __init__(self, topology: Topology, clock: Clock) -> None:
        self.topology = topology
        self.clock = clock
        self.lock = threading.RLock()
        self.hosts: dict[str, TopologyHost] = {h.name: h for h in topology.hosts}
        self.down: set[str] = set()
        self.vms: dict[str, dict[str, VM]] = {
            h.name: {} for h in topology.hosts if h.role == "hyperv"
        }
        self.health_override: dict[str, ReplicationHealth] = {}
        # Replica servers' authorization entries by host: which primary servers may replicate
        # to it and where their replicas are stored (New-VMReplicationAuthorizationEntry).
        self.authorizations: dict[str, list[Authorization]] = {h: [] for h in self.vms}
        self.no_ip: set[str] = set()
        # Each host's VM records by lower-case ID (find_by_id), kept by add and remove.
        self._by_id: dict[str, dict[str, list[VM]]] = {h: {} for h in self.vms}
        # The topology's VMs by name (the first of a name, as a search in file order finds).
        self._specs: dict[str, VMSpec] = {}
        # The ports the topology gives replication by (host at either end, authentication).
        self.port_overrides: dict[tuple[str, str], set[int]] = {}
        for spec in topology.vms:
            self._specs.setdefault(spec.name, spec)
            r = spec.replication
            if r is not None:
                for end in {spec.primary, spec.replica} - {None}:
                    self.port_overrides.setdefault((str(end), r.auth), set()).add(r.port)
        # DNS zones by lower-case name (lab.hyperv.dns.Zone), filled in by the lab facade.
        self.zones: dict[str, Any] = {}
        # The advance schedule: (due lab time, sequence, relationship), one valid entry per
        # scheduled relationship (Schedule.seq); superseded entries are skipped when popped.
        self._heap: list[tuple[float, int, Replication]] = []
        self._sequence = itertools.count()
        self._stale = 0
        # Relationships to reschedule at the next advance (a field of theirs changed).
        self._dirty: list[Replication] = []
        self._build()

    # ----------------------------------------------------------------- construction
    def _build(self) -> None:
        now = self.clock.now()
        for spec in self.topology.vms:
            vm_id = stable_id("vm", spec.name)
            primary = VM(spec.name, vm_id, spec.primary, spec, self._adapters(spec, spec.primary))
            self.add(primary)
            if spec.running:
                primary.state = VMState.Running
                # Already booted: the world starts in steady state.
                primary.started_at = now - spec.boot_seconds
            if spec.replica is None or spec.replication is None:
                continue
            r = spec.replication
            # The replica's adapters start disconnected: its site has other switches.
            adapters = [
                Adapter(a.id, a.mac, None, a.name) for a in self._adapters(spec, spec.replica)
            ]
            replica = VM(spec.name, vm_id, spec.replica, spec, adapters)
            self.add(replica)
            ready = r.state == "ready"
            rep = Replication(
                vm_name=spec.name,
                primary_host=spec.primary,
                replica_host=spec.replica,
                primary_state=(
                    ReplicationState.ReadyForInitialReplication
                    if ready
                    else ReplicationState.Replicating
                ),
                replica_state=(
                    ReplicationState.WaitingForInitialReplication
                    if ready
                    else ReplicationState.Replicating
                ),
                frequency=r.frequency,
                recovery_history=r.recovery_history,
                app_consistent_hours=r.app_consistent_hours,
                auth=(
                    AuthenticationType.Certificate
                    if r.auth == "certificate"
                    else AuthenticationType.Kerberos
                ),
                port=r.port,
                compression=r.compression,
                anchor=now,
                storage_location=self.replica_storage(spec.replica, spec.primary),
            )
            if not ready:
                # "At least one completed replication" at start, as the example world says.
                rep.last_replication = now
                rep.count = 1
                self._keep_points(rep, now, now)
            primary.replication = rep
            replica.replication = rep

    def _adapters(self, spec: VMSpec, host: str) -> list[Adapter]:
        adapters = []
        for i, net in enumerate(spec.networks or ("",)):
            aid = stable_id("adapter", spec.name, host, str(i))
            mac = "00155D" + aid.hex[:6].upper()
            adapters.append(Adapter(aid, mac, net or None))
        return adapters

    def add(self, vm: VM) -> None:
        """Register ``vm`` on its host."""
        slot = self.vms[vm.host]
        key = vm.name.lower()
        old = slot.get(key)
        slot[key] = vm
        if old is not vm:
            self._enlist(vm)
            self._by_id[vm.host].setdefault(str(vm.id).lower(), []).append(vm)
            if old is not None:
                self._dismiss(old)
                self._unindex(old)

    def remove(self, vm: VM) -> None:
        """Delete ``vm`` from its host."""
        old = self.vms[vm.host].pop(vm.name.lower(), None)
        if old is not None:
            self._dismiss(old)
            self._unindex(old)

    def _unindex(self, vm: VM) -> None:
        """``vm`` left its host's slot: forget it in the ID index."""
        index = self._by_id[vm.host]
        key = str(vm.id).lower()
        same = [other for other in index.get(key, ()) if other is not vm]
        if same:
            index[key] = same
        else:
            index.pop(key, None)

    def _enlist(self, vm: VM) -> None:
        """``vm`` took a slot on a host: its relationship (now or later) is advanced."""
        if vm._slots == 0:
            _write(vm, "_world", self)
            self._hold(vm.replication)
        _write(vm, "_slots", vm._slots + 1)

    def _dismiss(self, vm: VM) -> None:
        """``vm`` lost a slot; out of every slot, it no longer keeps a relationship going."""
        slots = vm._slots - 1
        _write(vm, "_slots", slots)
        if slots == 0:
            _write(vm, "_world", None)
            self._release(vm.replication)

    # ----------------------------------------------------------------- lookups
    def is_hyperv(self, host: str) -> bool:
        """True for a Hyper-V host of the topology."""
        return host in self.vms

    def find(self, host: str, name: str) -> VM | None:
        """The VM called ``name`` on ``host`` (names compare case-insensitively)."""
        return self.vms.get(host, {}).get(name.lower())

    def find_by_id(self, host: str, vm_id: str) -> VM | None:
        """The VM with Hyper-V ID ``vm_id`` on ``host``."""
        found = self._by_id.get(host, {}).get(vm_id.lower())
        if not found:
            return None
        if len(found) == 1:
            return found[0]
        for vm in self.vms.get(host, {}).values():  # several of one ID: the first in order
            if str(vm.id).lower() == vm_id.lower():
                return vm
        return None

    def all_vms(self) -> list[VM]:
        """Every VM record of every Hyper-V host, host by host."""
        return [vm for host in self.vms.values() for vm in host.values()]

    def switches(self, host: str) -> list[str]:
        """The virtual switches of ``host``: the networks of its site."""
        site = self.hosts[host].site
        return [n.name for n in self.topology.networks if n.site == site]

    def replica_server(self, host: str) -> ReplicaServerSpec:
        """``host``'s Replica server configuration."""
        return self.hosts[host].replica_server or ReplicaServerSpec()

    def replica_storage(self, host: str, primary: str) -> str:
        """Where the Replica server ``host`` stores replicas from ``primary``: its
        authorization entry for that server, else its default storage location."""
        for entry in self.authorizations.get(host, []):
            if entry.primary_server.lower() in (primary.lower(), "*"):
                return entry.storage_location
        return self.replica_server(host).storage

    # ----------------------------------------------------------------- derived facts
    def guest_ips(self, vm: VM, adapter: Adapter | None = None) -> list[str]:
        """The IPs the guest reports (empty until it has booted on a connected adapter)."""
        if vm.state is not VMState.Running or vm.started_at is None:
            return []
        base = vm.test_of or vm
        if base.name.lower() in self.no_ip or vm.name.lower() in self.no_ip:
            return []
        if self.clock.now() < vm.started_at + vm.spec.boot_seconds:
            return []
        ips = []
        for a in [adapter] if adapter else vm.adapters:
            if a is None or a.switch is None:
                continue
            ip = self.ip_for(vm.spec, a.switch)
            if ip:
                # Windows guests also report an IPv6 link-local address, after the IPv4 one.
                ips.extend([ip, _link_local(a.mac)])
        return ips

    def ip_for(self, spec: VMSpec, network: str) -> str | None:
        """The guest's IPv4 address on ``network``: as listed, else derived from the subnet.

        A derived address keeps the subnet's prefix and the last two octets of the VM's
        first listed address (sql-01 10.10.1.11 on test-got 10.99.0.0/16 -> 10.99.1.11).
        """
        if network in spec.ips:
            return spec.ips[network]
        net = self.topology.network(network)
        if net is None or net.subnet is None or not spec.ips:
            return None
        first = ipaddress.IPv4Address(next(iter(spec.ips.values())))
        host_bits = 32 - net.subnet.prefixlen
        mask = (1 << host_bits) - 1
        return str(ipaddress.IPv4Address(int(net.subnet.network_address) | (int(first) & mask)))

    def health(self, vm: VM) -> ReplicationHealth:
        """Replication health of one end, admin overrides first."""
        rep = vm.replication
        if rep is None or vm.test_of is not None:
            return ReplicationHealth.NotApplicable
        override = self.health_override.get(vm.name.lower())
        if override is not None:
            return override
        state = rep.state_of(vm.host)
        if state in (
            ReplicationState.Disabled,
            ReplicationState.ReadyForInitialReplication,
            ReplicationState.WaitingForInitialReplication,
        ):
            return ReplicationHealth.NotApplicable
        if state is ReplicationState.FailedOver:
            return ReplicationHealth.Warning
        if rep.broken or state in (
            ReplicationState.WaitingForStartResynchronize,
            ReplicationState.Error,
        ):
            return ReplicationHealth.Critical
        if state in (ReplicationState.Resynchronizing, ReplicationState.Suspended):
            return ReplicationHealth.Warning
        if rep.missed_streak > 0:
            return ReplicationHealth.Warning
        return ReplicationHealth.Normal

    # ----------------------------------------------------------------- time
    def advance(self) -> None:
        """Bring every relationship up to lab time now (call with the lock held or not).

        Only the relationships due by now are advanced: the same ones, with the same effect,
        as advancing every relationship some VM record holds (``_advance_one`` does nothing to
        a relationship before its due time). Each is advanced at most once per call.
        """
        with self.lock:
            now = self.clock.now()
            self._reschedule()
            heap = self._heap
            entries: list[tuple[float, int, Replication]] = []
            while heap and heap[0][0] <= now:
                if len(entries) == _BULK:
                    # Many due at once (say a whole world's cycle): split the heap in one pass.
                    entries += [e for e in heap if e[0] <= now]
                    self._heap = heap = [e for e in heap if e[0] > now]
                    heapq.heapify(heap)
                    break
                entries.append(heapq.heappop(heap))
            due: list[Replication] = []
            for _, seq, rep in entries:
                schedule = rep._schedule
                assert schedule is not None
                if seq != schedule.seq:
                    self._stale -= 1
                    continue
                schedule.seq = -1
                due.append(rep)
            for rep in due:
                schedule = rep._schedule
                assert schedule is not None
                if schedule.holders > 0 and rep.primary_host:
                    self._advance_one(rep, now)
                schedule.mark(rep)  # its entry is gone: schedule it again, changed or not
            self._reschedule()

    def _hold(self, rep: Replication | None) -> None:
        """One more VM record of this world holds ``rep``."""
        if rep is None:
            return
        schedule = rep._schedule
        if schedule is None or schedule.world is not self:
            schedule = Schedule(self)
            _write(rep, "_schedule", schedule)
        schedule.holders += 1
        if schedule.holders == 1:
            schedule.mark(rep)

    def _release(self, rep: Replication | None) -> None:
        """One VM record fewer holds ``rep``; at none, its heap entry is skipped when due."""
        if rep is not None and rep._schedule is not None and rep._schedule.world is self:
            rep._schedule.holders -= 1

    def _reschedule(self) -> None:
        """Give every changed relationship a heap entry at its new due time (or none)."""
        dirty, self._dirty = self._dirty, []
        heap = self._heap
        sequence = self._sequence
        added: list[tuple[float, int, Replication]] = []
        for rep in dirty:
            schedule = rep._schedule
            assert schedule is not None
            schedule.dirty = False
            due = _due(rep) if schedule.holders > 0 and rep.primary_host else _NEVER
            if schedule.seq != -1:
                self._stale += 1
            if due == _NEVER:
                schedule.seq = -1
            else:
                schedule.seq = seq = next(sequence)
                added.append((due, seq, rep))
        if len(added) > _BULK and len(added) * 4 > len(heap):
            heap += added
            heapq.heapify(heap)
        else:
            for entry in added:
                heapq.heappush(heap, entry)
        if self._stale > 1024 and self._stale * 2 > len(heap):
            # Mostly superseded entries (e.g. many changes on a frozen clock): drop them.
            self._heap = [e for e in heap if e[2]._schedule and e[1] == e[2]._schedule.seq]
            heapq.heapify(self._heap)
            self._stale = 0

    def _advance_one(self, rep: Replication, now: float) -> None:
        """Bring ``rep`` up to ``now``; does nothing before its due time (see ``_due``).

        The cycle bookkeeping is written past ``Replication.__setattr__`` (``_write``: the hook
        costs as much as the rest when a whole world's cycle is due): :meth:`advance`
        reschedules every relationship it passes here anyway.
        """
        if (
            rep.primary_state is ReplicationState.ReadyForInitialReplication
            and rep.initial_start_at is not None
            and now >= rep.initial_start_at
        ):
            rep.primary_state = ReplicationState.InitialReplicationInProgress
            rep.initial_started_at = rep.initial_start_at
            rep.initial_done_at = rep.initial_start_at + self.initial_seconds(rep)
            rep.initial_start_at = None
        if (
            rep.primary_state is ReplicationState.InitialReplicationInProgress
            and not rep.offline_export
            and rep.initial_done_at is not None
            and now >= rep.initial_done_at
        ):
            self.finish_initial(rep, rep.initial_done_at)
        if (
            rep.primary_state is ReplicationState.Resynchronizing
            and rep.resync_done_at is not None
            and now >= rep.resync_done_at
        ):
            done = rep.resync_done_at
            rep.primary_state = rep.replica_state = ReplicationState.Replicating
            rep.resync_done_at = None
            rep.last_replication = done
            rep.missed_streak = 0
            rep.anchor = done
        if rep.primary_state is not _CYCLING or rep.frequency <= 0:
            return
        cycles = int((now - rep.anchor) // rep.frequency)
        if cycles <= 0:
            return
        last = rep.anchor + cycles * rep.frequency
        _write(rep, "anchor", last)
        override = self.health_override.get(rep.vm_name.lower())
        reachable = rep.primary_host not in self.down and rep.replica_host not in self.down
        if (
            rep.broken
            or not reachable
            or rep.replica_state is not _CYCLING
            or override is ReplicationHealth.Critical
        ):
            _write(rep, "missed", rep.missed + cycles)
            _write(rep, "missed_streak", rep.missed_streak + cycles)
            since = rep.last_replication if rep.last_replication is not None else last
            limit = self.topology.resync_after_seconds
            if limit > 0 and not rep.broken and last - since >= limit:
                # The change log outgrew what Hyper-V keeps: only a resynchronisation
                # (Resume-VMReplication -Resynchronize) brings the ends together again.
                rep.primary_state = ReplicationState.WaitingForStartResynchronize
            return
        previous = rep.last_replication if rep.last_replication is not None else last
        _write(rep, "last_replication", last)
        _write(rep, "count", rep.count + cycles)
        _write(rep, "missed_streak", 0)
        self._keep_points(rep, previous, last)

    def disk_bytes(self, rep: Replication) -> int:
        """The size of the replicated VM's disks, in bytes."""
        spec = self._specs.get(rep.vm_name)
        return int((spec.disk_gb if spec else 40.0) * GIGABYTE)

    def transfer_seconds(self, size: float) -> float:
        """Lab seconds to send ``size`` bytes at the topology's replication bandwidth."""
        return size * 8 / (self.topology.replication_bandwidth_mbps * 1_000_000)

    def initial_seconds(self, rep: Replication) -> float:
        """Lab seconds an initial replication of ``rep`` takes: its disks at the bandwidth,
        or the topology's fixed ``initial_replication_seconds`` without one."""
        if self.topology.replication_bandwidth_mbps > 0:
            return self.transfer_seconds(self.disk_bytes(rep))
        return self.topology.initial_replication_seconds

    def resync_seconds(self, rep: Replication) -> float:
        """Lab seconds a resynchronisation of ``rep`` takes."""
        if self.topology.replication_bandwidth_mbps > 0:
            return self.transfer_seconds(self.disk_bytes(rep) * RESYNC_SHARE)
        return self.topology.initial_replication_seconds * RESYNC_SHARE

    def pending_bytes(self, rep: Replication) -> int:
        """Bytes an initial replication (or resynchronisation) in progress has yet to send."""
        now = self.clock.now()
        state = rep.primary_state
        if state is ReplicationState.ReadyForInitialReplication:
            return self.disk_bytes(rep) if rep.initial_start_at is not None else 0
        if state is ReplicationState.InitialReplicationInProgress:
            total = self.disk_bytes(rep)
            if rep.offline_export or rep.initial_done_at is None:
                return total if rep.offline_export and rep.export_path is None else 0
            start = rep.initial_started_at if rep.initial_started_at is not None else now
            span = max(rep.initial_done_at - start, 1e-9)
            left = min(1.0, max(0.0, (rep.initial_done_at - now) / span))
            return int(total * left)
        if state is ReplicationState.Resynchronizing and rep.resync_done_at is not None:
            total = int(self.disk_bytes(rep) * RESYNC_SHARE)
            seconds = max(self.resync_seconds(rep), 1e-9)
            return int(total * min(1.0, max(0.0, (rep.resync_done_at - now) / seconds)))
        return 0

    def finish_initial(self, rep: Replication, at: float) -> None:
        """Initial replication done at ``at``: both ends Replicating, first point kept."""
        rep.primary_state = ReplicationState.Replicating
        rep.replica_state = ReplicationState.Replicating
        rep.initial_done_at = None
        rep.initial_started_at = None
        rep.offline_export = False
        rep.last_replication = at
        rep.count += 1
        rep.missed_streak = 0
        rep.anchor = at
        rep.hourly.clear()
        self._keep_points(rep, at, at)

    def _keep_points(self, rep: Replication, previous: float, last: float) -> None:
        """Add the hourly points crossed between ``previous`` and ``last``, keep the newest."""
        if rep.recovery_history <= 0:
            return
        first_hour = int(previous // HOUR) + 1
        last_hour = int(last // HOUR)
        # Only the newest recovery_history hours can survive; skip the rest outright.
        first_hour = max(first_hour, last_hour - rep.recovery_history + 1)
        for hour in range(first_hour, last_hour + 1):
            app = rep.app_consistent_hours > 0 and hour % rep.app_consistent_hours == 0
            kind = SnapshotType.AppConsistentReplica if app else SnapshotType.Replica
            at = hour * HOUR
            rep.hourly.append(
                RecoveryPoint(
                    stable_id("point", rep.vm_name, rep.replica_host, str(hour)), at, kind
                )
            )
            if app:
                rep.last_app_consistent = at
        del rep.hourly[: max(0, len(rep.hourly) - rep.recovery_history)]

    def recovery_points(self, vm: VM) -> list[RecoveryPoint]:
        """The replica's recovery points, oldest first, the latest point last."""
        rep = vm.replication
        if rep is None or vm.mode is not ReplicationMode.Replica or rep.last_replication is None:
            return []
        latest = RecoveryPoint(
            stable_id("latest", str(vm.id), vm.host),
            rep.last_replication,
            SnapshotType.Replica,
            True,
        )
        return [*rep.hourly, latest]


def _due(rep: Replication) -> float:
    """The earliest lab time at which ``HyperVWorld._advance_one`` changes ``rep`` (inf: never).

    It depends only on the fields in ``_SCHEDULE_FIELDS``; hosts down, health overrides and the
    replica's state change what happens then, not when. A cycle is due at ``anchor +
    frequency``, taken a few ulps early so that float rounding can never make it late against
    ``(now - anchor) // frequency`` (early is harmless: nothing happens, it is rescheduled).
    """
    state = rep.primary_state
    if state is ReplicationState.ReadyForInitialReplication:
        return _NEVER if rep.initial_start_at is None else rep.initial_start_at
    if state is ReplicationState.InitialReplicationInProgress:
        if rep.offline_export or rep.initial_done_at is None:
            return _NEVER
        return rep.initial_done_at
    if state is ReplicationState.Resynchronizing:
        return _NEVER if rep.resync_done_at is None else rep.resync_done_at
    if state is _CYCLING and rep.frequency > 0:
        due = rep.anchor + rep.frequency
        return due - 4 * math.ulp(due)
    return _NEVER


def _link_local(mac: str) -> str:
    """The EUI-64 link-local IPv6 address of a MAC such as ``00155DD772BC``."""
    octets = [int(mac[i : i + 2], 16) for i in range(0, 12, 2)]
    octets[0] ^= 0x02
    eui = [*octets[:3], 0xFF, 0xFE, *octets[3:]]
    groups = [f"{eui[i] << 8 | eui[i + 1]:x}" for i in range(0, 8, 2)]
    return "fe80::" + ":".join(groups)
