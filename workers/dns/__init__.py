"""DNS switching that verifies what it claims: RFC 2136 + TSIG, or Windows DNS over PSRP.

The engine calls :func:`capture`, :func:`switch`, :func:`lower_ttl`, :func:`verify` and
:func:`restore` with a :class:`DnsTarget`, or the same on :class:`WindowsDns`. Results are
dataclasses with ``to_dict()`` (JSON, no secrets). Importing this package does no I/O.
"""

from workers.dns.errors import (
    DnsBadKey,
    DnsConfigurationError,
    DnsConflict,
    DnsError,
    DnsKeyFileError,
    DnsNotApplied,
    DnsNotAuth,
    DnsNotZone,
    DnsPermanentError,
    DnsRefused,
    DnsTimeout,
    DnsTransientError,
    DnsVerificationTimeout,
)
from workers.dns.records import RecordSet, Snapshot
from workers.dns.switch import SwitchResult, capture, lower_ttl, restore, switch
from workers.dns.target import DnsTarget, Server
from workers.dns.tsig import TsigKey, load_key_file
from workers.dns.verify import ServerAnswer, VerifyResult, verify
from workers.dns.windows import WindowsDns

__all__ = [
    "DnsBadKey",
    "DnsConfigurationError",
    "DnsConflict",
    "DnsError",
    "DnsKeyFileError",
    "DnsNotApplied",
    "DnsNotAuth",
    "DnsNotZone",
    "DnsPermanentError",
    "DnsRefused",
    "DnsTarget",
    "DnsTimeout",
    "DnsTransientError",
    "DnsVerificationTimeout",
    "RecordSet",
    "Server",
    "ServerAnswer",
    "Snapshot",
    "SwitchResult",
    "TsigKey",
    "VerifyResult",
    "WindowsDns",
    "capture",
    "load_key_file",
    "lower_ttl",
    "restore",
    "switch",
    "verify",
]
