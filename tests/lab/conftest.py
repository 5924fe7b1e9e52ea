"""Fixtures for the lab's protocol tests: a fake domain behind real endpoints, and the lab."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from lab.server.auth import Account
from lab.server.service import LabServer
from lab.testing import LabHandle, running_lab
from tests.lab.fake_backend import FakeBackend
from tests.lab.scenario import Sites, scenario_topology


@pytest.fixture
def fake_backend() -> FakeBackend:
    """The stand-in domain (a few cmdlets with checkable answers)."""
    return FakeBackend()


@pytest.fixture(params=["basic", "ntlm"])
def fake_server(request: pytest.FixtureRequest, fake_backend: FakeBackend) -> Iterator[LabServer]:
    """Endpoints for the fake domain, over Basic/HTTP and NTLM-encrypted HTTP."""
    account = Account("ferryman", secrets.token_urlsafe(12))
    with LabServer(fake_backend, account, auth=request.param) as server:
        yield server


@pytest.fixture
def lab_handle() -> Iterator[LabHandle]:
    """The example world (+ new-01) served over Basic/HTTP with the clock frozen."""
    with running_lab(scenario_topology(), auth="basic", time_scale=0) as handle:
        yield handle


@pytest.fixture
def sites(lab_handle: LabHandle) -> Iterator[Sites]:
    """pypsrp pools to every host of ``lab_handle``."""
    s = Sites(lab_handle)
    yield s
    s.close()
