"""Credential references: ``env:NAME`` or ``file:PATH``, never values.

A reference is what files, the database, logs and task arguments carry; the value is read
only at the moment of use, by the process that uses it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from plans.errors import ConfigurationError
from plans.files import MAX_SECRET_BYTES, FileRefused, read_bounded, resolve_secret

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
        try:
            return read_secret_file(self.target)
        except ConfigurationError as exc:
            raise ConfigurationError(f"credential reference {self}: {exc}") from None

    def __str__(self) -> str:
        return f"{self.scheme}:{self.target}"


def read_secret_file(path: str | Path, *, what: str = "secret file") -> str:
    """A secret file's text without its final newline: under the secret roots, a regular file
    of at most 64 KiB, read with a deadline. Errors name the file, never its content."""
    try:
        real = resolve_secret(path, what=what)
        raw = read_bounded(real, limit=MAX_SECRET_BYTES, what=what)
    except FileRefused as exc:
        raise ConfigurationError(str(exc)) from None
    try:
        return raw.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError:
        raise ConfigurationError(f"{what} {str(path)!r} is not UTF-8 text") from None
