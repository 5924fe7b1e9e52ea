"""What every executor shares: its signature, its input, messages and the test VM's name.

A step function is ``(StepContext, StepSpec) -> StepOutcome``; it reads the step's input
through :func:`input_of`, as the model of its kind. Errors it raises name the VM, the host,
the cmdlet and the replication state it found, and say what to do next.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from pydantic import BaseModel

from workers.errors import CmdletFailed
from workers.executors.context import StepContext
from workers.executors.errors import StepFailed, StepParamsError
from workers.hyperv.hyperv import TEST_SUFFIX, name_of_test_vm
from workflows.steps import StepKind, StepOutcome, StepSpec

StepFunction = Callable[[StepContext, StepSpec], StepOutcome]
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

# Steps that act on the test VM (not the replica) in a test run.
_TEST_VM_KINDS = frozenset(
    {StepKind.CONNECT_NETWORK, StepKind.START_VM, StepKind.WAIT_IP, StepKind.HEALTH_CHECK}
)


def is_test_vm(name: str) -> bool:
    """Whether ``name`` is a test failover's VM (``name_of_test_vm`` of some VM)."""
    return name.endswith(TEST_SUFFIX)


def input_of(spec: StepSpec, model: type[M]) -> M:
    """The step's input as ``model``; another model means a step handed to the wrong executor."""
    if not isinstance(spec.params, model):
        raise StepParamsError(
            f"step {spec.key} ({spec.kind}) carries a {type(spec.params).__name__}, not the "
            f"{model.__name__} its executor reads; recompile the run"
        )
    return spec.params


def leftover_cleanup(vm: str, host: str) -> str:
    """How an operator removes a test VM an earlier test failover left on ``host``."""
    return (
        "`ferryman runs cleanup RUN` for the test run that made it (`ferryman runs list`), "
        f"or Stop-VMFailover -VMName {vm} on {host}"
    )


def vm_of(spec: StepSpec) -> str:
    """The step's VM; a VM step without one is a compiler bug."""
    if not spec.vm:
        raise StepParamsError(f"step {spec.key} ({spec.kind}) names no VM; recompile the run")
    return spec.vm


def host_of(spec: StepSpec) -> str:
    """The host the step runs on."""
    if not spec.host:
        raise StepParamsError(f"step {spec.key} ({spec.kind}) names no host; recompile the run")
    return spec.host


def target_vm(ctx: StepContext, spec: StepSpec) -> str:
    """The VM the step acts on: the test VM in a test run, or the VM."""
    vm = vm_of(spec)
    if ctx.failover_type == "test" and spec.kind in _TEST_VM_KINDS:
        return name_of_test_vm(vm)
    return vm


@contextmanager
def refused_as_step_error(
    spec: StepSpec, host: str, cmdlet: str, state: Callable[[], str], advice: str
) -> Iterator[None]:
    """Turn a cmdlet's terminating error into :class:`StepFailed` with the VM's current state."""
    try:
        yield
    except CmdletFailed as exc:
        raise step_failed(spec, host, cmdlet, exc, state, advice) from exc


def step_failed(
    spec: StepSpec,
    host: str,
    cmdlet: str,
    exc: CmdletFailed,
    state: Callable[[], str],
    advice: str,
) -> StepFailed:
    """The :class:`StepFailed` for a cmdlet the host refused, with the VM's state now."""
    try:
        now = state()
    except Exception as read_error:  # the state is for the message only
        now = f"state unreadable ({type(read_error).__name__})"
    return StepFailed(
        f"{cmdlet} for VM {spec.vm} on {host} failed ({now}): {exc}. {advice}",
        cmdlet=exc.cmdlet or cmdlet,
        host=host,
        fully_qualified_error_id=exc.fully_qualified_error_id,
    )


def first_start(ctx: StepContext) -> bool:
    """Whether no earlier start of the step is recorded (no retry, redelivery or resume).

    Only then may a step act without reading first: nothing of this run can have done its
    work yet, and a host that refuses the action is read afterwards, to say why.
    """
    return ctx.attempt <= 1


def act_first(
    ctx: StepContext,
    action: Callable[[], T],
    acted: Callable[[T], StepOutcome],
    checked: Callable[[CmdletFailed | None], StepOutcome],
) -> StepOutcome:
    """A step's first start acts at once (``acted`` makes the outcome of what ``action``
    returned); a later start, or a first one the host refused, goes through ``checked``,
    which reads the state first and acts only on a later start (given the refusal, it
    explains it: effect already there, wrong state, or the refusal itself)."""
    if not first_start(ctx):
        return checked(None)
    try:
        done = action()
    except CmdletFailed as refused:
        return checked(refused)
    return acted(done)


def act_checked(
    spec: StepSpec,
    host: str,
    cmdlet: str,
    state: Callable[[], str],
    advice: str,
    action: Callable[[], T],
    refused: CmdletFailed | None,
) -> T:
    """Run ``action`` now that the state allows it, or, when a first start's ``refused`` it
    already, raise that refusal as :class:`StepFailed` (never a second try unread)."""
    if refused is not None:
        raise step_failed(spec, host, cmdlet, refused, state, advice) from refused
    with refused_as_step_error(spec, host, cmdlet, state, advice):
        return action()
