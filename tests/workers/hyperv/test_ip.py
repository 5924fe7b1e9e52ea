"""wait_for_ip polls with exponential backoff until an address in the subnets appears."""

from __future__ import annotations

import ipaddress

import pytest

from plans.errors import TransientError
from workers.errors import AuthenticationError, RemoteTransientError
from workers.hyperv.hyperv import HyperVHost
from workers.hyperv.ip import HyperVIpSource, IpTimeout, VmmIpSource, in_subnets, wait_for_ip
from workers.hyperv.vmm import VmmServer
from workers.powershell import PSResult

from .doubles import FakeClock, FakeRunner, output


def adapters(*ips: str) -> PSResult:
    return output({"Name": "nic", "SwitchName": "test-got", "Id": "x", "IPAddresses": list(ips)})


def test_polls_until_the_guest_reports_an_address(runner: FakeRunner, clock: FakeClock) -> None:
    runner.on(
        "Get-VMNetworkAdapter",
        adapters(),
        adapters(),
        adapters("169.254.3.4"),
        adapters("fe80::1", "10.99.1.11"),
    )
    source = HyperVIpSource(HyperVHost(runner, "hv-got-1"))
    got = wait_for_ip(
        source,
        "sql-01 - Test",
        ["10.99.0.0/16"],
        timeout=60,
        initial_interval=1,
        max_interval=3,
        clock=clock,
        sleep=clock.sleep,
    )
    assert got == "10.99.1.11"
    # a tenth of the time waited, at least initial_interval: the link-local and IPv6 reads
    # before the right address do not end the wait
    assert clock.sleeps == [1, 1, 1]


def test_ipv6_subnet_and_zone_index() -> None:
    assert in_subnets("fd00:20::11%12", [ipaddress.ip_network("fd00:20::/64")])
    assert not in_subnets("10.20.1.11", [ipaddress.ip_network("fd00:20::/64")])
    assert not in_subnets("not-an-ip", [ipaddress.ip_network("10.0.0.0/8")])


def test_timeout_names_vm_host_subnets_and_what_was_seen(
    runner: FakeRunner, clock: FakeClock
) -> None:
    runner.on("Get-VMNetworkAdapter", adapters("10.10.1.11"))
    source = HyperVIpSource(HyperVHost(runner, "hv-got-1"))
    with pytest.raises(IpTimeout) as info:
        wait_for_ip(
            source,
            "sql-01",
            ["10.20.0.0/16"],
            timeout=10,
            initial_interval=4,
            max_interval=8,
            clock=clock,
            sleep=clock.sleep,
        )
    err = info.value
    assert isinstance(err, TransientError)
    assert (err.vm, err.host, err.seen) == ("sql-01", "hv-got-1", ["10.10.1.11"])
    assert "10.20.0.0/16" in str(err) and "10.10.1.11" in str(err)
    assert clock.sleeps == [4, 4, 2]  # the last wait is cut to the deadline
    assert clock.now == 10


def test_transient_poll_errors_are_tolerated_permanent_ones_raised(
    runner: FakeRunner, clock: FakeClock
) -> None:
    runner.on("Get-VMNetworkAdapter", RemoteTransientError("reset"), adapters("10.20.1.11"))
    source = HyperVIpSource(HyperVHost(runner, "hv-got-1"))
    assert (
        wait_for_ip(source, "sql-01", ["10.20.0.0/16"], clock=clock, sleep=clock.sleep)
        == "10.20.1.11"
    )
    failing = FakeRunner().on("Get-VMNetworkAdapter", AuthenticationError("rejected"))
    with pytest.raises(AuthenticationError):
        wait_for_ip(
            HyperVIpSource(HyperVHost(failing, "hv-got-1")),
            "sql-01",
            ["10.20.0.0/16"],
            clock=clock,
            sleep=clock.sleep,
        )


def test_vmm_source_follows_adapters_to_granted_addresses(
    runner: FakeRunner, clock: FakeClock
) -> None:
    runner.on(
        "Get-SCVirtualMachine",
        output(),  # VMM has not refreshed yet
        output(
            {
                "Name": "web-01",
                "ID": "old",
                "HostName": "hv-sto-1",
                "Status": "Running",
                "VirtualNetworkAdapters": [{"ID": "nic-old"}],
            },
            {
                "Name": "web-01",
                "ID": "new",
                "HostName": "hv-got-1",
                "Status": "Running",
                "VirtualNetworkAdapters": [{"ID": "nic-new"}],
            },
        ),
    )
    runner.on(
        "Get-SCIPAddress",
        lambda params, _s: output(
            {
                "Address": {"nic-new": "10.20.3.31", "nic-old": "10.10.3.31"}[
                    params["GrantToObjectID"]
                ]
            }
        ),
    )
    source = VmmIpSource(VmmServer(runner, "vmm-got"), prefer_host="hv-got-1")
    assert (
        wait_for_ip(source, "web-01", ["10.20.0.0/16"], clock=clock, sleep=clock.sleep)
        == "10.20.3.31"
    )
    assert [c.parameters for c in runner.calls if c.cmdlet == "Get-SCIPAddress"] == [
        {"GrantToObjectID": "nic-new"}
    ]


def test_no_subnets_is_a_programming_error(runner: FakeRunner) -> None:
    with pytest.raises(ValueError):
        wait_for_ip(HyperVIpSource(HyperVHost(runner, "h")), "vm", [])
