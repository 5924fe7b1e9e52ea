"""StepContext: endpoints from HostRefs (references only), runner reuse, the registry."""

from __future__ import annotations

import pytest

from plans.errors import ConfigurationError
from workers.executors import EXECUTORS, StepParamsError, context, run_step
from workers.executors.context import psrp_runner
from workers.hyperv.connection import AuthMethod, PsrpEndpoint
from workers.hyperv.psrp import PsrpRunner, shared_cache
from workflows.inputs import InvalidStepInput
from workflows.steps import HostRef, StepKind, StepSpec

from .conftest import MakeContext
from .world import FakeRunner, World, host_ref

REF = HostRef(
    name="hv-got-1",
    site="gothenburg",
    url="https://hv-got-1.example:5986/wsman",
    auth="NTLM",
    username="LAB\\ferryman",
    password_ref="env:FERRYMAN_TEST_UNSET_PASSWORD",
    ca_bundle="/etc/ferryman/ca.pem",
    operation_timeout=20,
    connect_timeout=7,
)


def test_endpoint_keeps_the_reference_and_never_reads_the_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FERRYMAN_TEST_UNSET_PASSWORD", raising=False)
    endpoint = PsrpEndpoint.from_ref(REF)  # the variable is unset: building must not resolve it
    assert endpoint.auth is AuthMethod.NTLM
    assert str(endpoint.password_ref) == "env:FERRYMAN_TEST_UNSET_PASSWORD"
    assert (endpoint.ca_bundle, endpoint.connect_timeout) == ("/etc/ferryman/ca.pem", 7)
    assert endpoint.read_timeout > endpoint.operation_timeout == 20
    runner = psrp_runner(REF)
    assert isinstance(runner, PsrpRunner) and runner.cache is shared_cache()


def test_endpoint_refuses_an_unknown_auth_and_a_literal_password() -> None:
    with pytest.raises(ConfigurationError, match="kerberos"):
        PsrpEndpoint.from_ref(HostRef("h", "s", "https://h:5986/wsman", "digest", "u", "env:X"))
    with pytest.raises(ConfigurationError, match="reference"):
        PsrpEndpoint.from_ref(HostRef("h", "s", "https://h:5986/wsman", "ntlm", "u", "hunter2"))


def test_a_context_builds_one_runner_per_host(world: World) -> None:
    built: list[str] = []

    def factory(ref: HostRef) -> FakeRunner:
        built.append(ref.name)
        return world.runner(ref)

    hosts = {"hv-got-1": host_ref("hv-got-1")}
    ctx = context("r", "test", "failover", hosts, runner_factory=factory)
    assert ctx.runner("hv-got-1") is ctx.runner("hv-got-1")
    ctx.hyperv("hv-got-1").get_vm("sql-01")
    assert built == ["hv-got-1"]
    with pytest.raises(ConfigurationError, match=r"hv-sto-9.*hv-got-1"):
        ctx.runner("hv-sto-9")


def test_every_executable_kind_has_an_executor_and_manual_is_refused(
    make_ctx: MakeContext,
) -> None:
    assert set(StepKind) - set(EXECUTORS) == {StepKind.MANUAL}
    with pytest.raises(StepParamsError, match="gate"):
        run_step(make_ctx(), StepSpec("g1.confirm", StepKind.MANUAL))


def test_a_vm_step_without_a_vm_or_host_is_a_params_error(make_ctx: MakeContext) -> None:
    with pytest.raises(StepParamsError, match="names no VM"):
        run_step(make_ctx(), StepSpec("x", StepKind.FAILOVER, host="hv-got-1"))
    with pytest.raises(StepParamsError, match="names no host"):
        run_step(make_ctx(), StepSpec("x", StepKind.FAILOVER, vm="sql-01"))
    with pytest.raises(InvalidStepInput, match=r"best_effort.*boolean"):
        StepSpec("x", StepKind.SHUTDOWN_PRIMARY, "sql-01", "hv-sto-1", {"best_effort": "perhaps"})
    with pytest.raises(StepParamsError, match="carries a ReverseInput"):
        # an input of another kind reaches an executor only through a defect: it says so
        step = StepSpec("x", StepKind.REVERSE, "sql-01", "hv-got-1")
        EXECUTORS[StepKind.SHUTDOWN_PRIMARY](make_ctx(), step)
