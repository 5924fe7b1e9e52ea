"""The benchmarks' arithmetic: the critical path counts necessary calls only, the audit's
figures catch a mutation answered twice, a spread reports every round, and the worker's
memory is read once it settles."""

from __future__ import annotations

import pytest

from bench import scale
from bench.calls import Call, CallLog
from bench.failovers import audit_figures
from bench.makespan import NECESSARY_CALLS, critical_path
from bench.overhead import spread
from bench.plans import Shape


def _log(per_vm: dict[str, list[str]]) -> CallLog:
    log = CallLog()
    clock = 0.0
    for vm, cmdlets in per_vm.items():
        for cmdlet in cmdlets:
            log.add(Call("hv-got-1", cmdlet, vm, clock, clock + 0.1))
            clock += 0.1
    return log


def test_the_critical_path_counts_the_necessary_calls_and_boot_only() -> None:
    shape = Shape(2, 1)
    reads_first = ["Get-VM", "Start-VMFailover", "Get-VM", "Connect-VMNetworkAdapter"]
    log = _log(
        {
            "vm-00000": [*reads_first, "Start-VM", "Get-VMNetworkAdapter"],
            "vm-00001": ["Start-VMFailover", "Connect-VMNetworkAdapter", "Start-VM"],
        }
    )
    figures = critical_path(shape, log, latency=0.1, boot=1.0)
    assert len(NECESSARY_CALLS["test"]) == 3
    assert figures["critical_path_s"] == 2 * (3 * 0.1 + 1.0)
    # the bound of the calls made charges the extra reads and one address read
    assert figures["made_calls_path_s"] == round((5 * 0.1 + 1.1) + (3 * 0.1 + 1.1), 3)
    assert figures["calls_before_start_vm"] == [3, 5]


def test_a_planned_failover_needs_six_calls_before_boot() -> None:
    figures = critical_path(Shape(1, 1), _log({}), latency=0.5, boot=1.0, failover_type="planned")
    assert figures["necessary_calls_before_boot"] == 6
    assert figures["critical_path_s"] == 4.0


def test_audit_figures_catch_a_mutation_answered_twice() -> None:
    entry = {"host": "hv-got-1", "cmdlet": "Start-VM", "vm": "a", "parameters": {"Name": "a"}}
    once = audit_figures([{**entry, "outcome": "ok"}], vms=1)
    assert once["mutated_once"] and once["mutating_calls_per_vm"] == 1.0
    twice = audit_figures([{**entry, "outcome": "ok"}, {**entry, "outcome": "ok"}], vms=1)
    assert not twice["mutated_once"]
    assert twice["mutated_twice"] == ["Start-VM a on hv-got-1"]


def test_a_spread_covers_every_round() -> None:
    figures = spread([1.0, 2.0, 3.0, 2.0, 2.0])
    assert figures == {"rounds": 5, "min": 1.0, "max": 3.0, "stdev": 0.71}


def test_the_worker_memory_is_read_once_it_stops_moving(monkeypatch: pytest.MonkeyPatch) -> None:
    # a run's end gives its freed memory back just after the follow loop sees it finished
    reads = iter([212.5, 186.6, 186.4, 150.0])
    monkeypatch.setattr(scale, "rss_mb", lambda pid: next(reads))
    assert scale.settled_rss_mb([1], interval=0.0) == 186.4


def test_group_figures_name_the_straggler_and_the_time_outside_the_calls() -> None:
    from bench.makespan import group_figures, outside_calls

    log = CallLog()
    for vm, start, wait in (("vm-00000", 1.0, 1.0), ("vm-00001", 1.0, 1.5)):
        log.add(Call("hv-got-1", "Start-VM", vm, start, start + 0.1))
        log.add(Call("hv-got-1", "Wait", vm, start + 0.1, start + 0.1 + wait))
    [group] = group_figures(Shape(1, 2), log)
    assert group["slowest_vm"] == "vm-00001"
    assert group["span_s"] == 1.6 and group["vm_span_max_s"] == 1.6
    assert group["straggle_s"] == round(1.6 - 1.35, 3)
    assert (group["slowest_to_start_s"], group["slowest_ip_wait_s"]) == (0.1, 1.5)
    assert outside_calls(log, started=0.5, finished=3.0) == {
        "lead_s": 0.5,
        "calls_span_s": 1.6,
        "tail_s": 0.4,
    }


def test_the_call_log_names_a_script_by_what_it_is() -> None:
    from bench.calls import recording
    from lab.hyperv.hostscripts import WAIT_FOR_ADDRESS
    from lab.objects import Command, InvokeResult

    class Lab:
        def invoke(self, host: str, commands: list[Command], **_kwargs: object) -> InvokeResult:
            return InvokeResult()

    lab = Lab()
    with recording(lab) as log:
        lab.invoke("hv-got-1", [Command(WAIT_FOR_ADDRESS, [("VMName", "a - Test")], True)])
        lab.invoke("hv-got-1", [Command("Invoke-AppCheck", [], True)])
        lab.invoke("hv-got-1", [Command("Start-VM", [("Name", "a - Test")])])
    assert [(c.cmdlet, c.vm) for c in log.calls()] == [
        ("Get-VMNetworkAdapter (wait for an address)", "a - Test"),
        ("Script", None),
        ("Start-VM", "a - Test"),
    ]
