"""PSRP behaviour seen through the real pypsrp client: objects, errors, big outputs, timeouts."""

from __future__ import annotations

import threading
import time
from typing import Any

from pypsrp.client import Client
from pypsrp.powershell import PowerShell, PSInvocationState, RunspacePool

from lab.server.service import LabServer
from tests.lab.clients import client_options, props, run, wsman_for
from tests.lab.fake_backend import FakeBackend


def test_output_objects_carry_adapted_properties_and_enum_names(fake_server: LabServer) -> None:
    endpoint = fake_server.endpoints["hv-sto-1"]
    with RunspacePool(wsman_for(endpoint)) as pool:
        ps = run(pool, "Get-VM", Name="sql-02")
    assert ps.state == PSInvocationState.COMPLETED
    assert not ps.had_errors
    (vm,) = ps.output
    assert vm.types[0] == "Microsoft.HyperV.PowerShell.VirtualMachine"
    values = props(vm)
    assert values["Name"] == "sql-02"
    assert values["ComputerName"] == "hv-sto-1"
    assert values["State"] == "Running"
    assert values["ReplicationState"] == "Replicating"
    assert vm.adapted_properties["State"].types[:2] == [
        "Microsoft.HyperV.PowerShell.VMState",
        "System.Enum",
    ]
    assert values["ProcessorCount"] == 4
    assert values["Tags"] == ["a", "b"]


def test_terminating_error_fails_pipeline_with_the_same_error_id_each_time(
    fake_server: LabServer,
) -> None:
    endpoint = fake_server.endpoints["hv-got-1"]
    ids = []
    with RunspacePool(wsman_for(endpoint)) as pool:
        for _ in range(2):
            ps = run(pool, "Fail-Hard", VMName="web-03")
            assert ps.state == PSInvocationState.FAILED
            assert ps.had_errors
            record: Any = ps.streams.error[0]  # pypsrp sets target_object dynamically
            assert len(ps.streams.error) == 1
            ids.append(record.fq_error)
            assert record.target_object == "web-03"
            assert record.reason == "VirtualizationException"
            assert "cannot be performed" in str(record)
    assert (
        ids == ["InvalidReplicationState,Microsoft.HyperV.PowerShell.Commands.StartVMFailover"] * 2
    )


def test_non_terminating_error_keeps_output_and_completes(fake_server: LabServer) -> None:
    with RunspacePool(wsman_for(fake_server.endpoints["hv-sto-1"])) as pool:
        ps = run(pool, "Write-Soft")
    assert ps.state == PSInvocationState.COMPLETED
    assert not ps.had_errors
    assert ps.output == ["partial"]
    assert [e.fq_error for e in ps.streams.error] == ["SoftProblem"]
    assert [w.message for w in ps.streams.warning] == ["careful"]


def test_unknown_cmdlet_is_command_not_found(fake_server: LabServer) -> None:
    with RunspacePool(wsman_for(fake_server.endpoints["hv-sto-1"])) as pool:
        ps = run(pool, "Get-Nothing")
    assert ps.state == PSInvocationState.FAILED
    assert ps.streams.error[0].fq_error == "CommandNotFoundException"


def test_output_larger_than_max_envelope_arrives_whole(fake_server: LabServer) -> None:
    endpoint = fake_server.endpoints["hv-sto-1"]
    # 51200 is not pypsrp's default, so pypsrp keeps it instead of raising it to 512000.
    max_envelope = 51200
    with RunspacePool(wsman_for(endpoint, max_envelope_size=max_envelope)) as pool:
        ps = run(pool, "Write-Big", Size=600_000)
    assert ps.state == PSInvocationState.COMPLETED
    assert ps.output[0] == "x" * 600_000
    assert ps.output[1] == "tail"
    assert fake_server.stats("hv-sto-1").largest_reply <= max_envelope


def test_receive_with_nothing_to_say_times_out_and_pypsrp_polls_again(
    fake_server: LabServer, fake_backend: FakeBackend
) -> None:
    endpoint = fake_server.endpoints["hv-sto-1"]
    stats = fake_server.stats("hv-sto-1")

    def release_after_a_timeout() -> None:
        deadline = time.monotonic() + 20
        while stats.timed_out_receives < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        fake_backend.release.set()

    releaser = threading.Thread(target=release_after_a_timeout)
    with RunspacePool(wsman_for(endpoint, operation_timeout=1)) as pool:
        releaser.start()
        ps = run(pool, "Wait-Release")
    releaser.join()
    assert stats.timed_out_receives >= 1
    assert ps.state == PSInvocationState.COMPLETED
    assert ps.output == ["released", "hv-sto-1"]


def test_one_pool_runs_pipelines_one_after_another_and_closes_them(
    fake_server: LabServer,
) -> None:
    endpoint = fake_server.endpoints["hv-sto-1"]
    with RunspacePool(wsman_for(endpoint)) as pool:
        names = []
        for i in range(5):
            ps = PowerShell(pool)
            ps.add_cmdlet("Get-VM").add_parameter("Name", f"app-0{i}")
            ps.invoke()
            names.append(str(ps.output[0].adapted_properties["Name"]))
            ps.close()
        assert names == [f"app-0{i}" for i in range(5)]
        service = fake_server._hosts["hv-sto-1"].service
        (shell,) = service.shells.values()
        assert shell.runs == {}
    assert service.shells == {}


def test_parameters_reach_the_domain_as_plain_values(fake_server: LabServer) -> None:
    with RunspacePool(wsman_for(fake_server.endpoints["hv-sto-1"])) as pool:
        vm = run(pool, "Get-VM", Name="mon-01").output[0]
        echoed = {
            "text": run(pool, "Echo-Param", Value="corp-got").output[0],
            "number": run(pool, "Echo-Param", Value=300).output[0],
            "list": run(pool, "Echo-Param", Value=["a", 2]).output[0],
            "switch": run(pool, "Echo-Param", Value=True).output[0],
            "object": run(pool, "Echo-Param", Value=vm).output[0],
        }
    assert echoed["text"] == "'corp-got'"
    assert echoed["number"] == "300"
    assert echoed["list"] == "['a', 2]"
    assert echoed["switch"] in ("None", "True")
    assert "'Name': 'mon-01'" in echoed["object"]


def test_pypsrp_client_execute_ps(fake_server: LabServer, fake_backend: FakeBackend) -> None:
    endpoint = fake_server.endpoints["hv-got-1"]
    client = Client("127.0.0.1", **client_options(endpoint))
    try:
        output, _streams, had_errors = client.execute_ps("Get-Date")
    finally:
        client.close()
    assert output.splitlines() == ["ran: Get-Date", "hv-got-1"]
    assert not had_errors
    host, commands = fake_backend.calls[-1]
    assert host == "hv-got-1"
    assert [c.name for c in commands] == ["Invoke-Expression", "Out-String"]
    assert fake_backend.users[-1].lower().endswith("ferryman")


def test_stopping_a_running_pipeline_then_closing_the_pool(
    fake_server: LabServer, fake_backend: FakeBackend
) -> None:
    endpoint = fake_server.endpoints["hv-sto-1"]
    with RunspacePool(wsman_for(endpoint)) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Wait-Release")
        ps.begin_invoke()
        ps.stop()
        assert ps.state == PSInvocationState.STOPPED
        # The pool still serves new pipelines after the stop.
        assert run(pool, "Get-VM").output
    fake_backend.release.set()
    service = fake_server._hosts["hv-sto-1"].service
    assert service.shells == {}


def test_pipeline_threads_are_reused_and_the_idle_ones_end_on_stop() -> None:
    from lab.server.psrp import PipelineThreads

    threads = PipelineThreads("lab-reuse-check")
    ran: list[str] = []
    done = threading.Event()

    def task() -> None:
        ran.append(threading.current_thread().name)
        done.set()

    for _ in range(3):
        done.clear()
        threads.submit(task)
        assert done.wait(10)
        deadline = time.monotonic() + 10
        while not threads._idle and time.monotonic() < deadline:  # back to waiting
            time.sleep(0.01)
    # One thread ran every pipeline; stopping ends it, and a later pipeline starts another.
    assert len(ran) == 3
    assert len(set(ran)) == 1
    threads.stop()
    assert not [t for t in threading.enumerate() if t.name.startswith("lab-reuse-check")]
    done.clear()
    threads.submit(task)
    assert done.wait(10)
    assert ran[-1] != ran[0]
    threads.stop()
