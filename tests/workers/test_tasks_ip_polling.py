"""A polled IP wait (VMM's addresses) notices a booted guest late by at most 0.2 s or a tenth
of its wait; Hyper-V's addresses are waited for on the host (``test_ip.py``)."""

from __future__ import annotations

import pytest

from tests.workers.hyperv.doubles import FakeClock, FakeRunner, output
from workers.executors import context
from workers.hyperv.hyperv import HyperVHost
from workers.hyperv.ip import HyperVIpSource, wait_for_ip
from workers.powershell import PSResult


def adapters(*ips: str) -> PSResult:
    return output({"Name": "nic", "SwitchName": "test-got", "Id": "x", "IPAddresses": list(ips)})


class Polled:
    """Hyper-V's addresses read once per poll: a source without the host-side wait, as
    VMM's is."""

    def __init__(self, runner: FakeRunner) -> None:
        self.source = HyperVIpSource(HyperVHost(runner, "hv-got-1"))
        self.host = self.source.host

    def addresses(self, vm: str) -> list[str]:
        return self.source.addresses(vm)


def test_a_step_context_polls_every_fifth_of_a_second() -> None:
    ctx = context("run1", "test", "failover", {})
    assert ctx.poll_interval == 0.2


def test_ip_polling_waits_a_fifth_of_a_second_then_a_tenth_of_the_wait_up_to_three() -> None:
    runner, clock = FakeRunner(), FakeClock()
    polls = 60
    runner.on("Get-VMNetworkAdapter", *[adapters()] * polls, adapters("10.99.1.11"))
    source = Polled(runner)
    got = wait_for_ip(source, "sql-01 - Test", ["10.99.0.0/16"], clock=clock, sleep=clock.sleep)
    assert got == "10.99.1.11"
    sleeps = [round(s, 3) for s in clock.sleeps]
    assert len(sleeps) == polls
    assert sleeps[:10] == [0.2] * 10  # the first two seconds: five reads a second
    waited = 0.0
    for pause in clock.sleeps:  # later: a tenth of the time waited so far, never above 3 s
        assert pause == pytest.approx(min(max(waited * 0.1, 0.2), 3.0))
        waited += pause
    assert sleeps[-1] == 3.0
    assert sorted(sleeps) == sleeps  # never shorter again


def test_a_slow_boot_costs_few_reads() -> None:
    runner, clock = FakeRunner(), FakeClock()
    boot = 60.0

    def adapters_now(*_args: object) -> PSResult:
        return adapters("10.99.1.11") if clock.now >= boot else adapters()

    runner.on("Get-VMNetworkAdapter", *[adapters_now] * 200)
    source = Polled(runner)
    wait_for_ip(source, "sql-01 - Test", ["10.99.0.0/16"], clock=clock, sleep=clock.sleep)
    assert len(clock.sleeps) <= 50
    assert boot <= clock.now <= boot * 1.1


def test_a_guest_up_after_one_second_is_seen_within_half_a_second_of_it() -> None:
    runner, clock = FakeRunner(), FakeClock()
    boot = 1.0

    def adapters_now(*_args: object) -> PSResult:
        return adapters("10.99.1.11") if clock.now >= boot else adapters()

    runner.on("Get-VMNetworkAdapter", *[adapters_now] * 10)
    source = Polled(runner)
    wait_for_ip(source, "sql-01 - Test", ["10.99.0.0/16"], clock=clock, sleep=clock.sleep)
    assert boot <= clock.now <= boot + 0.2  # doubling waits read at 0.2, 0.6, 1.4 s
