"""A step's IP wait notices a booted guest within a fraction of a second, then backs off."""

from __future__ import annotations

from tests.workers.hyperv.doubles import FakeClock, FakeRunner, output
from workers.executors import context
from workers.hyperv.hyperv import HyperVHost
from workers.hyperv.ip import HyperVIpSource, wait_for_ip
from workers.powershell import PSResult


def adapters(*ips: str) -> PSResult:
    return output({"Name": "nic", "SwitchName": "test-got", "Id": "x", "IPAddresses": list(ips)})


def test_a_step_context_polls_every_fifth_of_a_second() -> None:
    ctx = context("run1", "test", "failover", {})
    assert ctx.poll_interval == 0.2


def test_ip_polling_starts_at_a_fifth_of_a_second_and_caps_at_three() -> None:
    runner, clock = FakeRunner(), FakeClock()
    runner.on("Get-VMNetworkAdapter", *[adapters()] * 7, adapters("10.99.1.11"))
    source = HyperVIpSource(HyperVHost(runner, "hv-got-1"))
    got = wait_for_ip(source, "sql-01 - Test", ["10.99.0.0/16"], clock=clock, sleep=clock.sleep)
    assert got == "10.99.1.11"
    assert [round(s, 3) for s in clock.sleeps] == [0.2, 0.4, 0.8, 1.6, 3.0, 3.0, 3.0]


def test_a_guest_up_after_one_second_is_seen_within_half_a_second_of_it() -> None:
    runner, clock = FakeRunner(), FakeClock()
    boot = 1.0

    def adapters_now(*_args: object) -> PSResult:
        return adapters("10.99.1.11") if clock.now >= boot else adapters()

    runner.on("Get-VMNetworkAdapter", *[adapters_now] * 10)
    source = HyperVIpSource(HyperVHost(runner, "hv-got-1"))
    wait_for_ip(source, "sql-01 - Test", ["10.99.0.0/16"], clock=clock, sleep=clock.sleep)
    assert boot <= clock.now <= boot + 0.5  # was 2 s with the old first wait
