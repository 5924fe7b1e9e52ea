"""Step inputs and undo records: one frozen model per step kind and one per undo action.

The compiler builds a step's input from the plan and the fabric, and an executor reads the
same model: nothing travels as a loose dict between them. An input is validated once, when
it is built (or read back from a stored run); its JSON leaves out the ``kind``, which the
step itself carries (:class:`~workflows.steps.StepSpec`).

An undo record is what a mutating step returns to say how to take its effect back; it is
stored with the step and executed by a compensation run. Its JSON keeps its ``action``.

Both are discriminated unions (``StepInput`` on ``kind``, ``UndoRecord`` on ``action``), so a
stored record is decoded to exactly one model or refused with a message naming the field.
Records stored before these models existed still decode: an undo record's ``vm_name`` is read
as ``vm``, a zone target's ``name`` as ``zone``, and a compensation step's ``kind`` (the kind
of the step it undoes) as ``of_kind``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from plans.errors import PermanentError


class InvalidStepInput(PermanentError):
    """A step's input or undo record does not fit its model: a compiler bug or a hand-edited
    run; the message names the step and the field."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- DNS pieces shared by inputs and undo records -----------------------------------------


class ZoneTarget(BaseModel):
    """One DNS zone as a worker reaches it: the fabric's ``dns_zones`` entry, resolved.

    ``vmm`` is the VMM server of the zone's site (a Windows zone runs its cmdlets there).
    Fabric fields a worker does not use (``site``, ``test_zone``) are dropped when read.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    zone: str
    kind: Literal["rfc2136", "windows"] = "rfc2136"
    primary: str | None = None
    servers: tuple[str, ...] | None = None
    tsig_key: str | None = None  # a file: reference, never a key
    algorithm: str = "hmac-sha256"
    timeout: float = 5.0
    verify_timeout: float = 60.0
    vmm: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _zone_from_name(cls, data: Any) -> Any:
        # earlier runs stored the fabric's zone dump with its name under "name"
        if isinstance(data, Mapping) and "zone" not in data and "name" in data:
            return {**data, "zone": data["name"]}
        return data


class DnsRecordInput(_Frozen):
    """A record UPDATE_DNS points at the VM's new address."""

    zone: str
    name: str
    ttl: int | None = None  # None: keep the record's current TTL
    ptr: bool = False


class DnsSnapshot(_Frozen):
    """The records of one zone as they were before a switch (the DNS adapter's JSON)."""

    target: ZoneTarget
    snapshot: dict[str, Any]


# --- undo records ----------------------------------------------------------------------------


class _Undo(_Frozen):
    host: str

    @model_validator(mode="before")
    @classmethod
    def _vm_from_vm_name(cls, data: Any) -> Any:
        # earlier runs named the VM of stop_vm (and connect_network) "vm_name"
        if isinstance(data, Mapping) and "vm_name" in data:
            fields = dict(data)
            name = fields.pop("vm_name")
            fields.setdefault("vm", name)
            return fields
        return data


class StopTestFailover(_Undo):
    """Stop-VMFailover on the replica: deletes the test VM."""

    action: Literal["stop_test_failover"] = "stop_test_failover"
    vm: str


class SourceToRestart(_Frozen):
    """The source VM a planned failover shut down and prepared, to start again."""

    host: str
    vm: str


class CancelFailover(_Undo):
    """Turn the failed-over VM off and Stop-VMFailover; then restart the source, if any."""

    action: Literal["cancel_failover"] = "cancel_failover"
    vm: str
    restart_source: SourceToRestart | None = None


class CancelPrepare(_Undo):
    """Stop-VMFailover on a primary left PreparedForFailover."""

    action: Literal["cancel_prepare"] = "cancel_prepare"
    vm: str


class StartVm(_Undo):
    """Start-VM: the source VM Ferryman shut down."""

    action: Literal["start_vm"] = "start_vm"
    vm: str


class StopVm(_Undo):
    """Turn off a VM Ferryman started (``vm`` is its name on the host)."""

    action: Literal["stop_vm"] = "stop_vm"
    vm: str


class AdapterSwitch(_Frozen):
    """One network adapter (its Hyper-V ``Id``) and the switch it was on (None: unconnected)."""

    id: str
    switch: str | None = None


class RestoreNetwork(_Undo):
    """Connect the VM's adapters back to ``switch`` (None: disconnect them), or, when
    ``adapters`` is given, each listed adapter back to its own previous switch."""

    action: Literal["connect_network"] = "connect_network"
    vm: str
    switch: str | None = None
    adapters: tuple[AdapterSwitch, ...] = ()


class RestoreDns(_Frozen):
    """Put back the records UPDATE_DNS replaced, newest first."""

    action: Literal["restore_dns"] = "restore_dns"
    snapshots: tuple[DnsSnapshot, ...]


class UndoScript(_Undo):
    """A script action's undo script."""

    action: Literal["script"] = "script"
    name: str
    script: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    timeout: float = 600.0


class ProtectionSettings(_Frozen):
    """Hyper-V Replica settings of a protection profile (``workflows.protection``)."""

    frequency: int = 300
    recovery_history: int = 0
    vss_hours: int = 0
    compression: bool = True
    authentication: Literal["Kerberos", "Certificate"] = "Kerberos"
    port: int = 8083


class PartialProtectionSettings(_Frozen):
    """Some of the settings (the ones a Set-VMReplication changed, to put back)."""

    frequency: int | None = None
    recovery_history: int | None = None
    vss_hours: int | None = None
    compression: bool | None = None
    authentication: Literal["Kerberos", "Certificate"] | None = None
    port: int | None = None


class RemoveReplication(_Undo):
    """Remove-VMReplication on both ends of a relationship protection enabled."""

    action: Literal["remove_replication"] = "remove_replication"
    vm: str
    replica_host: str


class RestoreReplicationSettings(_Undo):
    """Set-VMReplication back to the settings found before a reconcile."""

    action: Literal["set_replication"] = "set_replication"
    vm: str
    settings: PartialProtectionSettings


UndoRecord = Annotated[
    StopTestFailover
    | CancelFailover
    | CancelPrepare
    | StartVm
    | StopVm
    | RestoreNetwork
    | RestoreDns
    | UndoScript
    | RemoveReplication
    | RestoreReplicationSettings,
    Field(discriminator="action"),
]
_UNDO: TypeAdapter[UndoRecord] = TypeAdapter(UndoRecord)


def undo_record(data: UndoRecord | Mapping[str, Any]) -> UndoRecord:
    """An undo record from its JSON (a model is returned as it is)."""
    if isinstance(data, BaseModel):
        return data
    try:
        return _UNDO.validate_python(dict(data))
    except ValidationError as exc:
        raise InvalidStepInput(f"undo record {dict(data)!r}: {_first_problem(exc)}") from None


def undo_json(undo: UndoRecord | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """An undo record as the store keeps it (JSON with its ``action``), or None."""
    if undo is None:
        return None
    return undo_record(undo).model_dump(mode="json")


# --- step inputs -----------------------------------------------------------------------------


class ShutdownPrimaryInput(_Frozen):
    """Stop-VM on the primary; ``best_effort`` (unplanned): a failure is only a warning."""

    kind: Literal["shutdown_primary"] = "shutdown_primary"
    best_effort: bool = False
    timeout: float = 600.0


class PrepareFailoverInput(_Frozen):
    """Start-VMFailover -Prepare on the primary."""

    kind: Literal["prepare_failover"] = "prepare_failover"


class FailoverInput(_Frozen):
    """Start-VMFailover on the replica, to ``recovery_point`` (None: the latest)."""

    kind: Literal["failover"] = "failover"
    recovery_point: str | None = None


class TestFailoverInput(_Frozen):
    """Start-VMFailover -AsTest on the replica."""

    __test__ = False  # not a test class, whatever pytest thinks of its name
    kind: Literal["test_failover"] = "test_failover"


class ReverseInput(_Frozen):
    """Set-VMReplication -Reverse; the reversed relationship must point at ``replica_server``."""

    kind: Literal["reverse"] = "reverse"
    replica_server: str | None = None


class ConnectNetworkInput(_Frozen):
    """Connect-VMNetworkAdapter to ``switch`` (None: an unmapped network, left as it is).

    ``adapters``: for a VM on several networks, the switch of each adapter in the order the
    VM lists its networks (None: that network is unmapped and its adapter left unconnected);
    empty for a VM on one network, whose adapters all go to ``switch``.
    """

    kind: Literal["connect_network"] = "connect_network"
    switch: str | None = None
    adapters: tuple[str | None, ...] = ()


class StartVmInput(_Frozen):
    """Start-VM after ``start_delay`` seconds; wait up to ``timeout`` for Running."""

    kind: Literal["start_vm"] = "start_vm"
    start_delay: float = 0.0
    timeout: float = 300.0


class WaitIpInput(_Frozen):
    """Poll Hyper-V or VMM (``vmm``: its server) until an address in ``subnets`` appears."""

    kind: Literal["wait_ip"] = "wait_ip"
    subnets: tuple[str, ...] = ()
    source: Literal["hyperv", "vmm"] = "hyperv"
    timeout: float = 600.0
    vmm: str | None = None


class UpdateDnsInput(_Frozen):
    """Switch ``records`` (each zone's target in ``zones``) to the address WAIT_IP found,
    or to ``addresses`` when given."""

    kind: Literal["update_dns"] = "update_dns"
    records: tuple[DnsRecordInput, ...] = ()
    zones: dict[str, ZoneTarget] = Field(default_factory=dict)
    addresses: tuple[str, ...] | None = None

    @model_validator(mode="before")
    @classmethod
    def _zone_from_key(cls, data: Any) -> Any:
        # a zone target given as JSON is named by its key in ``zones``
        if isinstance(data, Mapping) and isinstance(data.get("zones"), Mapping):
            zones = {
                name: {"zone": name, **target} if isinstance(target, Mapping) else target
                for name, target in data["zones"].items()
            }
            return {**data, "zones": zones}
        return data


class RestoreDnsInput(_Frozen):
    """Put back the snapshots an UPDATE_DNS captured (a test's cleanup)."""

    kind: Literal["restore_dns"] = "restore_dns"
    snapshots: tuple[DnsSnapshot, ...] = ()


class TestCleanupInput(_Frozen):
    """Stop-VMFailover on the replica: deletes the test VM."""

    __test__ = False
    kind: Literal["test_cleanup"] = "test_cleanup"


class CommitInput(_Frozen):
    """Complete-VMFailover."""

    kind: Literal["commit"] = "commit"


class CancelFailoverInput(_Frozen):
    """Stop-VMFailover on an uncommitted failover."""

    kind: Literal["cancel_failover"] = "cancel_failover"


class SetAsReplicaInput(_Frozen):
    """Set-VMReplication -AsReplica on the old primary (shut down first, within ``timeout``)."""

    kind: Literal["set_as_replica"] = "set_as_replica"
    timeout: float = 600.0


class ReverseToInput(_Frozen):
    """Set-VMReplication -Reverse -ReplicaServerName ``replica_server``."""

    kind: Literal["reverse_to"] = "reverse_to"
    replica_server: str = Field(min_length=1)


class StartInitialReplicationInput(_Frozen):
    """Start-VMInitialReplication on the new primary."""

    kind: Literal["start_initial_replication"] = "start_initial_replication"


class ScriptInput(_Frozen):
    """A plan's script: its text, parameters, timeout, optional undo script and name."""

    kind: Literal["script"] = "script"
    script: str = ""
    file: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    timeout: float = 600.0
    undo: str | None = None
    name: str | None = None
    rerun_on_redelivery: bool = False


class HealthCheckInput(_Frozen):
    """Running and replication health not Critical, polled up to ``timeout`` seconds."""

    kind: Literal["health_check"] = "health_check"
    timeout: float = 0.0


class ManualInput(_Frozen):
    """A gate the engine holds; never executed by a worker."""

    kind: Literal["manual"] = "manual"


class CompensateInput(_Frozen):
    """Run ``undo``, the undo record of step ``of`` (a step of kind ``of_kind``)."""

    kind: Literal["compensate"] = "compensate"
    undo: UndoRecord
    of: str = ""
    of_kind: str = ""


class EnableReplicationInput(_Frozen):
    """Enable-VMReplication toward ``replica_host`` with ``settings``; the replica stored under
    ``storage_classification`` (a folder of the Replica server's default location)."""

    kind: Literal["enable_replication"] = "enable_replication"
    replica_host: str = Field(min_length=1)
    settings: ProtectionSettings
    storage_classification: str | None = None


class InitialReplicationInput(_Frozen):
    """Initial replication by ``method``; waits up to ``timeout`` s for both ends to replicate."""

    kind: Literal["initial_replication"] = "initial_replication"
    replica_host: str = Field(min_length=1)
    method: Literal["network", "scheduled", "offline"] = "network"
    start_time: str | None = None
    export_path: str | None = None
    import_path: str | None = None
    timeout: float = 6 * 3600.0


class SetReplicationInput(_Frozen):
    """Set-VMReplication to ``settings`` (only the ones that differ are sent)."""

    kind: Literal["set_replication"] = "set_replication"
    settings: PartialProtectionSettings


class RemoveReplicationInput(_Frozen):
    """Remove-VMReplication on the primary (the step's host) and on ``replica_host``."""

    kind: Literal["remove_replication"] = "remove_replication"
    replica_host: str = ""


class DeleteReplicaInput(_Frozen):
    """Remove-VM -Force of the replica (the step's VM on the step's host)."""

    kind: Literal["delete_replica"] = "delete_replica"


StepInput = Annotated[
    ShutdownPrimaryInput
    | PrepareFailoverInput
    | FailoverInput
    | TestFailoverInput
    | ReverseInput
    | ConnectNetworkInput
    | StartVmInput
    | WaitIpInput
    | UpdateDnsInput
    | RestoreDnsInput
    | TestCleanupInput
    | CommitInput
    | CancelFailoverInput
    | SetAsReplicaInput
    | ReverseToInput
    | StartInitialReplicationInput
    | ScriptInput
    | HealthCheckInput
    | ManualInput
    | CompensateInput
    | EnableReplicationInput
    | InitialReplicationInput
    | SetReplicationInput
    | RemoveReplicationInput
    | DeleteReplicaInput,
    Field(discriminator="kind"),
]
_INPUT: TypeAdapter[StepInput] = TypeAdapter(StepInput)


def step_input(kind: str, data: Mapping[str, Any] | None = None) -> StepInput:
    """The input of a step of ``kind`` from its JSON (no JSON: every field's default).

    Raises :class:`InvalidStepInput` naming the field when the JSON does not fit.
    """
    fields = dict(data or {})
    stored_kind = fields.get("kind")
    if stored_kind is not None and stored_kind != kind:
        # a compensation step stored before inputs were typed: "kind" was the undone step's
        fields["of_kind"] = fields.pop("kind")
    fields["kind"] = kind
    try:
        return _INPUT.validate_python(fields)
    except ValidationError as exc:
        raise InvalidStepInput(f"{kind} step input: {_first_problem(exc)}") from None


def input_json(value: StepInput) -> dict[str, Any]:
    """A step input as JSON, without its ``kind`` (the step carries it)."""
    return value.model_dump(mode="json", exclude={"kind"})


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "input"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {error['msg']}{more}"
