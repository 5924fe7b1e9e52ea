"""The compiler: a plan, a failover type and a direction in; ordered stages of task units out.

Pure: no I/O, no Celery. A :class:`CompiledRun` is plain JSON (``to_json``/``from_json``), stored
with the run and dispatched stage by stage by the engine — never as one nested canvas (see
workflows/ARCHITECTURE.md, "Celery conventions": a nested chain of chords grows every message
with the whole plan). A stage is either a group of units run in parallel (one chord) or a manual
gate.

Stage order:

* **test**: per group: applicable pre-actions, the VM stage (TEST_FAILOVER, CONNECT_NETWORK to
  the plan's test network, START_VM, WAIT_IP, UPDATE_DNS in the zone's test zone only), then
  post-actions.
* **planned**: pre-actions that run on the *primary* site go first, while it still runs; then
  the shutdown phase in reverse group order (SHUTDOWN_PRIMARY, PREPARE_FAILOVER on the primary
  host); then per group: the other pre-actions, the VM stage on the replica (FAILOVER, REVERSE,
  CONNECT_NETWORK, START_VM, WAIT_IP, UPDATE_DNS), post-actions.
* **unplanned**: per group: pre-actions, the VM stage on the replica (an optional best-effort
  SHUTDOWN_PRIMARY whose failure does not fail the run, FAILOVER to the latest or a chosen
  recovery point, CONNECT_NETWORK, START_VM, WAIT_IP, UPDATE_DNS), post-actions. The shutdown
  attempt travels with the replica site's unit: in a disaster the primary site's workers may be
  gone, and a message on their queue would never be taken.

A failback is the same with the primary and replica roles swapped. Follow-up operations
(cleanup, commit, cancel, reverse, compensate) compile from the original run and its recorded
steps with :func:`compile_followup`.
"""

from __future__ import annotations

import enum
import functools
import json
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, overload

from pydantic import BaseModel, ValidationError

from plans.errors import ConfigurationError
from plans.model import (
    Direction,
    Endpoint,
    Fabric,
    FailoverType,
    Group,
    ManualAction,
    OnError,
    PlanVM,
    RecoveryPlan,
    ScriptAction,
    UpdateDnsAction,
    WaitForIpAction,
)
from workflows.inputs import (
    CompensateInput,
    ConnectNetworkInput,
    DnsRecordInput,
    FailoverInput,
    HealthCheckInput,
    InvalidStepInput,
    RestoreDns,
    RestoreDnsInput,
    ReverseInput,
    ReverseToInput,
    ScriptInput,
    ShutdownPrimaryInput,
    StartVmInput,
    StepInput,
    UndoRecord,
    UpdateDnsInput,
    WaitIpInput,
    ZoneTarget,
    step_input,
    undo_record,
)
from workflows.statuses import StepStatus
from workflows.steps import (
    TASK_SCRIPT,
    TASK_VM,
    HostRef,
    StepKind,
    StepSpec,
    TaskUnit,
    site_queue,
)


class CompileError(ConfigurationError):
    """The plan cannot be compiled for that type and direction; the message says why."""


M = TypeVar("M", bound=BaseModel)


@functools.cache
def _default_input(kind: StepKind) -> StepInput:
    """The input of a step of ``kind`` with every field's default (frozen, so shared)."""
    return step_input(kind.value)


def _build(model: type[M], step: str, **fields: Any) -> M:
    """A step's input, or a :class:`CompileError` naming the step and the field that is wrong
    (a run option of the wrong type, e.g. ``wait_ip_timeout: soon``)."""
    try:
        return model(**fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise CompileError(f"step {step}: {where}: {error['msg']}") from None


class RunOperation(enum.StrEnum):
    """What a run does: a failover type, or a follow-up of an earlier run."""

    TEST = "test"
    PLANNED = "planned"
    UNPLANNED = "unplanned"
    CLEANUP = "cleanup"  # after a test: delete the test VMs, revert test DNS
    COMMIT = "commit"  # after an unplanned failover: Complete-VMFailover
    CANCEL_FAILOVER = "cancel_failover"  # after an unplanned failover: Stop-VMFailover
    REVERSE = "reverse"  # after a committed unplanned failover: replicate back
    COMPENSATE = "compensate"  # undo the completed steps of a run, newest first
    PROTECT = "protect"  # bring protection to a fabric's desired state (workflows.protection)
    UNPROTECT = "unprotect"  # disable protection of VMs (workflows.protection)

    @property
    def is_failover(self) -> bool:
        """True for the three failover types (compiled from the plan itself)."""
        return self in (RunOperation.TEST, RunOperation.PLANNED, RunOperation.UNPLANNED)


FOLLOW_UPS: dict[RunOperation, frozenset[RunOperation]] = {
    # which follow-up may be started after which operation
    RunOperation.CLEANUP: frozenset({RunOperation.TEST}),
    RunOperation.COMMIT: frozenset({RunOperation.UNPLANNED}),
    RunOperation.CANCEL_FAILOVER: frozenset({RunOperation.UNPLANNED}),
    RunOperation.REVERSE: frozenset({RunOperation.UNPLANNED, RunOperation.COMMIT}),
}


class StageKind(enum.StrEnum):
    """A stage is a chord of units, or a gate waiting for an operator."""

    UNITS = "units"
    GATE = "gate"


class OnTimeout(enum.StrEnum):
    """What a gate's timeout does to the run: fail it, or go on as if approved."""

    FAIL = "fail"
    CONTINUE = "continue"


@dataclass(frozen=True)
class Gate:
    """A manual action: the run waits in ``waiting`` until approved, rejected or timed out."""

    name: str
    instructions: str
    timeout: float | None = None
    on_timeout: OnTimeout = OnTimeout.FAIL

    def __post_init__(self) -> None:
        object.__setattr__(self, "on_timeout", OnTimeout(self.on_timeout))


@dataclass(frozen=True)
class Stage:
    """One step of the run's progress: a chord of parallel units, or a gate."""

    index: int
    name: str
    kind: StageKind
    group: str | None = None
    units: tuple[TaskUnit, ...] = ()
    gate: Gate | None = None
    on_failure: OnError = OnError.STOP  # continue: a failed unit does not stop later stages

    def __post_init__(self) -> None:
        object.__setattr__(self, "on_failure", OnError(self.on_failure))

    def to_json(self, inputs: dict[int, dict[str, Any]] | None = None) -> dict[str, Any]:
        """The stage as plain data (``inputs``: see :meth:`TaskUnit.to_json`)."""
        return {
            "index": self.index,
            "name": self.name,
            "kind": self.kind.value,
            "group": self.group,
            "units": [unit.to_json(inputs) for unit in self.units],
            "gate": None if self.gate is None else asdict(self.gate),
            "on_failure": self.on_failure.value,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Stage:
        """The inverse of ``dataclasses.asdict``."""
        return cls(
            index=data["index"],
            name=data["name"],
            kind=StageKind(data["kind"]),
            group=data.get("group"),
            units=tuple(TaskUnit.from_json(unit) for unit in data.get("units", ())),
            gate=Gate(**data["gate"]) if data.get("gate") else None,
            on_failure=data.get("on_failure", OnError.STOP),
        )


class StoredStages(Sequence[Stage]):
    """A compiled run's stages kept as their stored JSON, compressed, each decoded when read.

    A worker needs a run's hosts and options for every unit, but only the stage it enters or
    advances at a time (a unit's steps come in its task message). Decoded, a step of the
    benchmark's test failover holds about 1.6 KB; its stored JSON about 200 bytes, and
    compressed about 10: a 5,000-VM run kept this way holds about 0.2 MB instead of 30 MB.
    The stage read last stays decoded (entering a stage and advancing it read it again).
    """

    __slots__ = ("_blobs", "_last")

    def __init__(self, blobs: Sequence[bytes]) -> None:
        self._blobs = tuple(blobs)
        self._last: tuple[int, Stage] | None = None

    @staticmethod
    def compress(text: str) -> bytes:
        """A stage's JSON text as kept."""
        return zlib.compress(text.encode(), 1)

    @property
    def nbytes(self) -> int:
        """The compressed stages' size: the weight of this form in a cache."""
        return sum(len(blob) for blob in self._blobs)

    def __len__(self) -> int:
        return len(self._blobs)

    @overload
    def __getitem__(self, index: int) -> Stage: ...

    @overload
    def __getitem__(self, index: slice) -> StoredStages: ...

    def __getitem__(self, index: int | slice) -> Stage | StoredStages:
        if isinstance(index, slice):
            return StoredStages(self._blobs[index])
        if index < 0:
            index += len(self._blobs)
        if not 0 <= index < len(self._blobs):
            raise IndexError("stage index out of range")
        last = self._last  # one read: another thread may replace it meanwhile
        if last is not None and last[0] == index:
            return last[1]
        stage = Stage.from_json(json.loads(zlib.decompress(self._blobs[index])))
        self._last = (index, stage)
        return stage

    def __iter__(self) -> Iterator[Stage]:
        for index in range(len(self._blobs)):
            yield self[index]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]  # equal to a tuple of the same stages

    def __repr__(self) -> str:
        return f"StoredStages({len(self._blobs)} stages, {self.nbytes} bytes)"


def _skip(text: str, at: int) -> int:
    """The index of the first character at or after ``at`` that is not JSON whitespace."""
    while at < len(text) and text[at] in " \t\n\r":
        at += 1
    return at


def _expect(text: str, at: int, chars: str) -> int:
    at = _skip(text, at)
    if at >= len(text) or text[at] not in chars:
        raise ValueError(f"compiled run: expected one of {chars!r} at character {at}")
    return at


def _top_level(text: str) -> tuple[dict[str, Any], StoredStages]:
    """A stored compiled run's members except the stages, and its stages as stored text.

    The text is walked one top-level member and one stage at a time, so no more than one
    stage's JSON is decoded at once, whatever the run's size (a database may return the
    members in another order, and with other whitespace).
    """
    decoder = json.JSONDecoder()
    members: dict[str, Any] = {}
    stages: list[bytes] = []
    at = _expect(text, 0, "{") + 1
    if text[_skip(text, at)] == "}":
        return members, StoredStages(stages)
    while True:
        at = _expect(text, at, '"')
        key, at = json.decoder.scanstring(text, at + 1)  # type: ignore[attr-defined]
        at = _skip(text, _expect(text, at, ":") + 1)
        if key == "stages":
            at = _expect(text, at, "[") + 1
            if text[_skip(text, at)] == "]":
                at = _skip(text, at) + 1
            else:
                while True:
                    start = _skip(text, at)
                    _, at = decoder.raw_decode(text, start)
                    stages.append(StoredStages.compress(text[start:at]))
                    at = _expect(text, at, ",]")
                    at += 1
                    if text[at - 1] == "]":
                        break
        else:
            members[key], at = decoder.raw_decode(text, at)
        at = _expect(text, at, ",}") + 1
        if text[at - 1] == "}":
            break
    return members, StoredStages(stages)


@dataclass(frozen=True)
class CompiledRun:
    """Everything a run executes, as data: hosts (with credential references only) and stages.

    ``stages`` is a tuple, or :class:`StoredStages` in a run read with :meth:`from_text`.
    """

    plan: str
    operation: RunOperation
    direction: Direction
    hosts: dict[str, HostRef]
    stages: Sequence[Stage]
    options: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON: what the run row stores and ``ferryman run --dry-run`` prints.

        An input object shared by many steps (the compiler shares equal ones) is dumped once;
        its JSON is then shared by those steps' entries, which nothing changes in place.
        """
        inputs: dict[int, dict[str, Any]] = {}
        return {
            "plan": self.plan,
            "operation": self.operation.value,
            "direction": self.direction.value,
            "hosts": {name: asdict(ref) for name, ref in self.hosts.items()},
            "stages": [stage.to_json(inputs) for stage in self.stages],
            "options": dict(self.options),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CompiledRun:
        """The inverse of :meth:`to_json`."""
        return cls(
            plan=data["plan"],
            operation=RunOperation(data["operation"]),
            direction=Direction(data["direction"]),
            hosts={name: HostRef(**ref) for name, ref in data["hosts"].items()},
            stages=tuple(Stage.from_json(stage) for stage in data["stages"]),
            options=dict(data.get("options", {})),
        )

    @classmethod
    def from_text(cls, text: str) -> CompiledRun:
        """The run from its stored JSON text, its stages kept compact (:class:`StoredStages`).

        What a worker keeps of a run it takes part in: decoding the whole text at once held
        its JSON objects and every decoded step at the same moment, a peak the process then
        kept as resident memory.
        """
        data, stages = _top_level(text)
        return cls(
            plan=data["plan"],
            operation=RunOperation(data["operation"]),
            direction=Direction(data["direction"]),
            hosts={name: HostRef(**ref) for name, ref in data["hosts"].items()},
            stages=stages,
            options=dict(data.get("options", {})),
        )

    def steps(self) -> Iterator[tuple[Stage, TaskUnit, StepSpec]]:
        """Every step in execution order with its stage and unit."""
        for stage in self.stages:
            for unit in stage.units:
                for step in unit.steps:
                    yield stage, unit, step

    def vms(self) -> list[str]:
        """The VMs this run touches, in first-touched order."""
        seen: dict[str, None] = {}
        for _stage, unit, _step in self.steps():
            if unit.vm:
                seen.setdefault(unit.vm, None)
        return list(seen)


# --- helpers over the fabric ----------------------------------------------------------------


def _host_ref(fabric: Fabric, name: str) -> HostRef:
    try:
        site, endpoint = fabric.host_endpoint(name)
    except KeyError:
        raise CompileError(f"host {name!r} is not in any site of the fabric") from None
    return _ref_from_endpoint(fabric, name, site, endpoint)


def _ref_from_endpoint(fabric: Fabric, name: str, site: str, endpoint: Endpoint) -> HostRef:
    credential = fabric.credentials.get(endpoint.credential)
    if credential is None:
        raise CompileError(f"host {name} uses unknown credential {endpoint.credential!r}")
    return HostRef(
        name=name,
        site=site,
        url=endpoint.url,
        auth=endpoint.auth,
        username=credential.username,
        password_ref=credential.password,
        verify_tls=endpoint.verify_tls,
        ca_bundle=endpoint.ca_bundle,
        operation_timeout=endpoint.operation_timeout,
        connect_timeout=endpoint.connect_timeout,
    )


def _all_hosts(fabric: Fabric, sites: Sequence[str]) -> dict[str, HostRef]:
    hosts: dict[str, HostRef] = {}
    for site_name in sites:
        site = fabric.sites[site_name]
        hosts[site.vmm.name] = _ref_from_endpoint(fabric, site.vmm.name, site_name, site.vmm)
        for host_name, endpoint in site.hosts.items():
            hosts[host_name] = _ref_from_endpoint(fabric, host_name, site_name, endpoint)
    return hosts


@dataclass(frozen=True)
class _Roles:
    """Which site and host play primary (source) and replica (target) in this direction."""

    source_site: str
    target_site: str
    failback: bool

    def hosts(self, fabric: Fabric, pairing: str, vm: str) -> tuple[str, str]:
        protected = fabric.pairings[pairing].vms.get(vm)
        if protected is None:
            raise CompileError(f"VM {vm} is not protected by pairing {pairing}; add it there")
        if self.failback:
            return protected.replica_host, protected.primary_host
        return protected.primary_host, protected.replica_host


class _Compiler:
    """Builds the stages of one run; a class only to share the context between helpers."""

    def __init__(
        self,
        fabric: Fabric,
        plan_name: str,
        plan: RecoveryPlan,
        failover_type: FailoverType,
        direction: Direction,
        options: dict[str, Any],
        gate_timeout: float | None,
    ) -> None:
        if plan.pairing not in fabric.pairings:
            raise CompileError(f"plan {plan_name} names unknown pairing {plan.pairing!r}")
        pairing = fabric.pairings[plan.pairing]
        primary, recovery = pairing.primary.site, pairing.recovery.site
        failback = direction is Direction.FAILBACK
        self.roles = _Roles(
            source_site=recovery if failback else primary,
            target_site=primary if failback else recovery,
            failback=failback,
        )
        self.fabric, self.plan_name, self.plan = fabric, plan_name, plan
        self.type, self.direction, self.options = failover_type, direction, options
        self.gate_timeout = gate_timeout
        self.stages: list[Stage] = []
        # one object per distinct input and per zone: inputs are frozen, and a plan's VMs
        # mostly share them (the defaults, a network's switch and subnets), so a large run
        # builds, stores and serialises each once (CompiledRun.to_json keys on identity)
        self._inputs: dict[Any, StepInput] = {}
        self._zones: dict[str, ZoneTarget] = {}

    def _shared(self, params: StepInput | None, kind: StepKind) -> StepInput:
        """``params`` (default: the kind's defaults), or an equal input built before."""
        if params is None:
            params = _default_input(kind)
        try:
            return self._inputs.setdefault(params, params)
        except TypeError:  # a field holds a mapping (UpdateDnsInput's zones): not hashable
            return params

    # -- stages

    def _add(self, **kwargs: Any) -> None:
        self.stages.append(Stage(index=len(self.stages), **kwargs))

    def compile(self) -> CompiledRun:
        groups = self.plan.groups
        if self.type is FailoverType.PLANNED:
            for number, group in enumerate(groups, 1):
                for action in group.pre:
                    if isinstance(action, ScriptAction) and action.site == "primary":
                        self._action(number, group, action)
            for number, group in reversed(list(enumerate(groups, 1))):
                self._shutdown_stage(number, group)
        for number, group in enumerate(groups, 1):
            for action in group.pre:
                primary_script = isinstance(action, ScriptAction) and action.site == "primary"
                if not (self.type is FailoverType.PLANNED and primary_script):
                    self._action(number, group, action)
            self._vm_stage(number, group)
            for action in group.post:
                self._action(number, group, action)
        sites = [self.roles.source_site, self.roles.target_site]
        return CompiledRun(
            plan=self.plan_name,
            operation=RunOperation(self.type.value),
            direction=self.direction,
            hosts=_all_hosts(self.fabric, sites),
            stages=tuple(self.stages),
            options=dict(self.options),
        )

    def _shutdown_stage(self, number: int, group: Group) -> None:
        units = []
        name = f"g{number}.{group.name}.shutdown"
        for vm in group.vms:
            source, _target = self.roles.hosts(self.fabric, self.plan.pairing, vm.name)
            steps = (
                StepSpec(
                    f"{name}/{vm.name}/shutdown_primary", StepKind.SHUTDOWN_PRIMARY, vm.name, source
                ),
                StepSpec(
                    f"{name}/{vm.name}/prepare_failover", StepKind.PREPARE_FAILOVER, vm.name, source
                ),
            )
            units.append(self._unit(name, vm.name, group.name, self.roles.source_site, steps))
        self._add(
            name=name,
            kind=StageKind.UNITS,
            group=group.name,
            units=tuple(units),
            on_failure=self.plan.on_group_failure,
        )

    def _vm_stage(self, number: int, group: Group) -> None:
        name = f"g{number}.{group.name}"
        units = []
        for vm in group.vms:
            steps = self._vm_steps(name, vm)
            units.append(self._unit(name, vm.name, group.name, self.roles.target_site, steps))
        self._add(
            name=name,
            kind=StageKind.UNITS,
            group=group.name,
            units=tuple(units),
            on_failure=self.plan.on_group_failure,
        )

    def _vm_steps(self, stage: str, vm: PlanVM) -> tuple[StepSpec, ...]:
        source, target = self.roles.hosts(self.fabric, self.plan.pairing, vm.name)
        prefix = f"{stage}/{vm.name}"
        steps: list[StepSpec] = []

        def key(kind: StepKind) -> str:
            return f"{prefix}/{kind._value_}"

        def add(
            kind: StepKind,
            host: str,
            params: StepInput | None = None,
            on_error: OnError = OnError.STOP,
        ) -> None:
            steps.append(
                StepSpec(key(kind), kind, vm.name, host, self._shared(params, kind), on_error)
            )

        if self.type is FailoverType.TEST:
            add(StepKind.TEST_FAILOVER, target)
        elif self.type is FailoverType.PLANNED:
            add(StepKind.FAILOVER, target)
            # the executor checks the reversed relationship points back at the old primary
            add(StepKind.REVERSE, target, ReverseInput(replica_server=source))
        else:
            if self.options.get("try_shutdown", True):
                shutdown = ShutdownPrimaryInput(best_effort=True)
                add(StepKind.SHUTDOWN_PRIMARY, source, shutdown, on_error=OnError.CONTINUE)
            point = self._recovery_point(vm.name)
            add(StepKind.FAILOVER, target, FailoverInput(recovery_point=point))
        networks = self._target_networks(vm.name)
        switch = networks[0][0] if networks else None
        subnets = list(dict.fromkeys(s for _, found in networks for s in found))
        connect = ConnectNetworkInput(switch=switch)
        if len(networks) > 1:
            # Each adapter by its own network's mapping, in the order the VM lists them.
            connect = ConnectNetworkInput(switch=switch, adapters=tuple(n for n, _ in networks))
        add(StepKind.CONNECT_NETWORK, target, connect)
        add(StepKind.START_VM, target, StartVmInput(start_delay=vm.start_delay))
        if vm.wait_for_ip and any(n is not None for n, _ in networks):
            wait = self._wait_ip_input(key(StepKind.WAIT_IP), vm, subnets)
            add(StepKind.WAIT_IP, target, wait)
            dns = self._dns_input(vm)
            if dns is not None:
                add(StepKind.UPDATE_DNS, target, dns)
        return tuple(steps)

    def _recovery_point(self, vm: str) -> str | None:
        point = self.options.get("recovery_point")
        if isinstance(point, dict):
            point = point.get(vm)
        if point in (None, "", "latest"):
            return None
        return str(point)

    def _wait_ip_input(
        self, step: str, vm: PlanVM, subnets: list[str], timeout: float | None = None
    ) -> WaitIpInput:
        if timeout is None:
            timeout = self.options.get("wait_ip_timeout", 600)
        # VMM of the site the VM comes up in; the executor must not guess it
        vmm = self.fabric.sites[self.roles.target_site].vmm.name if vm.ip_source == "vmm" else None
        return _build(
            WaitIpInput, step, subnets=subnets, source=vm.ip_source, timeout=timeout, vmm=vmm
        )

    def _target_networks(self, vm: str) -> list[tuple[str | None, list[str]]]:
        """Per network of the VM (one adapter each, in order): the switch its adapter connects
        to after failover and that network's subnets; (None, []) = left disconnected (an
        unmapped network, which ``plan validate`` and ``plan check`` warn about)."""
        protected = self.fabric.pairings[self.plan.pairing].vms[vm]
        return [self._target_network(network) for network in protected.networks]

    def _target_network(self, network: str) -> tuple[str | None, list[str]]:
        """The switch an adapter on primary-site ``network`` connects to, and its subnets."""
        pairing = self.fabric.pairings[self.plan.pairing]
        mapping = self.fabric.mapping_for(pairing.primary.site, network)
        if mapping is None:
            return None, []
        if self.type is FailoverType.TEST:
            if self.plan.test_network == "none":
                return None, []
            if self.plan.test_network == "isolated":
                if self.roles.failback or mapping.test_network is None:
                    return None, []
                return mapping.test_network, self._subnets(
                    mapping.target.site, mapping.test_network
                )
        if self.roles.failback:
            return network, self._subnets(pairing.primary.site, network)
        return mapping.target.network, self._subnets(mapping.target.site, mapping.target.network)

    def _subnets(self, site: str, network: str) -> list[str]:
        found = self.fabric.sites.get(site)
        if found is None or network not in found.networks:
            return []
        return list(found.networks[network].subnets)

    def _dns_input(self, vm: PlanVM) -> UpdateDnsInput | None:
        records: list[DnsRecordInput] = []
        zones: dict[str, ZoneTarget] = {}
        for record in vm.dns:
            zone_name = record.zone
            if self.type is FailoverType.TEST:
                zone = self.fabric.dns_zones.get(record.zone)
                if zone is None or zone.test_zone is None:
                    continue  # a test run never touches a production zone
                zone_name = zone.test_zone
            zones[zone_name] = self._zone_target(zone_name)
            records.append(
                DnsRecordInput(zone=zone_name, name=record.name, ttl=record.ttl, ptr=record.ptr)
            )
        if not records:
            return None
        return UpdateDnsInput(records=tuple(records), zones=zones)

    def _zone_target(self, zone_name: str) -> ZoneTarget:
        found = self._zones.get(zone_name)
        if found is None:
            found = self._zones[zone_name] = self._new_zone_target(zone_name)
        return found

    def _new_zone_target(self, zone_name: str) -> ZoneTarget:
        zone = self.fabric.dns_zones.get(zone_name)
        if zone is None:
            raise CompileError(f"DNS zone {zone_name} is not in the fabric's dns_zones")
        vmm = None
        if zone.site is not None:
            site = self.fabric.sites.get(zone.site)
            if site is None:
                raise CompileError(f"DNS zone {zone_name} names unknown site {zone.site!r}")
            vmm = site.vmm.name
        return ZoneTarget(**zone.model_dump(mode="json"), zone=zone_name, vmm=vmm)

    # -- actions

    def _action(self, number: int, group: Group, action: Any) -> None:
        if not action.applies_to(self.type, self.direction):
            return
        name = f"g{number}.{group.name}.{action.name}"
        if isinstance(action, ManualAction):
            timeout = action.timeout if action.timeout is not None else self.gate_timeout
            gate = Gate(action.name, action.instructions, timeout, OnTimeout(action.on_timeout))
            self._add(name=name, kind=StageKind.GATE, group=group.name, gate=gate)
        elif isinstance(action, ScriptAction):
            self._script(name, group, action)
        else:
            kind = StepKind.HEALTH_CHECK
            if isinstance(action, WaitForIpAction):
                kind = StepKind.WAIT_IP
            elif isinstance(action, UpdateDnsAction):
                kind = StepKind.UPDATE_DNS
            self._builtin(name, group, action, kind)

    def _script(self, name: str, group: Group, action: ScriptAction) -> None:
        on_source = action.site == "primary"
        site = self.roles.source_site if on_source else self.roles.target_site
        host = action.host or self.fabric.sites[site].vmm.name
        params = ScriptInput(
            script=action.script or "",
            file=action.file,
            parameters=dict(action.parameters),
            timeout=action.timeout,
            undo=action.undo,
            name=action.name,
            rerun_on_redelivery=action.rerun_on_redelivery,
        )
        step = StepSpec(
            f"{name}/script", StepKind.SCRIPT, None, host, params, action.error_policy(self.type)
        )
        unit = TaskUnit(
            key=name, task=TASK_SCRIPT, queue=site_queue(site), steps=(step,), group=group.name
        )
        self._add(name=name, kind=StageKind.UNITS, group=group.name, units=(unit,))

    def _builtin(self, name: str, group: Group, action: Any, kind: StepKind) -> None:
        units = []
        for vm in group.vms:
            _source, target = self.roles.hosts(self.fabric, self.plan.pairing, vm.name)
            key = f"{name}/{vm.name}/{kind.value}"
            params: StepInput | None = None
            if kind is StepKind.WAIT_IP:
                networks = self._target_networks(vm.name)
                subnets = list(dict.fromkeys(s for _, found in networks for s in found))
                params = self._wait_ip_input(key, vm, subnets, action.timeout)
            elif kind is StepKind.UPDATE_DNS:
                params = self._dns_input(vm)
                if params is None:
                    continue
            elif kind is StepKind.HEALTH_CHECK:
                params = _build(HealthCheckInput, key, timeout=action.timeout)
            step = StepSpec(key, kind, vm.name, target, self._shared(params, kind))
            units.append(self._unit(name, vm.name, group.name, self.roles.target_site, (step,)))
        self._add(
            name=name,
            kind=StageKind.UNITS,
            group=group.name,
            units=tuple(units),
            on_failure=self.plan.on_group_failure,
        )

    @staticmethod
    def _unit(stage: str, vm: str, group: str, site: str, steps: tuple[StepSpec, ...]) -> TaskUnit:
        return TaskUnit(
            key=f"{stage}/{vm}",
            task=TASK_VM,
            queue=site_queue(site),
            steps=steps,
            vm=vm,
            group=group,
        )


def compile_run(
    fabric: Fabric,
    plan_name: str,
    plan: RecoveryPlan,
    failover_type: FailoverType | str,
    direction: Direction | str = Direction.FAILOVER,
    options: dict[str, Any] | None = None,
    *,
    gate_timeout: float | None = None,
) -> CompiledRun:
    """Compile a plan into stages for a failover type and direction (pure; raises CompileError).

    ``options``: ``recovery_point`` (a name, or per VM a dict; unplanned only), ``try_shutdown``
    (unplanned; default true), ``wait_ip_timeout`` (seconds, default 600).
    """
    try:
        failover_type = FailoverType(failover_type)
        direction = Direction(direction)
    except ValueError as exc:
        raise CompileError(
            f"{exc}; types: test, planned, unplanned; directions: failover, failback"
        ) from None
    compiler = _Compiler(
        fabric, plan_name, plan, failover_type, direction, options or {}, gate_timeout
    )
    return compiler.compile()


# --- follow-ups ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StepRecord:
    """What a follow-up needs to know about a step of the original run (from the store).

    ``status`` and ``undo`` may be given as stored (text, JSON); they are read into a
    :class:`StepStatus` and an undo record here.
    """

    key: str
    kind: StepKind
    stage: int
    seq: int
    status: StepStatus
    vm: str | None = None
    host: str | None = None
    result: dict[str, Any] | None = None
    undo: UndoRecord | None = None

    if TYPE_CHECKING:
        # what the generated __init__ accepts: __post_init__ reads stored text and JSON

        def __init__(
            self,
            key: str,
            kind: StepKind,
            stage: int,
            seq: int,
            status: StepStatus | str,
            vm: str | None = None,
            host: str | None = None,
            result: dict[str, Any] | None = None,
            undo: UndoRecord | Mapping[str, Any] | None = None,
        ) -> None: ...

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", StepKind(self.kind))
        object.__setattr__(self, "status", StepStatus(self.status))
        undo: UndoRecord | Mapping[str, Any] | None = self.undo
        if undo is not None:
            try:
                object.__setattr__(self, "undo", undo_record(undo))
            except InvalidStepInput as exc:
                raise CompileError(f"step {self.key}: {exc}") from None


def compile_followup(
    parent: CompiledRun, operation: RunOperation, steps: Sequence[StepRecord]
) -> CompiledRun:
    """Compile a follow-up of ``parent`` from its recorded steps (pure; raises CompileError)."""
    builders = {
        RunOperation.CLEANUP: _cleanup,
        RunOperation.COMMIT: _commit,
        RunOperation.CANCEL_FAILOVER: _cancel,
        RunOperation.REVERSE: _reverse,
        RunOperation.COMPENSATE: _compensate,
    }
    if operation not in builders:
        raise CompileError(f"{operation} is not a follow-up operation")
    stages = builders[operation](parent, steps)
    if not any(stage.units for stage in stages):
        raise CompileError(
            f"run has nothing to {operation.value.replace('_', ' ')}: no step "
            "it would act on completed"
        )
    return CompiledRun(
        plan=parent.plan,
        operation=operation,
        direction=parent.direction,
        hosts=dict(parent.hosts),
        stages=tuple(stages),
        # executors still need the failover type of the original run (test VM names)
        options={"failover_type": parent.options.get("failover_type", parent.operation.value)},
    )


def _queue_of(parent: CompiledRun, host: str | None) -> str:
    if host is None or host not in parent.hosts:
        raise CompileError(f"host {host!r} of the original run is not in its host list")
    return site_queue(parent.hosts[host].site)


_STARTED = frozenset({StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.RUNNING})


def _done(
    steps: Sequence[StepRecord], kind: StepKind, *, started: bool = False
) -> list[StepRecord]:
    # "started" also takes steps that failed part-way: their effect may exist, and the
    # follow-up's executors are idempotent (they do nothing where there is nothing to undo)
    wanted = _STARTED if started else {StepStatus.SUCCEEDED}
    return [step for step in steps if step.kind is kind and step.status in wanted]


def _per_vm_stage(
    parent: CompiledRun, name: str, index: int, per_vm: dict[str, list[StepSpec]]
) -> Stage:
    units = []
    for vm, specs in per_vm.items():
        units.append(
            TaskUnit(
                key=f"{name}/{vm}",
                task=TASK_VM,
                queue=_queue_of(parent, specs[-1].host),
                steps=tuple(specs),
                vm=specs[0].vm,
            )
        )
    return Stage(
        index=index,
        name=name,
        kind=StageKind.UNITS,
        units=tuple(units),
        on_failure=OnError.CONTINUE,
    )


def _cleanup(parent: CompiledRun, steps: Sequence[StepRecord]) -> list[Stage]:
    if parent.operation is not RunOperation.TEST:
        raise CompileError("only a test failover is cleaned up; use commit or cancel instead")
    dns = {s.vm: s for s in _done(steps, StepKind.UPDATE_DNS) if isinstance(s.undo, RestoreDns)}
    per_vm: dict[str, list[StepSpec]] = {}
    for step in _done(steps, StepKind.TEST_FAILOVER, started=True):
        assert step.vm is not None
        specs = per_vm.setdefault(step.vm, [])
        if step.vm in dns:
            update = dns[step.vm]
            assert isinstance(update.undo, RestoreDns)
            specs.append(
                StepSpec(
                    f"cleanup/{step.vm}/restore_dns",
                    StepKind.RESTORE_DNS,
                    step.vm,
                    update.host,
                    RestoreDnsInput(snapshots=update.undo.snapshots),
                )
            )
        specs.append(
            StepSpec(f"cleanup/{step.vm}/test_cleanup", StepKind.TEST_CLEANUP, step.vm, step.host)
        )
    return [_per_vm_stage(parent, "cleanup", 0, per_vm)]


def _failovers(parent: CompiledRun, steps: Sequence[StepRecord]) -> list[StepRecord]:
    if parent.operation is not RunOperation.UNPLANNED:
        raise CompileError("commit, cancel and reverse follow an unplanned failover")
    return _done(steps, StepKind.FAILOVER)


def _commit(parent: CompiledRun, steps: Sequence[StepRecord]) -> list[Stage]:
    per_vm = {
        s.vm: [StepSpec(f"commit/{s.vm}/commit", StepKind.COMMIT, s.vm, s.host)]
        for s in _failovers(parent, steps)
        if s.vm
    }
    return [_per_vm_stage(parent, "commit", 0, per_vm)]


def _cancel(parent: CompiledRun, steps: Sequence[StepRecord]) -> list[Stage]:
    per_vm = {
        s.vm: [StepSpec(f"cancel/{s.vm}/cancel_failover", StepKind.CANCEL_FAILOVER, s.vm, s.host)]
        for s in _failovers(parent, steps)
        if s.vm
    }
    return [_per_vm_stage(parent, "cancel", 0, per_vm)]


def _reverse(parent: CompiledRun, steps: Sequence[StepRecord]) -> list[Stage]:
    failovers = _failovers(parent, steps)
    sources = {s.vm: s.host for s in steps if s.kind is StepKind.SHUTDOWN_PRIMARY and s.vm}
    old: dict[str, list[StepSpec]] = {}
    new: dict[str, list[StepSpec]] = {}
    for step in failovers:
        assert step.vm is not None
        source = sources.get(step.vm) or _source_host(parent, step.vm)
        old[step.vm] = [
            StepSpec(f"reverse/{step.vm}/set_as_replica", StepKind.SET_AS_REPLICA, step.vm, source)
        ]
        new[step.vm] = [
            StepSpec(
                f"reverse/{step.vm}/reverse_to",
                StepKind.REVERSE_TO,
                step.vm,
                step.host,
                ReverseToInput(replica_server=source),
            ),
            StepSpec(
                f"reverse/{step.vm}/start_initial_replication",
                StepKind.START_INITIAL_REPLICATION,
                step.vm,
                step.host,
            ),
        ]
    return [
        _per_vm_stage(parent, "reverse.old-primary", 0, old),
        _per_vm_stage(parent, "reverse.new-primary", 1, new),
    ]


def _source_host(parent: CompiledRun, vm: str) -> str:
    for _stage, _unit, spec in parent.steps():
        if spec.vm == vm and spec.kind is StepKind.SHUTDOWN_PRIMARY and spec.host:
            return spec.host
    raise CompileError(
        f"the original run does not say which host was {vm}'s primary; "
        "reverse replication needs the old primary host"
    )


_UNDOABLE = frozenset({StepStatus.SUCCEEDED, StepStatus.FAILED})


def _compensate(parent: CompiledRun, steps: Sequence[StepRecord]) -> list[Stage]:
    # a failed step may have changed something before failing (DNS records switched before a
    # verification timed out); executors attach an undo record for that part
    undoable = [s for s in steps if s.status in _UNDOABLE and s.undo is not None]
    by_stage: dict[int, list[StepRecord]] = {}
    for step in undoable:
        by_stage.setdefault(step.stage, []).append(step)
    stages: list[Stage] = []
    for stage_index in sorted(by_stage, reverse=True):
        per_unit: dict[str, list[StepSpec]] = {}
        for step in sorted(by_stage[stage_index], key=lambda s: s.seq, reverse=True):
            assert step.undo is not None
            owner = step.vm or step.key
            per_unit.setdefault(owner, []).append(
                StepSpec(
                    f"compensate/{step.key}",
                    StepKind.COMPENSATE,
                    step.vm,
                    step.host,
                    CompensateInput(undo=step.undo, of=step.key, of_kind=step.kind.value),
                )
            )
        name = f"compensate.{parent.stages[stage_index].name}"
        stage = _per_vm_stage(parent, name, len(stages), per_unit)
        stages.append(stage)
    return stages
