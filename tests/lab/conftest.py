"""Fixtures for the lab's protocol tests: a fake domain behind real endpoints, and the lab."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from lab.server.auth import Account
from lab.server.service import LabServer
from tests.lab.fake_backend import FakeBackend


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
