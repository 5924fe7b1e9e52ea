"""Fixtures for the Hyper-V adapter tests."""

from __future__ import annotations

import pytest

from .doubles import FakeClock, FakeRunner


@pytest.fixture
def runner() -> FakeRunner:
    return FakeRunner()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
