"""Suite-wide settings: no FERRYMAN_* variable of the caller's environment leaks into a test,
and the temporary folders the tests make secrets in are secret folders (tests/support/secrets.py).
"""

from __future__ import annotations

import os

import pytest

from tests.support.secrets import SECRET_ROOTS_VARIABLE, suite_secret_roots


@pytest.fixture(autouse=True)
def _isolated_ferryman_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    for name in list(os.environ):
        if name.startswith("FERRYMAN_"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(SECRET_ROOTS_VARIABLE, suite_secret_roots(tmp_path_factory.getbasetemp()))
