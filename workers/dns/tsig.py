"""TSIG keys read from BIND key files, as ``tsig-keygen`` writes them.

A key file looks like::

    key "ferryman-key" {
        algorithm hmac-sha256;
        secret "base64...";
    };

The secret is held only in memory, never shown by ``repr``/``str``, and errors name the
file's path, not its contents.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.name
import dns.tsig

from plans.credentials import SecretRef, read_secret_file
from plans.errors import ConfigurationError
from workers.dns.errors import DnsKeyFileError

DEFAULT_ALGORITHM = "hmac-sha256"

ALGORITHMS: dict[str, dns.name.Name] = {
    "hmac-md5": dns.tsig.HMAC_MD5,
    "hmac-sha1": dns.tsig.HMAC_SHA1,
    "hmac-sha224": dns.tsig.HMAC_SHA224,
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
}

# Quoted strings first, so a "//" inside a base64 secret is not taken for a comment.
_TOKEN = re.compile(r'"[^"]*"|/\*.*?\*/|//[^\n]*|#[^\n]*', re.DOTALL)
_KEY = re.compile(r'key\s+"?([^"\s{]+)"?\s*\{(.*?)\}\s*;', re.DOTALL)
_CLAUSE = re.compile(r'(algorithm|secret)\s+(?:"([^"]*)"|([^;\s]+))\s*;')


@dataclass(frozen=True)
class TsigKey:
    """One TSIG key. ``source`` is where it came from (a path), safe to log."""

    name: str
    algorithm: str
    secret: str = field(repr=False)
    source: str = ""

    def __post_init__(self) -> None:
        if self.algorithm.lower() not in ALGORITHMS:
            known = ", ".join(ALGORITHMS)
            raise DnsKeyFileError(
                f"TSIG key {self.name!r} ({self.reference}) uses unknown algorithm "
                f"{self.algorithm!r}; use one of {known}",
                key_ref=self.reference,
            )
        try:
            base64.b64decode(self.secret, validate=True)
        except (binascii.Error, ValueError):
            raise DnsKeyFileError(
                f"TSIG key {self.name!r} in {self.reference} has a secret that is not base64; "
                "regenerate the file with tsig-keygen",
                key_ref=self.reference,
            ) from None

    @property
    def reference(self) -> str:
        """The key file's path, or the key's name when it did not come from a file."""
        return self.source or f"key {self.name}"

    def keyring(self) -> dict[dns.name.Name, Any]:
        """A dnspython keyring holding just this key."""
        key = dns.tsig.Key(self.name, self.secret, ALGORITHMS[self.algorithm.lower()])
        return {key.name: key}

    def dns_key(self) -> dns.tsig.Key:
        """The key as dnspython's :class:`dns.tsig.Key`."""
        return dns.tsig.Key(self.name, self.secret, ALGORITHMS[self.algorithm.lower()])

    def __str__(self) -> str:
        return f"TSIG key {self.name} ({self.algorithm}, from {self.reference})"


def parse_keys(
    text: str, *, source: str = "", default_algorithm: str = DEFAULT_ALGORITHM
) -> list[TsigKey]:
    """Every ``key`` clause in BIND configuration text, in order.

    A clause without ``algorithm`` gets ``default_algorithm`` (BIND's own default is
    hmac-md5, which nobody should rely on).
    """
    keys = []
    bare = _TOKEN.sub(lambda m: m.group(0) if m.group(0).startswith('"') else " ", text)
    for match in _KEY.finditer(bare):
        clauses = {k: quoted or bare for k, quoted, bare in _CLAUSE.findall(match.group(2))}
        if "secret" not in clauses:
            raise DnsKeyFileError(
                f"key {match.group(1)!r} in {source or 'the key text'} has no secret clause",
                key_ref=source,
            )
        keys.append(
            TsigKey(
                name=match.group(1),
                algorithm=clauses.get("algorithm", default_algorithm).lower(),
                secret=clauses["secret"],
                source=source,
            )
        )
    return keys


def load_key_file(
    path: str | Path, *, name: str | None = None, default_algorithm: str = DEFAULT_ALGORITHM
) -> TsigKey:
    """Read a key file written by ``tsig-keygen`` (or rndc-confgen/ddns-confgen).

    ``path`` is a file path, ``file:PATH``, or ``env:NAME`` for a variable that holds the
    file's text (a container secret). With several keys, ``name`` picks one; without it the
    source must hold exactly one key.
    """
    source = str(path)
    if source.startswith(("env:", "file:")):
        text = SecretRef.parse(source).resolve()
    else:
        try:
            text = read_secret_file(path, what="TSIG key file")
        except ConfigurationError as exc:
            raise DnsKeyFileError(str(exc), key_ref=source) from None
    keys = parse_keys(text, source=source, default_algorithm=default_algorithm)
    if name is not None:
        keys = [k for k in keys if k.name.rstrip(".") == name.rstrip(".")]
    if len(keys) != 1:
        what = f"key {name!r}" if name else "exactly one key"
        raise DnsKeyFileError(
            f"TSIG key file {source} does not hold {what} (found {len(keys)}); "
            'expected tsig-keygen output: key "NAME" { algorithm ...; secret "..."; };',
            key_ref=source,
        )
    return keys[0]
