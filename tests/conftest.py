"""Suite-wide settings: no FERRYMAN_* variable of the caller's environment leaks into a test."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _isolated_ferryman_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("FERRYMAN_"):
            monkeypatch.delenv(name, raising=False)
