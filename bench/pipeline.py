"""The engine's pure front half as the benchmarks call it: validate (load + check), compile.

Kept in one place so every benchmark measures the same calls, and so a change of the engine's
interface is fixed here once. :func:`available` says, before anything runs, whether the
engine's parts exist yet, and why not.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Compiled:
    """What compiling produced: the run object and its size in stages, units and steps."""

    run: Any
    stages: int
    units: int
    steps: int


def available() -> str | None:
    """None when validate/compile can run, else the reason they cannot."""
    try:
        bundle = importlib.import_module("plans.bundle")
        compiler = importlib.import_module("workflows.compiler")
    except Exception as exc:
        return f"the engine's modules do not import: {type(exc).__name__}: {exc}"
    missing = [
        name
        for name, module in (
            ("plans.bundle.validate", bundle),
            ("workflows.compiler.compile_run", compiler),
        )
        if not hasattr(module, name.rsplit(".", 1)[1])
    ]
    return f"missing: {', '.join(missing)}" if missing else None


def validate(paths: Sequence[Path]) -> Any:
    """``plans.bundle.validate``: read the files and their includes, check every rule.

    Returns the validation report; its ``bundle`` is None when there is an error.
    """
    from plans.bundle import validate as validate_files

    return validate_files([str(p) for p in paths])


def compile_plan(bundle: Any, plan: str, failover_type: str = "test") -> Compiled:
    """Compile ``plan`` of ``bundle`` for a run of ``failover_type`` in the failover direction."""
    from workflows.compiler import compile_run

    run = compile_run(bundle.fabric, plan, bundle.plan(plan), failover_type)
    units = [unit for stage in run.stages for unit in stage.units]
    return Compiled(run, len(run.stages), len(units), sum(len(u.steps) for u in units))
