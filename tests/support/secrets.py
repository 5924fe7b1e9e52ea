"""The secret folders the suite runs with.

Ferryman reads ``file:`` credentials and TSIG key files only from its secret folders
(``plans.files.secret_roots``). The tests make their secrets (the BIND fixture's keys, passwords)
in temporary folders, so the suite sets ``FERRYMAN_SECRET_ROOTS`` to the temporary folders plus
the default secret folders; tests of the default itself remove the variable.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from plans.files import SECRET_ROOTS_VARIABLE, default_secret_roots

__all__ = ["SECRET_ROOTS_VARIABLE", "suite_secret_roots"]


def suite_secret_roots(*extra: Path) -> str:
    """``FERRYMAN_SECRET_ROOTS`` for the tests: the temporary folders, ``extra`` and the
    default secret folders, separated by ``os.pathsep``."""
    roots = [os.path.realpath(tempfile.gettempdir()), *(os.path.realpath(p) for p in extra)]
    return os.pathsep.join(dict.fromkeys([*roots, *default_secret_roots()]))
