"""Small helpers shared by the executor tests."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from workers.executors import StepContext, run_step
from workflows.steps import StepKind, StepOutcome, StepSpec

from .world import World


def spec(kind: StepKind, host: str, vm: str | None = "sql-01", **params: Any) -> StepSpec:
    """A step of ``kind`` for ``vm`` on ``host``."""
    return StepSpec(key=f"{vm}:{kind.value}", kind=kind, vm=vm, host=host, params=params)


def twice(world: World, ctx: StepContext, step: StepSpec) -> StepOutcome:
    """Run ``step`` twice, the second time as its second start (a redelivery); assert the
    second run changes nothing and calls nothing mutating."""
    first = run_step(ctx, step)
    before = len(world.mutations())
    second = run_step(replace(ctx, attempt=ctx.attempt + 1), step)
    assert world.mutations()[before:] == [], f"{step.kind} mutated on its second run"
    assert second.changed is False
    return first
