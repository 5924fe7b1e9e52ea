"""The DNS error family: what went wrong, where, and whether retrying can help.

Every error names the zone, the server and the TSIG key *reference* (the key file's path or
the key's name), never the key's secret. Permanent errors (REFUSED, NOTAUTH, BADSIG/BADKEY,
NOTZONE, malformed requests) derive from :class:`~workers.errors.RemotePermanentError`;
timeouts and "try again" answers derive from :class:`~workers.errors.RemoteTransientError`.
"""

from __future__ import annotations

from plans.errors import ConfigurationError, FerrymanError
from workers.errors import RemotePermanentError, RemoteTransientError


class DnsError(FerrymanError):
    """Base class of every DNS error; carries the zone, server and key reference."""

    def __init__(
        self, message: str, *, zone: str = "", server: str = "", key_ref: str = ""
    ) -> None:
        super().__init__(message)
        self.zone = zone
        self.server = server
        self.key_ref = key_ref


class DnsConfigurationError(DnsError, ConfigurationError):
    """A DNS setting (server, zone, address, key) must be fixed by the operator."""


class DnsKeyFileError(DnsConfigurationError):
    """A TSIG key file is missing, unreadable or not in ``tsig-keygen`` format."""


class DnsPermanentError(DnsError, RemotePermanentError):
    """The DNS server gave a definite answer that retrying will not change."""


class DnsRefused(DnsPermanentError):
    """REFUSED: the server's policy does not let this key update this zone."""


class DnsNotAuth(DnsPermanentError):
    """NOTAUTH: the server is not authoritative for the zone (or rejected the TSIG)."""


class DnsBadKey(DnsNotAuth):
    """BADSIG/BADKEY/BADTIME: the TSIG key's name, secret, algorithm or clock is wrong."""


class DnsNotZone(DnsPermanentError):
    """NOTZONE: a name in the update is outside the zone named in it."""


class DnsBadRequest(DnsPermanentError):
    """FORMERR/NOTIMP or another definite rejection of the request as sent."""


class DnsNotApplied(DnsPermanentError):
    """The server accepted an update but does not serve its result (e.g. a CNAME is there)."""


class DnsTransientError(DnsError, RemoteTransientError):
    """The server could not be reached or could not answer now: retry with backoff."""


class DnsTimeout(DnsTransientError):
    """The server did not answer within the timeout."""


class DnsServerFailure(DnsTransientError):
    """SERVFAIL: the server could not process the request now."""


class DnsConflict(DnsTransientError):
    """The records changed between capture and update (a prerequisite failed).

    Retrying captures the records again, so a retry is safe and usually succeeds.
    """


class DnsVerificationTimeout(DnsTimeout):
    """Not every authoritative server answered the expected records before the timeout."""

    def __init__(
        self,
        message: str,
        *,
        zone: str = "",
        server: str = "",
        key_ref: str = "",
        stale: dict[str, list[str]] | None = None,
    ) -> None:
        super().__init__(message, zone=zone, server=server, key_ref=key_ref)
        # server -> what it last answered (or the error text), for the run's report
        self.stale: dict[str, list[str]] = dict(stale or {})
