"""The SCRIPT executor: a plan's PowerShell action on a site's VMM/management host.

Script text is the operator's; it runs through ``runner.run_script`` with its parameters as
real parameters (no string building). A terminating error, an error record or a timeout
raises :class:`ScriptFailed` (permanent: re-running a half-run script is the operator's
call); the engine then applies the action's ``on_error`` policy.
"""

from __future__ import annotations

import json
import time
from typing import Any

from plans.errors import TransientError
from workers.errors import CmdletFailed
from workers.executors.base import host_of, input_of
from workers.executors.context import StepContext
from workers.executors.errors import ScriptFailed, StepParamsError
from workflows.inputs import ScriptInput, UndoScript
from workflows.steps import StepOutcome, StepSpec


def output_lines(output: list[dict[str, Any]]) -> list[str]:
    """Pipeline output as text lines: bare values as text, objects as compact JSON."""
    lines: list[str] = []
    for item in output:
        if set(item) == {"Value"}:
            lines.append("" if item["Value"] is None else str(item["Value"]))
        else:
            lines.append(json.dumps(item, default=str, sort_keys=True))
    return lines


def script(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """Run the input's ``script`` with its ``parameters`` within its ``timeout``."""
    host = host_of(spec)
    params = input_of(spec, ScriptInput)
    text = params.script
    if not text.strip():
        raise StepParamsError(f"step {spec.key}: script action has no script text; fix the plan")
    parameters, timeout = params.parameters, params.timeout
    name = params.name or spec.key
    runner = ctx.runner(host)
    started = time.monotonic()
    try:
        result = runner.run_script(text, parameters, timeout=timeout)
    except CmdletFailed as exc:
        raise ScriptFailed(
            f"script {name!r} failed on {host}: {exc}; fix the script or its target, then "
            "resume the run"
        ) from exc
    except TransientError as exc:
        # The runner stops a pipeline that outlives its timeout and reports that as transient;
        # for an operator's script that is the script's failure, not a reason to run it again.
        if time.monotonic() - started >= timeout:
            raise ScriptFailed(
                f"script {name!r} on {host} did not finish within {timeout:g}s and was "
                "stopped; raise the action's timeout or fix the script, then resume"
            ) from exc
        raise
    lines = output_lines(result.output)
    if result.errors:
        first = result.errors[0]
        raise ScriptFailed(
            f"script {name!r} on {host} wrote an error: {first.message} "
            f"[{first.fully_qualified_error_id or 'no error id'}]; fix the script, then resume",
            output=lines,
        )
    undo = None
    if params.undo and params.undo.strip():
        undo = UndoScript(
            host=host,
            name=f"{name} (undo)",
            script=params.undo,
            parameters=parameters,
            timeout=timeout,
        )
    return StepOutcome(result={"output": lines}, undo=undo)
