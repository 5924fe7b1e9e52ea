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
        try:
            now = state()
        except Exception as read_error:  # the state is for the message only
            now = f"state unreadable ({type(read_error).__name__})"
        raise StepFailed(
            f"{cmdlet} for VM {spec.vm} on {host} failed ({now}): {exc}. {advice}",
            cmdlet=exc.cmdlet or cmdlet,
            host=host,
            fully_qualified_error_id=exc.fully_qualified_error_id,
        ) from exc
