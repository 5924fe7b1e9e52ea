"""The SCRIPT executor: output lines, errors as ScriptFailed, timeouts, undo scripts."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import pytest

from workers.errors import CmdletFailed, RemoteTransientError
from workers.executors import ScriptFailed, StepParamsError, run_step
from workers.powershell import PSError, PSResult
from workflows.inputs import UndoScript
from workflows.steps import StepKind

from .conftest import MakeContext
from .helpers import spec
from .world import World

DRAIN = 'param([string]$Mode)\nWrite-Output "order intake set to $Mode"'


def _echo(params: Mapping[str, Any]) -> PSResult:
    return PSResult(output=[{"Value": f"order intake set to {params['Mode']}"}, {"A": 1}])


def test_script_runs_on_the_named_host_with_its_parameters(
    world: World, make_ctx: MakeContext
) -> None:
    world.scripts[DRAIN] = _echo
    step = spec(
        StepKind.SCRIPT,
        "vmm-sto",
        vm=None,
        script=DRAIN,
        parameters={"Mode": "drain"},
        undo="Write-Output undo",
    )
    out = run_step(make_ctx(), step)
    assert out.result == {"output": ["order intake set to drain", '{"A": 1}']}
    assert world.calls[-1].host == "vmm-sto"
    assert out.undo == UndoScript(
        host="vmm-sto",
        name=f"{step.key} (undo)",
        script="Write-Output undo",
        parameters={"Mode": "drain"},
        timeout=600.0,
    )


def test_a_script_error_record_is_script_failed_with_the_output(
    world: World, make_ctx: MakeContext
) -> None:
    world.scripts["s"] = lambda p: PSResult(
        output=[{"Value": "half"}], errors=[PSError("disk full", "WriteError")], had_errors=True
    )
    with pytest.raises(ScriptFailed, match="disk full") as err:
        run_step(make_ctx(), spec(StepKind.SCRIPT, "vmm-got", vm=None, script="s", name="warm"))
    assert err.value.output == ["half"]
    assert "warm" in str(err.value) and "vmm-got" in str(err.value)


def test_a_terminating_error_and_a_timeout_are_script_failed(
    world: World, make_ctx: MakeContext
) -> None:
    world.scripts["s"] = lambda p: PSResult()
    world.faults[("vmm-got", "script")] = CmdletFailed("script failed on vmm-got: boom")
    with pytest.raises(ScriptFailed, match="boom"):
        run_step(make_ctx(), spec(StepKind.SCRIPT, "vmm-got", vm=None, script="s"))

    def outlives_its_timeout(params: Mapping[str, Any]) -> PSResult:
        time.sleep(0.02)  # the script's own run time, longer than its timeout below
        raise RemoteTransientError("script on vmm-got was stopped; will retry")

    world.scripts["slow"] = outlives_its_timeout
    with pytest.raises(ScriptFailed, match="timeout"):
        step = spec(StepKind.SCRIPT, "vmm-got", vm=None, script="slow", timeout=0.01)
        run_step(make_ctx(), step)


def test_an_unreachable_host_stays_transient(world: World, make_ctx: MakeContext) -> None:
    world.down.add("vmm-got")
    with pytest.raises(RemoteTransientError):
        run_step(make_ctx(), spec(StepKind.SCRIPT, "vmm-got", vm=None, script="s"))


def test_empty_script_text_is_a_params_error(make_ctx: MakeContext) -> None:
    with pytest.raises(StepParamsError):
        run_step(make_ctx(), spec(StepKind.SCRIPT, "vmm-got", vm=None, script="  "))
