"""wait_for_ip: the host waits for a Hyper-V guest's address; VMM's addresses are polled."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from plans.errors import TransientError
from workers.errors import AuthenticationError, CmdletFailed, RemoteTransientError
from workers.hyperv import ip as ip_module
from workers.hyperv.hyperv import WAIT_FOR_ADDRESS_SCRIPT, HyperVHost
from workers.hyperv.ip import HyperVIpSource, IpTimeout, VmmIpSource, in_subnets, wait_for_ip
from workers.hyperv.vmm import VmmServer
from workers.powershell import PSResult

from .doubles import FakeClock, FakeRunner, output


def adapters(*ips: str) -> PSResult:
    return output({"Name": "nic", "SwitchName": "test-got", "Id": "x", "IPAddresses": list(ips)})


class Polled:
    """A source that can only be read (as VMM's is): each read answers the next list."""

    host = "vmm-got"

    def __init__(self, *answers: list[str] | BaseException) -> None:
        self.answers = list(answers)

    def addresses(self, vm: str) -> list[str]:
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer


def test_polls_until_the_guest_reports_an_address(clock: FakeClock) -> None:
    source = Polled([], [], ["169.254.3.4"], ["fe80::1", "10.99.1.11"])
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


def test_timeout_names_vm_host_subnets_and_what_was_seen(clock: FakeClock) -> None:
    source = Polled(["10.10.1.11"])
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
    assert (err.vm, err.host, err.seen) == ("sql-01", "vmm-got", ["10.10.1.11"])
    assert "10.20.0.0/16" in str(err) and "10.10.1.11" in str(err)
    assert clock.sleeps == [4, 4, 2]  # the last wait is cut to the deadline
    assert clock.now == 10


def test_transient_poll_errors_are_tolerated_permanent_ones_raised(clock: FakeClock) -> None:
    source = Polled(RemoteTransientError("reset"), ["10.20.1.11"])
    assert (
        wait_for_ip(source, "sql-01", ["10.20.0.0/16"], clock=clock, sleep=clock.sleep)
        == "10.20.1.11"
    )
    with pytest.raises(AuthenticationError):
        wait_for_ip(
            Polled(AuthenticationError("rejected")),
            "sql-01",
            ["10.20.0.0/16"],
            clock=clock,
            sleep=clock.sleep,
        )


# --- the host-side wait (Hyper-V) --------------------------------------------------------------


def waits(runner: FakeRunner) -> list[dict[str, object]]:
    """The parameters of every host-side wait the runner was sent."""
    return [c.parameters for c in runner.calls if c.cmdlet == "<script>"]


def test_the_host_waits_and_a_link_local_address_is_passed_back_as_known(
    runner: FakeRunner, clock: FakeClock
) -> None:
    runner.on("<script>", adapters("fe80::1"), adapters("fe80::1", "10.99.1.11"))
    source = HyperVIpSource(HyperVHost(runner, "hv-got-1"))
    got = wait_for_ip(
        source, "sql-01 - Test", ["10.99.0.0/16"], timeout=60, clock=clock, sleep=clock.sleep
    )
    assert got == "10.99.1.11"
    first, second = waits(runner)
    assert first == {
        "VMName": "sql-01 - Test",
        "TimeoutMs": 20_000,
        "PollMs": 50,
        "MaxPollMs": 3000,
        "WaitedMs": 0,
    }
    assert second["Known"] == ["fe80::1"]
    assert [c.cmdlet for c in runner.calls] == ["<script>", "<script>"]  # no reads in between
    assert clock.sleeps == []  # the host waited, not the client


def test_the_script_is_fixed_text_and_values_travel_as_parameters(runner: FakeRunner) -> None:
    seen: list[tuple[str, dict[str, Any], float | None]] = []

    class Recording(FakeRunner):
        def run_script(
            self,
            script: str,
            parameters: Mapping[str, Any] | None = None,
            *,
            timeout: float | None = None,
        ) -> PSResult:
            seen.append((script, dict(parameters or {}), timeout))
            return adapters("10.99.1.11")

    host = HyperVHost(Recording(), "hv-got-1")
    host.wait_for_adapter_addresses("app[1]; $(evil)", timeout=1)
    [(script, params, timeout)] = seen
    assert script == WAIT_FOR_ADDRESS_SCRIPT
    assert params["VMName"] == "app`[1`]; $(evil)"  # a literal name, never a pattern
    assert timeout is not None and timeout > 1  # the call outlasts the wait it asks for
    assert "evil" not in WAIT_FOR_ADDRESS_SCRIPT and "app" not in WAIT_FOR_ADDRESS_SCRIPT
    assert all(" " <= ch <= "~" for ch in WAIT_FOR_ADDRESS_SCRIPT)  # one plain line


def test_a_long_wait_is_asked_for_in_slices_then_times_out(
    runner: FakeRunner, clock: FakeClock
) -> None:
    def nothing_yet(params: dict[str, object], _switches: tuple[str, ...]) -> PSResult:
        clock.now += int(params["TimeoutMs"]) / 1000  # type: ignore[call-overload]
        return adapters()

    runner.on("<script>", nothing_yet)
    source = HyperVIpSource(HyperVHost(runner, "hv-got-1"))
    with pytest.raises(IpTimeout) as info:
        wait_for_ip(source, "sql-01", ["10.20.0.0/16"], timeout=50, clock=clock, sleep=clock.sleep)
    assert [(w["TimeoutMs"], w["WaitedMs"]) for w in waits(runner)] == [
        (20_000, 0),
        (20_000, 20_000),
        (10_000, 40_000),
    ]
    assert info.value.seen == [] and clock.now == 50


def test_a_timeout_of_zero_is_one_look(runner: FakeRunner, clock: FakeClock) -> None:
    runner.on("<script>", adapters("10.10.1.11"))
    source = HyperVIpSource(HyperVHost(runner, "hv-got-1"))
    with pytest.raises(IpTimeout):
        wait_for_ip(source, "sql-01", ["10.20.0.0/16"], timeout=0, clock=clock, sleep=clock.sleep)
    assert [w["TimeoutMs"] for w in waits(runner)] == [0]


def test_a_failed_wait_is_tried_again_after_a_pause_a_refused_one_raised(
    runner: FakeRunner, clock: FakeClock
) -> None:
    runner.on("<script>", RemoteTransientError("reset"), adapters("10.20.1.11"))
    source = HyperVIpSource(HyperVHost(runner, "hv-got-1"))
    got = wait_for_ip(
        source, "sql-01", ["10.20.0.0/16"], initial_interval=0.2, clock=clock, sleep=clock.sleep
    )
    assert got == "10.20.1.11" and clock.sleeps == [0.2]
    missing = CmdletFailed(
        'script failed on hv-got-1: Hyper-V was unable to find a virtual machine with name "x".'
        " [InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVMNetworkAdapter]",
        host="hv-got-1",
        cmdlet="script",
        fully_qualified_error_id="InvalidParameter,Microsoft.HyperV.PowerShell.Commands."
        "GetVMNetworkAdapter",
        category="InvalidArgument",
    )
    refusing = HyperVIpSource(HyperVHost(FakeRunner().on("<script>", missing), "hv-got-1"))
    with pytest.raises(CmdletFailed) as info:
        wait_for_ip(refusing, "x", ["10.20.0.0/16"], clock=clock, sleep=clock.sleep)
    assert info.value.cmdlet == "Get-VMNetworkAdapter (wait for an address)"
    assert str(info.value).startswith("Get-VMNetworkAdapter (wait for an address) failed on")
    assert info.value.fully_qualified_error_id.startswith("InvalidParameter,")


def test_a_host_that_answers_at_once_with_nothing_new_is_not_called_in_a_loop(
    runner: FakeRunner, clock: FakeClock
) -> None:
    runner.on("<script>", adapters())  # returns at once, never waits
    source = HyperVIpSource(HyperVHost(runner, "hv-got-1"))
    with pytest.raises(IpTimeout):
        wait_for_ip(
            source,
            "sql-01",
            ["10.20.0.0/16"],
            timeout=10,
            initial_interval=1,
            max_interval=3,
            clock=clock,
            sleep=clock.sleep,
        )
    assert len(waits(runner)) == len(clock.sleeps) + 1 <= 11


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
    assert runner.calls == []


@pytest.fixture
def forget_scriptless_endpoints() -> Iterator[None]:
    yield
    ip_module._SCRIPTLESS_ENDPOINTS.clear()


def test_a_host_that_refuses_scripts_is_polled_from_then_on(
    runner: FakeRunner, clock: FakeClock, forget_scriptless_endpoints: None
) -> None:
    refused = CmdletFailed(
        "The syntax is not supported by this runspace.",
        host="hv-got-1",
        cmdlet="script",
        fully_qualified_error_id="ScriptsNotAllowed",
        category="ParserError",
    )
    runner.on("<script>", refused)
    runner.on("Get-VMNetworkAdapter", adapters(), adapters(), adapters("10.99.1.11"))
    source = HyperVIpSource(HyperVHost(runner, "hv-got-1"))
    got = wait_for_ip(
        source, "sql-01 - Test", ["10.99.0.0/16"], timeout=60, clock=clock, sleep=clock.sleep
    )
    assert got == "10.99.1.11"
    assert [c.cmdlet for c in runner.calls] == ["<script>"] + ["Get-VMNetworkAdapter"] * 3
    assert len(clock.sleeps) == 2  # paced as any polled source
    runner.calls.clear()
    again = wait_for_ip(
        source, "sql-01 - Test", ["10.99.0.0/16"], timeout=60, clock=clock, sleep=clock.sleep
    )
    assert again == "10.99.1.11"
    assert [c.cmdlet for c in runner.calls] == ["Get-VMNetworkAdapter"]  # not asked again


def test_any_other_refusal_of_the_wait_is_raised(
    runner: FakeRunner, clock: FakeClock, forget_scriptless_endpoints: None
) -> None:
    runner.on(
        "<script>",
        CmdletFailed(
            "Hyper-V was unable to find a virtual machine with name 'gone'.",
            host="hv-got-1",
            cmdlet="script",
            fully_qualified_error_id="InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVMNetworkAdapter",
        ),
    )
    source = HyperVIpSource(HyperVHost(runner, "hv-got-1"))
    with pytest.raises(CmdletFailed):
        wait_for_ip(source, "gone", ["10.99.0.0/16"], timeout=60, clock=clock, sleep=clock.sleep)
    assert [c.cmdlet for c in runner.calls] == ["<script>"]
    assert not ip_module._SCRIPTLESS_ENDPOINTS
