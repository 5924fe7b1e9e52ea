"""Driving executors against the lab over the real pypsrp client, as a worker would."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.testing import LabHandle, running_lab
from workers.executors import StepContext, context, run_step
from workers.hyperv.connection import PsrpEndpoint
from workers.hyperv.pool import RunspacePoolCache
from workers.hyperv.psrp import PsrpRunner
from workflows.steps import HostRef, StepKind, StepOutcome, StepSpec

TOPOLOGY = Path(__file__).resolve().parents[3] / "deploy" / "lab" / "topology.yaml"
PASSWORD_ENV = "FERRYMAN_LAB_PASSWORD"


def lab_topology() -> dict[str, Any]:
    """The shared example topology on ephemeral ports (tests never take the fixed ones)."""
    topology: dict[str, Any] = yaml.safe_load(TOPOLOGY.read_text())
    topology.pop("admin_port", None)
    for host in topology["hosts"]:
        host.pop("port", None)
    return topology


@pytest.fixture(params=["ntlm", "basic"])
def lab(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[LabHandle]:
    """The example lab on ephemeral ports, over NTLM (sealed) and Basic over HTTP."""
    with running_lab(lab_topology(), auth=request.param) as handle:
        monkeypatch.setenv(PASSWORD_ENV, handle.password)
        yield handle


@pytest.fixture
def pools() -> Iterator[RunspacePoolCache]:
    """A runspace-pool cache of the test's own (the worker's process-wide one, in small)."""
    cache = RunspacePoolCache()
    yield cache
    cache.close()


class Driver:
    """Runs steps the way a worker does: a fresh context per task, pools shared."""

    def __init__(self, lab: LabHandle, pools: RunspacePoolCache, failover_type: str) -> None:
        self.lab = lab
        self.pools = pools
        self.failover_type = failover_type
        self.hosts = {
            name: HostRef(
                name=name,
                site=ep.site,
                url=ep.url,
                auth=ep.auth,
                username=f"LAB\\{ep.username}" if ep.auth == "ntlm" else ep.username,
                password_ref=f"env:{PASSWORD_ENV}",
            )
            for name, ep in lab.endpoints.items()
        }
        self.prior: dict[str, dict[str, dict[str, Any]]] = {}

    def ctx(self, vm: str, attempt: int = 1) -> StepContext:
        return context(
            "run-lab",
            self.failover_type,
            "failover",
            self.hosts,
            self.prior.setdefault(vm, {}),
            attempt=attempt,
            runner_factory=lambda ref: PsrpRunner(PsrpEndpoint.from_ref(ref), cache=self.pools),
            poll_interval=0.05,
        )

    def audit(self) -> list[dict[str, Any]]:
        status, body = self.lab.admin("GET", "/audit")
        assert status == 200
        entries: list[dict[str, Any]] = body["entries"]
        return entries

    def step(
        self, kind: StepKind, host: str, vm: str, *, attempt: int = 1, **params: Any
    ) -> StepOutcome:
        """Run a step once in a new task (context), as its ``attempt``-th start; remember its
        result for later steps."""
        step = StepSpec(f"{vm}/{kind.value}", kind, vm, host, params)
        outcome = run_step(self.ctx(vm, attempt=attempt), step)
        self.prior.setdefault(vm, {})[kind.value] = outcome.result
        return outcome

    def twice(self, kind: StepKind, host: str, vm: str, **params: Any) -> StepOutcome:
        """Run a step, then again in a new task (its second start, as a redelivery); the second
        must not reach the lab."""
        step = StepSpec(f"{vm}/{kind.value}", kind, vm, host, params)
        first = run_step(self.ctx(vm), step)
        self.prior[vm][kind.value] = first.result
        before = self.audit()
        second = run_step(self.ctx(vm, attempt=2), step)
        after = self.audit()
        assert after[len(before) :] == [], f"{kind} of {vm} mutated again: {after[len(before) :]}"
        assert second.changed is False, f"{kind} of {vm} changed something on its second run"
        return first

    def vm_state(self, name: str, host: str) -> dict[str, Any]:
        status, body = self.lab.admin("GET", "/state")
        assert status == 200
        found = [v for v in body["vms"] if v["name"] == name and v["host"] == host]
        assert found, f"no {name} on {host} in the lab"
        state: dict[str, Any] = found[0]
        return state


def once_each(entries: list[dict[str, Any]]) -> None:
    """Each successful mutating call (host, cmdlet, VM, parameter names) happened once."""
    calls = Counter(
        (e["host"], e["cmdlet"], e["vm"], tuple(sorted(e["parameters"])))
        for e in entries
        if e["outcome"] == "ok"
    )
    repeated = {call: n for call, n in calls.items() if n > 1}
    assert repeated == {}
    assert all(e["outcome"] == "ok" for e in entries), [e for e in entries if e["outcome"] != "ok"]
