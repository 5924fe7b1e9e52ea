"""A fake executor that records calls and can be told to fail, for engine and task tests."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from workers.errors import RemotePermanentError, RemoteTransientError
from workflows.inputs import (
    CancelFailover,
    CompensateInput,
    DnsSnapshot,
    RestoreDns,
    StopTestFailover,
    UndoRecord,
    ZoneTarget,
    undo_json,
)
from workflows.steps import HostRef, StepKind, StepOutcome, StepSpec


def _undo(spec: StepSpec) -> UndoRecord | None:
    """The undo record the real executor of ``spec`` would return (its shape, not its data)."""
    host, vm = spec.host or "", spec.vm or ""
    if spec.kind is StepKind.TEST_FAILOVER:
        return StopTestFailover(host=host, vm=vm)
    if spec.kind is StepKind.FAILOVER:
        return CancelFailover(host=host, vm=vm)
    if spec.kind is StepKind.UPDATE_DNS:
        target = ZoneTarget(zone="corp.example")
        return RestoreDns(snapshots=(DnsSnapshot(target=target, snapshot={"vm": vm}),))
    return None


class Recording:
    """A dispatcher that only remembers what it was asked to send."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def dispatch(self, run_id: str, stage: Any) -> None:
        self.sent.append((run_id, stage))


@dataclass
class FakeContext:
    run_id: str
    failover_type: str
    direction: str
    hosts: dict[str, HostRef]
    prior: dict[str, dict[str, Any]]
    attempt: int = 1


@dataclass
class FakeExecutor:
    """Succeeds unless told otherwise; ``calls`` counts (kind, vm) executions."""

    transient: dict[tuple[str, str | None], int] = field(default_factory=dict)
    permanent: set[tuple[str, str | None]] = field(default_factory=set)
    calls: Counter[tuple[str, str | None]] = field(default_factory=Counter)
    contexts: list[FakeContext] = field(default_factory=list)
    compensated: list[dict[str, Any]] = field(default_factory=list)
    block: threading.Event | None = None
    delay: float = 0.0  # seconds each step takes
    lock: threading.Lock = field(default_factory=threading.Lock)

    def context(
        self,
        run_id: str,
        failover_type: str,
        direction: str,
        hosts: dict[str, HostRef],
        prior: dict[str, dict[str, Any]] | None = None,
        *,
        attempt: int = 1,
    ) -> FakeContext:
        ctx = FakeContext(run_id, failover_type, direction, hosts, dict(prior or {}), attempt)
        with self.lock:
            self.contexts.append(ctx)
        return ctx

    def run_step(self, ctx: FakeContext, spec: StepSpec) -> StepOutcome:
        key = (spec.kind.value, spec.vm)
        if self.delay:
            time.sleep(self.delay)
        with self.lock:
            self.calls[key] += 1
            if self.transient.get(key, 0) > 0:
                self.transient[key] -= 1
                raise RemoteTransientError(f"connection reset by {spec.host}")
            if key in self.permanent:
                raise RemotePermanentError(
                    f"VM {spec.vm} on {spec.host}: Start-VMFailover refused, replication "
                    "state Error"
                )
        if isinstance(spec.params, CompensateInput):
            with self.lock:
                self.compensated.append(undo_json(spec.params.undo) or {})
            return StepOutcome(result={"undone": spec.params.of})
        if spec.kind is StepKind.WAIT_IP:
            return StepOutcome(result={"addresses": [f"10.99.0.{len(spec.vm or '')}"]}, undo=None)
        result = {"kind": spec.kind.value, "prior": sorted(ctx.prior)}
        return StepOutcome(result=result, undo=_undo(spec))

    def reset(self) -> None:
        """Forget calls and injected faults."""
        with self.lock:
            self.transient.clear()
            self.permanent.clear()
            self.calls.clear()
            self.contexts.clear()
            self.compensated.clear()

    def count(self, kind: StepKind) -> int:
        return sum(n for (k, _vm), n in self.calls.items() if k == kind.value)


def on_other_vms(bundle: Any, tag: str) -> Any:
    """``bundle`` with its pairings' primary clouds renamed by ``tag``: the same plans on VMs
    that no other run holds (a VM is held by one run at a time), for tests that run one plan
    several times at once."""
    from plans import Bundle

    pairings = {
        name: pairing.model_copy(
            update={
                "primary": pairing.primary.model_copy(
                    update={"cloud": f"{pairing.primary.cloud}-{tag}"}
                )
            }
        )
        for name, pairing in bundle.fabric.pairings.items()
    }
    fabric = bundle.fabric.model_copy(update={"pairings": pairings})
    return Bundle(fabric=fabric, plans=dict(bundle.plans))
