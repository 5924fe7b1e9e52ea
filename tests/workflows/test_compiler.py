"""The compiler, tested as data: a compiled run is plain JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest

from plans import Bundle
from plans.model import RecoveryPlan
from workflows.compiler import (
    CompiledRun,
    CompileError,
    RunOperation,
    StepRecord,
    compile_followup,
    compile_run,
)
from workflows.inputs import (
    CompensateInput,
    ConnectNetworkInput,
    FailoverInput,
    InvalidStepInput,
    RestoreDns,
    RestoreDnsInput,
    ReverseInput,
    ScriptInput,
    ShutdownPrimaryInput,
    StopTestFailover,
    UpdateDnsInput,
    WaitIpInput,
)
from workflows.statuses import StepStatus
from workflows.steps import StepKind, StepSpec, TaskUnit


def compiled(
    bundle: Bundle, kind: str, direction: str = "failover", **options: object
) -> CompiledRun:
    return compile_run(
        bundle.fabric, "three-tier", bundle.plan("three-tier"), kind, direction, dict(options)
    )


def outline(run: CompiledRun) -> list[tuple[str, str, list[str]]]:
    return [(s.name, s.kind.value, [u.vm or u.key for u in s.units]) for s in run.stages]


def kinds(run: CompiledRun, vm: str) -> list[str]:
    return [spec.kind.value for _s, _u, spec in run.steps() if spec.vm == vm]


@pytest.mark.parametrize("kind", ["test", "planned", "unplanned"])
@pytest.mark.parametrize("direction", ["failover", "failback"])
def test_a_compiled_run_is_plain_json_and_round_trips(
    bundle: Bundle, kind: str, direction: str
) -> None:
    run = compiled(bundle, kind, direction)
    text = json.dumps(run.to_json())
    assert CompiledRun.from_json(json.loads(text)) == run
    # hosts carry only credential references, never values
    assert {ref.password_ref for ref in run.hosts.values()} == {"env:FERRYMAN_LAB_PASSWORD"}


def reordered(data: Any, order: Any = lambda keys: list(reversed(keys))) -> Any:
    """``data`` with every object's members in another ``order`` (a database may reorder
    them: PostgreSQL's jsonb keeps keys by length, then bytes)."""
    if isinstance(data, dict):
        return {key: reordered(data[key], order) for key in order(list(data))}
    if isinstance(data, list):
        return [reordered(item, order) for item in data]
    return data


@pytest.mark.parametrize("kind", ["test", "planned", "unplanned"])
def test_a_stored_compiled_run_reads_back_from_its_text_whatever_the_layout(
    bundle: Bundle, kind: str
) -> None:
    run = compiled(bundle, kind)
    data = run.to_json()
    layouts = [
        json.dumps(data),
        json.dumps(data, indent=2),
        json.dumps(data, separators=(",", ":")),
        json.dumps(reordered(data)),
        json.dumps(reordered(data, lambda keys: sorted(keys, key=lambda k: (len(k), k)))),
    ]
    for text in layouts:
        read = CompiledRun.from_text(text)
        assert read == run
        assert list(read.stages) == list(run.stages) and read.stages[-1] == run.stages[-1]
        assert [s.index for s in read.stages[1:]] == [s.index for s in run.stages[1:]]


def test_a_stored_compiled_run_without_stages_reads_back() -> None:
    data = {"plan": "p", "operation": "test", "direction": "failover", "hosts": {}, "stages": []}
    read = CompiledRun.from_text(" " + json.dumps(data) + "\n")
    assert len(read.stages) == 0 and read.plan == "p" and read.options == {}
    with pytest.raises(ValueError, match="expected one of"):
        CompiledRun.from_text(json.dumps([data]))


def test_test_failover_stages(bundle: Bundle) -> None:
    run = compiled(bundle, "test")
    assert outline(run) == [
        ("g1.databases", "units", ["sql-01", "sql-02"]),
        ("g1.databases.confirm-databases", "gate", []),
        ("g2.application", "units", ["app-01", "app-02", "app-03"]),
        ("g2.application.application-up", "units", ["app-01", "app-02", "app-03"]),
        ("g3.web", "units", ["web-01", "web-02"]),
    ]
    assert kinds(run, "sql-01")[:5] == [
        "test_failover",
        "connect_network",
        "start_vm",
        "wait_ip",
        "update_dns",
    ]
    steps = {spec.kind: spec for _s, _u, spec in run.steps() if spec.vm == "sql-01"}
    assert steps[StepKind.TEST_FAILOVER].host == "hv-got-1"
    assert steps[StepKind.CONNECT_NETWORK].params == ConnectNetworkInput(switch="test-got")
    wait = steps[StepKind.WAIT_IP].params
    assert isinstance(wait, WaitIpInput) and wait.subnets == ("10.99.0.0/16",)
    # a test run writes only to the test zone, never to corp.example
    dns = steps[StepKind.UPDATE_DNS].params
    assert isinstance(dns, UpdateDnsInput)
    assert [r.zone for r in dns.records] == ["test.corp.example"]
    assert dns.zones["test.corp.example"].kind == "windows"
    assert dns.zones["test.corp.example"].vmm == "vmm-got"
    assert all(u.queue == "ferryman.site.gothenburg" for s in run.stages for u in s.units)


def test_test_network_mapped_and_none(bundle: Bundle) -> None:
    plan = bundle.plan("three-tier")
    for mode, switch in (("mapped", "corp-got"), ("none", None)):
        changed = plan.model_copy(update={"test_network": mode})
        run = compile_run(bundle.fabric, "three-tier", changed, "test")
        connect = [
            s
            for _a, _b, s in run.steps()
            if s.kind is StepKind.CONNECT_NETWORK and s.vm == "sql-01"
        ]
        assert connect[0].params == ConnectNetworkInput(switch=switch)
        if switch is None:  # disconnected: no address will come, so no wait and no DNS
            assert "wait_ip" not in kinds(run, "sql-01")


def test_planned_failover_shuts_down_in_reverse_group_order(bundle: Bundle) -> None:
    run = compiled(bundle, "planned")
    names = [s.name for s in run.stages]
    assert names[:4] == [
        "g1.databases.quiesce-order-intake",  # primary-site pre-script while it still runs
        "g3.web.shutdown",
        "g2.application.shutdown",
        "g1.databases.shutdown",
    ]
    assert names[4:] == [
        "g1.databases",
        "g1.databases.confirm-databases",
        "g2.application",
        "g2.application.application-up",
        "g3.web",
        "g3.web.warm-caches",
    ]
    assert kinds(run, "sql-01") == [
        "shutdown_primary",
        "prepare_failover",
        "failover",
        "reverse",
        "connect_network",
        "start_vm",
        "wait_ip",
        "update_dns",
    ]
    shutdown = run.stages[1].units[0]
    assert shutdown.queue == "ferryman.site.stockholm"
    assert {s.host for s in shutdown.steps} == {"hv-sto-1"}
    script = run.stages[0].units[0].steps[0]
    assert script.kind is StepKind.SCRIPT and script.host == "vmm-sto"
    assert script.on_error == "stop"  # ASR: a planned failover stops on a script error
    dns = [s for _a, _b, s in run.steps() if s.kind is StepKind.UPDATE_DNS and s.vm == "web-01"]
    params = dns[0].params
    assert isinstance(params, UpdateDnsInput)
    assert [r.name for r in params.records] == ["web-01", "www"]
    assert (params.zones["corp.example"].tsig_key or "").startswith("file:")


def test_unplanned_failover_tries_shutdown_from_the_recovery_site(bundle: Bundle) -> None:
    run = compiled(bundle, "unplanned", recovery_point="Hourly 3")
    assert kinds(run, "sql-01") == [
        "shutdown_primary",
        "failover",
        "connect_network",
        "start_vm",
        "wait_ip",
        "update_dns",
    ]
    unit = run.stages[0].units[0]
    shutdown, failover = unit.steps[0], unit.steps[1]
    assert unit.queue == "ferryman.site.gothenburg"  # the primary site's workers may be gone
    assert shutdown.host == "hv-sto-1" and shutdown.on_error == "continue"
    assert shutdown.params == ShutdownPrimaryInput(best_effort=True)
    assert failover.params == FailoverInput(recovery_point="Hourly 3")
    warm = run.stages[-1].units[0].steps[0]
    assert warm.kind is StepKind.SCRIPT and warm.on_error == "continue"  # ASR default
    assert "shutdown_primary" not in kinds(
        compiled(bundle, "unplanned", try_shutdown=False), "sql-01"
    )


def test_failback_swaps_roles(bundle: Bundle) -> None:
    run = compiled(bundle, "planned", "failback")
    sql = {s.kind: s for _a, _b, s in run.steps() if s.vm == "sql-01"}
    assert sql[StepKind.SHUTDOWN_PRIMARY].host == "hv-got-1"
    assert sql[StepKind.FAILOVER].host == "hv-sto-1"
    assert sql[StepKind.CONNECT_NETWORK].params == ConnectNetworkInput(switch="corp-sto")
    wait = sql[StepKind.WAIT_IP].params
    assert isinstance(wait, WaitIpInput) and wait.subnets == ("10.10.0.0/16",)
    assert run.stages[1].units[0].queue == "ferryman.site.gothenburg"


def test_step_keys_are_unique(bundle: Bundle) -> None:
    for kind in ("test", "planned", "unplanned"):
        keys = [spec.key for _s, _u, spec in compiled(bundle, kind).steps()]
        assert len(keys) == len(set(keys))


def test_unknown_type_is_a_clear_error(bundle: Bundle) -> None:
    with pytest.raises(CompileError, match="types: test, planned, unplanned"):
        compiled(bundle, "drill")


def record(
    key: str,
    kind: StepKind,
    vm: str,
    host: str,
    status: str = "succeeded",
    undo: dict[str, Any] | None = None,
    stage: int = 0,
    seq: int = 0,
) -> StepRecord:
    return StepRecord(
        key=key, kind=kind, stage=stage, seq=seq, status=status, vm=vm, host=host, undo=undo
    )


def test_cleanup_restores_dns_then_deletes_test_vms(bundle: Bundle) -> None:
    parent = compiled(bundle, "test")
    snapshots = {
        "action": "restore_dns",
        "snapshots": [{"target": {"zone": "test.corp.example"}, "snapshot": {"records": []}}],
    }
    steps = [
        record("a", StepKind.TEST_FAILOVER, "sql-01", "hv-got-1"),
        record("b", StepKind.UPDATE_DNS, "sql-01", "hv-got-1", undo=snapshots),
        record("c", StepKind.TEST_FAILOVER, "sql-02", "hv-got-2", status="failed"),
        record("d", StepKind.TEST_FAILOVER, "app-01", "hv-got-1", status="pending"),
    ]
    run = compile_followup(parent, RunOperation.CLEANUP, steps)
    units = {u.vm: [(s.kind.value, s.host) for s in u.steps] for u in run.stages[0].units}
    assert units == {
        "sql-01": [("restore_dns", "hv-got-1"), ("test_cleanup", "hv-got-1")],
        "sql-02": [("test_cleanup", "hv-got-2")],  # failed part-way: the test VM may exist
    }
    restore = run.stages[0].units[0].steps[0]
    assert restore.params == RestoreDnsInput(
        snapshots=RestoreDns.model_validate(snapshots).snapshots
    )
    assert run.options == {"failover_type": "test"}


def test_reverse_after_unplanned(bundle: Bundle) -> None:
    parent = compiled(bundle, "unplanned")
    steps = [
        record("s", StepKind.SHUTDOWN_PRIMARY, "sql-01", "hv-sto-1", status="failed"),
        record("f", StepKind.FAILOVER, "sql-01", "hv-got-1"),
    ]
    run = compile_followup(parent, RunOperation.REVERSE, steps)
    assert [
        (
            s.name,
            [[(x.kind.value, x.host, x.to_json()["params"]) for x in u.steps] for u in s.units],
        )
        for s in run.stages
    ] == [
        ("reverse.old-primary", [[("set_as_replica", "hv-sto-1", {"timeout": 600.0})]]),
        (
            "reverse.new-primary",
            [
                [
                    ("reverse_to", "hv-got-1", {"replica_server": "hv-sto-1"}),
                    ("start_initial_replication", "hv-got-1", {}),
                ]
            ],
        ),
    ]
    assert run.stages[0].units[0].queue == "ferryman.site.stockholm"


def test_commit_and_cancel_need_an_unplanned_parent(bundle: Bundle) -> None:
    steps = [record("f", StepKind.FAILOVER, "sql-01", "hv-got-1")]
    commit = compile_followup(compiled(bundle, "unplanned"), RunOperation.COMMIT, steps)
    assert [s.kind for s in commit.stages[0].units[0].steps] == [StepKind.COMMIT]
    with pytest.raises(CompileError, match="follow an unplanned failover"):
        compile_followup(compiled(bundle, "planned"), RunOperation.COMMIT, steps)
    with pytest.raises(CompileError, match="nothing to commit"):
        compile_followup(compiled(bundle, "unplanned"), RunOperation.COMMIT, [])


def test_compensation_undoes_newest_first(bundle: Bundle) -> None:
    parent = compiled(bundle, "test")
    undo = {"action": "stop_test_failover", "host": "hv-got-1", "vm": "sql-01"}
    steps = [
        record("g1/sql-01/tf", StepKind.TEST_FAILOVER, "sql-01", "hv-got-1", undo=undo, seq=0),
        record(
            "g1/sql-01/cn",
            StepKind.CONNECT_NETWORK,
            "sql-01",
            "hv-got-1",
            undo={"action": "connect_network", "host": "hv-got-1", "vm": "sql-01"},
            seq=1,
        ),
        record(
            "g3/web-01/tf", StepKind.TEST_FAILOVER, "web-01", "hv-got-1", undo=undo, stage=4, seq=30
        ),
        record(
            "g3/web-02/tf",
            StepKind.TEST_FAILOVER,
            "web-02",
            "hv-got-2",
            status="pending",
            undo=undo,
            stage=4,
            seq=31,
        ),
    ]
    run = compile_followup(parent, RunOperation.COMPENSATE, steps)
    assert [s.name for s in run.stages] == ["compensate.g3.web", "compensate.g1.databases"]
    compensations = [s.params for s in run.stages[1].units[0].steps]
    assert all(isinstance(p, CompensateInput) for p in compensations)
    assert [(p.of, p.of_kind) for p in compensations if isinstance(p, CompensateInput)] == [
        ("g1/sql-01/cn", "connect_network"),
        ("g1/sql-01/tf", "test_failover"),
    ]
    assert all(s.kind is StepKind.COMPENSATE for _a, _b, s in run.steps())
    assert StopTestFailover(host="hv-got-1", vm="sql-01") in [
        p.undo for p in compensations if isinstance(p, CompensateInput)
    ]


def _with_vmm_ip_source(bundle: Bundle) -> RecoveryPlan:
    plan = bundle.plan("three-tier")
    groups = [
        group.model_copy(
            update={"vms": [vm.model_copy(update={"ip_source": "vmm"}) for vm in group.vms]}
        )
        for group in plan.groups
    ]
    return plan.model_copy(update={"groups": groups})


@pytest.mark.parametrize(("direction", "vmm"), [("failover", "vmm-got"), ("failback", "vmm-sto")])
def test_wait_ip_from_vmm_names_the_target_sites_vmm(
    bundle: Bundle, direction: str, vmm: str
) -> None:
    plan = _with_vmm_ip_source(bundle)
    run = compile_run(bundle.fabric, "three-tier", plan, "planned", direction)
    waits = [s for _a, _b, s in run.steps() if s.kind is StepKind.WAIT_IP]
    assert waits, "the example plan waits for addresses"
    inputs = [s.params for s in waits if isinstance(s.params, WaitIpInput)]
    assert {(p.source, p.vmm) for p in inputs} == {("vmm", vmm)} and len(inputs) == len(waits)
    hyperv = [s for _a, _b, s in compiled(bundle, "planned").steps() if s.kind is StepKind.WAIT_IP]
    assert all(isinstance(s.params, WaitIpInput) and s.params.vmm is None for s in hyperv)


@pytest.mark.parametrize("direction", ["failover", "failback"])
def test_reverse_names_the_old_primary_as_replica_server(bundle: Bundle, direction: str) -> None:
    run = compiled(bundle, "planned", direction)
    pairing = bundle.fabric.pairings["gold"]
    reverses = [s for _a, _b, s in run.steps() if s.kind is StepKind.REVERSE]
    assert len(reverses) == sum(len(g.vms) for g in bundle.plan("three-tier").groups)
    for step in reverses:
        protected = pairing.vms[step.vm or ""]
        old_primary, new_primary = protected.primary_host, protected.replica_host
        if direction == "failback":
            old_primary, new_primary = new_primary, old_primary
        assert (step.host, step.params) == (new_primary, ReverseInput(replica_server=old_primary))


def test_scripts_carry_their_rerun_on_redelivery_choice(bundle: Bundle) -> None:
    scripts = [s for _a, _b, s in compiled(bundle, "planned").steps() if s.kind is StepKind.SCRIPT]
    assert scripts and all(
        isinstance(s.params, ScriptInput) and s.params.rerun_on_redelivery is False for s in scripts
    )


def test_a_step_input_is_validated_once_when_the_step_is_built() -> None:
    with pytest.raises(InvalidStepInput, match=r"step g1/web-01/wait_ip: .*timeout"):
        StepSpec("g1/web-01/wait_ip", StepKind.WAIT_IP, "web-01", "hv-got-1", {"timeout": "soon"})
    with pytest.raises(InvalidStepInput, match="misspelt"):
        StepSpec("k", StepKind.START_VM, "web-01", "hv-got-1", {"misspelt": 1})
    with pytest.raises(InvalidStepInput, match="cannot drive a start_vm step"):
        StepSpec("k", StepKind.START_VM, "web-01", "hv-got-1", ReverseInput())


def test_a_wrongly_typed_run_option_is_a_compile_error_naming_the_step(bundle: Bundle) -> None:
    with pytest.raises(CompileError, match=r"wait_ip: timeout: .*number"):
        compiled(bundle, "test", wait_ip_timeout="soon")


def test_steps_stored_before_inputs_were_typed_still_decode() -> None:
    """JSON as earlier versions stored it: a compensation's undone kind under ``kind``, a stop_vm
    record's VM under ``vm_name``, a zone target named by ``name``."""
    stored = {
        "key": "compensate/g1/web-01/start_vm",
        "task": "ferryman.vm.steps",
        "queue": "ferryman.site.gothenburg",
        "vm": "web-01",
        "group": None,
        "steps": [
            {
                "key": "compensate/g1/web-01/start_vm",
                "kind": "compensate",
                "vm": "web-01",
                "host": "hv-got-1",
                "params": {
                    "undo": {"action": "stop_vm", "host": "hv-got-1", "vm_name": "web-01"},
                    "of": "g1/web-01/start_vm",
                    "kind": "start_vm",
                },
                "on_error": "stop",
            },
            {
                "key": "cleanup/web-01/restore_dns",
                "kind": "restore_dns",
                "vm": "web-01",
                "host": "hv-got-1",
                "params": {
                    "snapshots": [
                        {
                            "target": {"name": "corp.example", "kind": "rfc2136", "site": None},
                            "snapshot": {"records": []},
                        }
                    ]
                },
                "on_error": "stop",
            },
        ],
    }
    unit = TaskUnit.from_json(stored)
    compensate, restore = unit.steps
    assert isinstance(compensate.params, CompensateInput)
    assert compensate.params.of_kind == "start_vm"
    assert compensate.params.undo.model_dump() == {
        "host": "hv-got-1",
        "action": "stop_vm",
        "vm": "web-01",
    }
    assert isinstance(restore.params, RestoreDnsInput)
    assert restore.params.snapshots[0].target.zone == "corp.example"
    assert TaskUnit.from_json(json.loads(json.dumps(unit.to_json()))) == unit


def test_step_records_read_their_stored_status_and_undo() -> None:
    step = record(
        "a",
        StepKind.START_VM,
        "web-01",
        "hv-got-1",
        undo={"action": "stop_vm", "host": "h", "vm": "x"},
    )
    assert step.status is StepStatus.SUCCEEDED
    assert step.undo is not None and step.undo.action == "stop_vm"
    with pytest.raises(CompileError, match="undo record"):
        record("a", StepKind.START_VM, "web-01", "hv-got-1", undo={"action": "reboot"})
