"""The host-side wait for a guest's address, as the lab runs it, and latency once per call."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from lab.faults import FaultInjector
from lab.hyperv.hostscripts import WAIT_FOR_ADDRESS, bind_address_wait
from lab.objects import CmdletError, Command, InvokeResult, TransportFault
from lab.topology import TopologyError
from lab.world import Lab
from tests.lab.test_domain_support import example_dict, make_lab, ok
from workers.hyperv.hyperv import WAIT_FOR_ADDRESS_SCRIPT

GOT = "hv-got-1"
TEST_VM = "sql-01 - Test"


def wait(lab: Lab, vm: str = TEST_VM, host: str = GOT, **params: Any) -> InvokeResult:
    """One call of the wait script with these parameters."""
    parameters: list[tuple[str | None, Any]] = [("VMName", vm)]
    parameters += list(params.items())
    return lab.invoke(host, [Command(WAIT_FOR_ADDRESS, parameters, is_script=True)])


def addresses(result: InvokeResult) -> list[str]:
    return [str(a) for o in result.output for a in o.properties["IPAddresses"]]


def started_test_vm() -> Lab:
    """sql-01's test VM on the test network, started on a frozen clock: no address yet."""
    lab = make_lab()
    ok(lab, GOT, "Start-VMFailover", VMName="sql-01", AsTest=True)
    ok(lab, GOT, "Connect-VMNetworkAdapter", VMName=TEST_VM, SwitchName="test-got")
    ok(lab, GOT, "Start-VM", Name=TEST_VM)
    assert (
        addresses(InvokeResult(output=ok(lab, GOT, "Get-VMNetworkAdapter", VMName=TEST_VM))) == []
    )
    return lab


def test_the_lab_runs_the_text_the_workers_send() -> None:
    assert WAIT_FOR_ADDRESS == WAIT_FOR_ADDRESS_SCRIPT


def test_the_wait_returns_when_the_guest_reports_its_address() -> None:
    lab = started_test_vm()
    got: list[InvokeResult] = []
    thread = threading.Thread(target=lambda: got.append(wait(lab, TimeoutMs=60_000, PollMs=10)))
    thread.start()
    thread.join(0.3)
    assert thread.is_alive()  # nothing to report yet: the host keeps waiting
    lab.clock.advance(60)  # the guest boots (boot_seconds 30)
    thread.join(10)  # well before the 60 s the call may wait
    assert not thread.is_alive()
    [result] = got
    assert "10.99.1.11" in addresses(result) and result.errors == []
    # the output is what Get-VMNetworkAdapter gives
    read = ok(lab, GOT, "Get-VMNetworkAdapter", VMName=TEST_VM)
    assert [o.properties for o in result.output] == [o.properties for o in read]
    assert lab.audit.entries(cmdlet="Get-VMNetworkAdapter") == []  # a read: not audited


def test_known_addresses_do_not_end_the_wait_a_new_one_does() -> None:
    lab = started_test_vm()
    lab.clock.advance(60)
    now = addresses(wait(lab, TimeoutMs=60_000))  # at once
    assert "10.99.1.11" in now and len(now) == 2  # and a link-local IPv6 address
    # every address is known (in any case): the wait lasts its time and shows what is there
    known = [a.upper() for a in now]
    assert addresses(wait(lab, Known=known, TimeoutMs=100, PollMs=10)) == now
    # one of them unknown: at once again
    got: list[InvokeResult] = []
    thread = threading.Thread(target=lambda: got.append(wait(lab, Known=now[:1], TimeoutMs=60_000)))
    thread.start()
    thread.join(10)
    assert not thread.is_alive() and addresses(got[0]) == now


def test_a_timeout_of_zero_is_one_read() -> None:
    lab = started_test_vm()
    assert wait(lab, TimeoutMs=0).output and addresses(wait(lab)) == []


def test_a_missing_vm_ends_the_wait_with_the_reads_error() -> None:
    lab = make_lab()
    with pytest.raises(CmdletError) as caught:
        wait(lab, vm="nope", TimeoutMs=60_000)
    info = caught.value.info
    assert info.fully_qualified_error_id == (
        "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVMNetworkAdapter"
    )
    assert "unable to find a virtual machine" in info.message


def test_parameters_bind_as_the_param_block_says() -> None:
    bound = bind_address_wait(
        [("VMName", "a"), ("known", ["X"]), ("TIMEOUTMS", "1500"), ("PollMs", 20)]
    )
    assert (bound.vm_name, bound.known, bound.timeout, bound.poll) == ("a", {"x"}, 1.5, 0.02)
    assert (bound.max_poll, bound.waited) == (3.0, 0.0)
    # a tenth of the time waited, within the bounds, never past the deadline
    assert bound.pause(elapsed=0.1, left=1.0) == 0.02
    assert bound.pause(elapsed=5.0, left=10.0) == 0.5
    assert bound.pause(elapsed=5.0, left=0.1) == 0.1
    later = bind_address_wait([("VMName", "a"), ("WaitedMs", 100_000)])
    assert later.pause(elapsed=0.0, left=60.0) == 3.0
    with pytest.raises(CmdletError) as caught:
        bind_address_wait([("VMName", "a"), ("Subnet", "10.0.0.0/8")])
    assert caught.value.info.fully_qualified_error_id.startswith("NamedParameterNotFound,")
    with pytest.raises(CmdletError):
        bind_address_wait([("TimeoutMs", 5)])  # no VM named


def test_faults_match_the_call_once_not_each_read_on_the_host() -> None:
    lab = started_test_vm()
    status, _body = lab.admin(
        "POST",
        "/faults",
        {"cmdlet": "Get-VMNetworkAdapter", "vm": TEST_VM, "fail": "http500", "count": 2},
    )
    assert status == 201
    with pytest.raises(TransportFault):
        wait(lab, TimeoutMs=60_000)
    # the next call reads on the host many times (no address, 200 ms at 10 ms) and fails once
    with pytest.raises(TransportFault):
        wait(lab, TimeoutMs=200, PollMs=10)
    assert wait(lab, TimeoutMs=200, PollMs=10).output
    [rule] = lab.faults.rules()
    assert rule.fired == 2 and rule.remaining == 0


def test_a_host_that_goes_down_drops_the_wait() -> None:
    lab = started_test_vm()
    caught: list[BaseException] = []

    def waiting() -> None:
        try:
            wait(lab, TimeoutMs=60_000, PollMs=10)
        except BaseException as exc:
            caught.append(exc)

    thread = threading.Thread(target=waiting)
    thread.start()
    thread.join(0.2)
    assert lab.admin("POST", "/faults", {"host_down": GOT})[0] in (200, 201)
    thread.join(10)
    assert not thread.is_alive()
    assert [type(e) for e in caught] == [TransportFault]


def test_a_rules_latency_is_charged_once_per_call() -> None:
    injector = FaultInjector(1)
    every = injector.add({"latency_ms": 100})
    slow_failover = injector.add({"cmdlet": "Start-VMFailover", "latency_ms": 300})
    charged: set[int] = set()
    # Get-VMSnapshot | Start-VMFailover: one round trip, and the failover's own delay
    assert injector.decide(GOT, "Get-VMSnapshot", "a", charged).delay == pytest.approx(0.1)
    assert injector.decide(GOT, "Start-VMFailover", None, charged).delay == pytest.approx(0.3)
    assert charged == {every.id, slow_failover.id}
    assert injector.decide(GOT, "Get-VM", "a", set()).delay == pytest.approx(0.1)  # next call
    assert injector.decide(GOT, "Get-VM", "a").delay == pytest.approx(0.1)  # no call given


def test_a_no_language_endpoint_refuses_script_text_and_runs_cmdlets() -> None:
    data = example_dict()
    for host in data["hosts"]:
        if host["name"] == GOT:
            host["language_mode"] = "NoLanguage"
    lab = make_lab(data)
    with pytest.raises(CmdletError) as refused:
        wait(lab, TimeoutMs=0)
    assert refused.value.info.fully_qualified_error_id == "ScriptsNotAllowed"
    assert refused.value.info.category == "ParserError"
    ok(lab, GOT, "Get-VMNetworkAdapter", VMName="sql-01")  # cmdlets with parameters run
    # another host keeps the full language
    assert wait(lab, vm="sql-02", host="hv-got-2", TimeoutMs=0).errors == []


def test_a_language_mode_the_lab_does_not_know_is_refused_at_load() -> None:
    data = example_dict()
    data["hosts"][0]["language_mode"] = "ConstrainedLanguage"
    with pytest.raises(TopologyError, match="language_mode"):
        make_lab(data)
