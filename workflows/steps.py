"""Steps: the unit of work the engine records and the workers execute.

The compiler turns a plan into stages of :class:`TaskUnit` s. A unit is one Celery task (one
per VM in a VM stage, one per action otherwise) carrying an ordered list of :class:`StepSpec` s,
each recorded as a row of its own so the timeline shows every cmdlet-level step. Everything in
a unit is JSON and holds no secret: endpoints travel as URLs with credential *references*.

A step's input is one frozen model per kind (:mod:`workflows.inputs`), validated when the
step is built. Workers execute a step through the executor registered for its
:class:`StepKind`; executors are idempotent (any start after a step's first reads the
replication state first and does nothing when the step's effect is already there) and return
a :class:`StepOutcome` whose
``undo`` (an undo record, :data:`~workflows.inputs.UndoRecord`) says how to compensate.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from plans.model import OnError
from workflows.inputs import (
    InvalidStepInput,
    ScriptInput,
    StepInput,
    UndoRecord,
    input_json,
    step_input,
)


class StepKind(enum.StrEnum):
    """Every kind of step a run can contain."""

    SHUTDOWN_PRIMARY = "shutdown_primary"  # Stop-VM on the primary (planned; tried in unplanned)
    PREPARE_FAILOVER = "prepare_failover"  # Start-VMFailover -Prepare on the primary
    FAILOVER = "failover"  # Start-VMFailover on the replica (optionally a recovery point)
    TEST_FAILOVER = "test_failover"  # Start-VMFailover -AsTest on the replica
    REVERSE = "reverse"  # Set-VMReplication -Reverse on the new primary
    CONNECT_NETWORK = "connect_network"  # Connect-VMNetworkAdapter to the mapped/test network
    START_VM = "start_vm"  # Start-VM and check it runs
    WAIT_IP = "wait_ip"  # poll VMM/Hyper-V until an address in the target subnet appears
    UPDATE_DNS = "update_dns"  # capture, switch and verify the VM's records
    RESTORE_DNS = "restore_dns"  # put back the records captured by UPDATE_DNS
    TEST_CLEANUP = "test_cleanup"  # Stop-VMFailover on the replica: delete "<VM> - Test"
    COMMIT = "commit"  # Complete-VMFailover
    CANCEL_FAILOVER = "cancel_failover"  # Stop-VMFailover on an uncommitted failover
    SET_AS_REPLICA = "set_as_replica"  # Set-VMReplication -AsReplica on the old primary
    REVERSE_TO = "reverse_to"  # Set-VMReplication -Reverse -ReplicaServerName (after unplanned)
    START_INITIAL_REPLICATION = "start_initial_replication"
    SCRIPT = "script"  # a plan's PowerShell action on a site's VMM/management host
    HEALTH_CHECK = "health_check"  # the VM runs and replication health is not Critical
    MANUAL = "manual"  # an operator's approval: never executed by a worker
    COMPENSATE = "compensate"  # run the undo record (params.undo) of an earlier step
    # protection runs (workflows.protection)
    ENABLE_REPLICATION = "enable_replication"  # replica storage, Enable-VMReplication
    INITIAL_REPLICATION = "initial_replication"  # start (network/scheduled/offline), wait
    SET_REPLICATION = "set_replication"  # Set-VMReplication to the profile's settings
    REMOVE_REPLICATION = "remove_replication"  # Remove-VMReplication on both ends
    DELETE_REPLICA = "delete_replica"  # Remove-VM of the replica once replication is gone


# Steps that change something outside Ferryman; the audit and compensation care about these.
MUTATING = frozenset(
    {
        StepKind.SHUTDOWN_PRIMARY,
        StepKind.PREPARE_FAILOVER,
        StepKind.FAILOVER,
        StepKind.TEST_FAILOVER,
        StepKind.REVERSE,
        StepKind.CONNECT_NETWORK,
        StepKind.START_VM,
        StepKind.UPDATE_DNS,
        StepKind.RESTORE_DNS,
        StepKind.TEST_CLEANUP,
        StepKind.COMMIT,
        StepKind.CANCEL_FAILOVER,
        StepKind.SET_AS_REPLICA,
        StepKind.REVERSE_TO,
        StepKind.START_INITIAL_REPLICATION,
        StepKind.SCRIPT,
        StepKind.ENABLE_REPLICATION,
        StepKind.INITIAL_REPLICATION,
        StepKind.SET_REPLICATION,
        StepKind.REMOVE_REPLICATION,
        StepKind.DELETE_REPLICA,
    }
)


@dataclass(frozen=True)
class HostRef:
    """How a worker reaches a host: no secret, only the credential's reference."""

    name: str
    site: str
    url: str
    auth: str
    username: str
    password_ref: str
    verify_tls: bool = True
    ca_bundle: str | None = None
    operation_timeout: float = 20.0
    connect_timeout: float = 30.0


@dataclass(frozen=True)
class StepSpec:
    """One recorded step: a stable key (unique in the run), its kind, VM, host and input.

    ``params`` is the input model of the step's kind (:mod:`workflows.inputs`), e.g.
    ``ConnectNetworkInput(switch="test-got")``. Given as a mapping (stored JSON), or left out
    (every field's default), it is validated into that model here, once; an input of another
    kind is refused. ``on_error`` ``continue``: a failure of this step is recorded but does not
    fail its unit or the run (an unplanned failover's shutdown attempt, a script with
    ``on_error: continue``).
    """

    key: str
    kind: StepKind
    vm: str | None = None
    host: str | None = None
    params: StepInput = None  # type: ignore[assignment]  # filled in by __post_init__
    on_error: OnError = OnError.STOP

    if TYPE_CHECKING:
        # what the generated __init__ accepts: __post_init__ turns a mapping into the model

        def __init__(
            self,
            key: str,
            kind: StepKind,
            vm: str | None = None,
            host: str | None = None,
            params: StepInput | Mapping[str, Any] | None = None,
            on_error: OnError | str = OnError.STOP,
        ) -> None: ...

    def __post_init__(self) -> None:
        params: Any = self.params
        if not isinstance(params, BaseModel):
            params = _input_of(self.key, self.kind, params)
        elif (given := getattr(params, "kind", None)) != self.kind:
            raise InvalidStepInput(
                f"step {self.key}: a {given} input cannot drive a {self.kind} step"
            )
        object.__setattr__(self, "params", params)
        if type(self.on_error) is not OnError:
            object.__setattr__(self, "on_error", OnError(self.on_error))

    def to_json(self, inputs: dict[int, dict[str, Any]] | None = None) -> dict[str, Any]:
        """The step as plain data (its input without the kind it repeats).

        ``inputs`` (input object id -> its JSON): inputs already dumped by the caller, which
        keeps them alive meanwhile, so one input shared by many steps is dumped once.
        """
        if inputs is None:
            params = input_json(self.params)
        else:
            dumped = inputs.get(id(self.params))
            if dumped is None:
                dumped = inputs[id(self.params)] = input_json(self.params)
            params = dumped
        return {
            "key": self.key,
            # _value_ is what .value returns, without the enum property's lookup (30,000 steps)
            "kind": self.kind._value_,
            "vm": self.vm,
            "host": self.host,
            "params": params,
            "on_error": self.on_error._value_,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepSpec:
        """The inverse of :meth:`to_json`."""
        return cls(**{**data, "kind": StepKind(data["kind"])})


def _input_of(key: str, kind: StepKind, params: Mapping[str, Any] | None) -> StepInput:
    try:
        return step_input(kind.value, params)
    except InvalidStepInput as exc:
        raise InvalidStepInput(f"step {key}: {exc}; recompile the run") from None


@dataclass(frozen=True)
class TaskUnit:
    """One Celery task: its registered name, the queue it goes to and its steps in order."""

    key: str
    task: str
    queue: str
    steps: tuple[StepSpec, ...]
    vm: str | None = None
    group: str | None = None

    def to_json(self, inputs: dict[int, dict[str, Any]] | None = None) -> dict[str, Any]:
        """The unit as plain data (what a task message carries; ``inputs``: see
        :meth:`StepSpec.to_json`)."""
        return {
            "key": self.key,
            "task": self.task,
            "queue": self.queue,
            "steps": [step.to_json(inputs) for step in self.steps],
            "vm": self.vm,
            "group": self.group,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TaskUnit:
        """The inverse of :meth:`to_json`."""
        steps = tuple(StepSpec.from_json(step) for step in data["steps"])
        return cls(**{**data, "steps": steps})


@dataclass
class StepOutcome:
    """What an executor did: a result for the timeline and how to undo it (or None)."""

    result: dict[str, Any] = field(default_factory=dict)
    undo: UndoRecord | None = None
    changed: bool = True  # False when the step found its effect already there


def reruns_after_a_crash(spec: StepSpec) -> bool:
    """Whether a step found running from a dead worker's delivery may simply run again.

    Hyper-V and DNS steps started again read the state first and do nothing when their
    effect is there; an operator's script cannot be known to be safe twice unless the plan
    says so.
    """
    params = spec.params
    return not isinstance(params, ScriptInput) or params.rerun_on_redelivery


def interrupted_script(run_id: str, spec: StepSpec, attempts: int) -> str:
    """The failure of a script whose worker died while it ran: what to check, what to run."""
    name = (spec.params.name if isinstance(spec.params, ScriptInput) else None) or spec.key
    host = spec.host or "its host"
    return (
        f"the worker died while script {name!r} ran on {host} (attempt {attempts}); it may or "
        f"may not have completed, so it was not started again. Check on {host} what it did, "
        f"then 'ferryman runs resume {run_id}' runs it again, 'ferryman runs skip {run_id}' "
        f"goes on without it (or 'ferryman runs compensate {run_id}' undoes the run). A "
        "script safe to run twice can say rerun_on_redelivery: true in the plan"
    )


# Task names (Flower shows these; kwargs carry run id, group, VM and step keys).
TASK_VM = "ferryman.vm.steps"
TASK_SCRIPT = "ferryman.script.run"
TASK_ADVANCE = "ferryman.engine.advance"
TASK_DRILLS = "ferryman.drills.tick"  # sent by Celery beat every DRILL_TICK seconds
DRILL_TICK = 60.0


def site_queue(site: str) -> str:
    """The queue a site's workers consume."""
    return f"ferryman.site.{site}"


ENGINE_QUEUE = "ferryman.engine"
RUNS_QUEUE = "ferryman.runs"
