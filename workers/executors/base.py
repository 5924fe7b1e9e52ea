"""What every executor shares: its signature, param access, messages and polling.

An executor is ``(StepContext, StepSpec) -> StepOutcome``. Errors it raises name the VM, the
host, the cmdlet and the replication state it found, and say what to do next.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from workers.errors import CmdletFailed
from workers.executors.context import StepContext
from workers.executors.errors import StepFailed, StepParamsError
from workflows.steps import StepKind, StepOutcome, StepSpec

Executor = Callable[[StepContext, StepSpec], StepOutcome]
T = TypeVar("T")

TEST_SUFFIX = " - Test"
# Steps that act on the test VM (not the replica) in a test run.
_TEST_VM_KINDS = frozenset(
    {StepKind.CONNECT_NETWORK, StepKind.START_VM, StepKind.WAIT_IP, StepKind.HEALTH_CHECK}
)


def test_vm_name(vm: str) -> str:
    """The name Hyper-V gives the VM that ``Start-VMFailover -AsTest`` creates."""
    return f"{vm}{TEST_SUFFIX}"


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
    """The VM the step acts on: ``params["vm_name"]``, the test VM in a test run, or the VM."""
    explicit = spec.params.get("vm_name")
    if explicit:
        return str(explicit)
    vm = vm_of(spec)
    if ctx.failover_type == "test" and spec.kind in _TEST_VM_KINDS:
        return test_vm_name(vm)
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


def param(spec: StepSpec, name: str, kind: type[T], default: T) -> T:
    """``spec.params[name]`` checked against ``kind`` (None or missing gives ``default``)."""
    value: Any = spec.params.get(name)
    if value is None:
        return default
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)  # type: ignore[return-value]
    if not isinstance(value, kind):
        raise StepParamsError(
            f"step {spec.key}: param {name!r} must be {kind.__name__}, got {value!r}; "
            "recompile the run"
        )
    return value


def wait_until(check: Callable[[], T | None], *, timeout: float, interval: float) -> T | None:
    """Call ``check`` until it returns something not None or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found is not None:
            return found
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        time.sleep(min(interval, remaining))
