"""Credential references: ``env:NAME`` or ``file:PATH``, never values.

A reference is what files, the database, logs and task arguments carry; the value is read
only at the moment of use, by the process that uses it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from plans.errors import ConfigurationError

SCHEMES = ("env", "file")


@dataclass(frozen=True)
class SecretRef:
    """Where a secret lives. ``str(ref)`` is the reference text, safe to log."""

    scheme: str
    target: str

    @classmethod
    def parse(cls, text: str) -> SecretRef:
        """Parse ``env:NAME`` or ``file:PATH``; anything else is refused with what to write."""
        scheme, sep, target = text.partition(":")
        if not sep or scheme not in SCHEMES or not target.strip():
            raise ConfigurationError(
                "a credential must be a reference, 'env:VARIABLE' or 'file:/path/to/secret', "
                "not a value"
            )
        return cls(scheme, target.strip())

    @staticmethod
    def looks_like_reference(text: str) -> bool:
        """True when ``text`` is written as a reference (used to flag literal secrets)."""
        scheme, sep, target = text.partition(":")
        return bool(sep) and scheme in SCHEMES and bool(target.strip())

    def resolve(self) -> str:
        """Read the secret now. Errors name the reference, never a value."""
        if self.scheme == "env":
            value = os.environ.get(self.target)
            if value is None:
                raise ConfigurationError(
                    f"credential reference {self} is not set: export {self.target} "
                    "in the environment of this process"
                )
            return value
        path = Path(self.target)
        try:
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigurationError(
                f"credential reference {self} cannot be read ({exc.strerror}); "
                "check the path and its permissions"
            ) from None

    def __str__(self) -> str:
        return f"{self.scheme}:{self.target}"
