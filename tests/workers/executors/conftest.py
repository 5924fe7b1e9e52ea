"""Fixtures for the step executors' tests: a fake Hyper-V world and contexts bound to it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.support.bind import bind_servers  # noqa: F401  (fixture for the DNS tests)
from workers.executors import StepContext, context

from .labdriver import lab, pools  # noqa: F401  (fixtures for the lab tests)
from .world import World, example_world, host_ref

# In the compiler's order: each site's VMM server first, then its Hyper-V hosts.
HOSTS = ("vmm-sto", "hv-sto-1", "hv-sto-2", "vmm-got", "hv-got-1", "hv-got-2")

MakeContext = Callable[..., StepContext]


@pytest.fixture
def world() -> World:
    return example_world()


@pytest.fixture
def make_ctx(world: World) -> MakeContext:
    """``make_ctx(type="test", prior=None, dns=None)``: a context on the fake world."""

    def make(
        failover_type: str = "planned",
        prior: dict[str, dict[str, Any]] | None = None,
        dns: Any = None,
    ) -> StepContext:
        return context(
            "run-1",
            failover_type,
            "failover",
            {name: host_ref(name) for name in HOSTS},
            prior,
            runner_factory=world.runner,
            dns_factory=dns,
            poll_interval=0.001,
        )

    return make
