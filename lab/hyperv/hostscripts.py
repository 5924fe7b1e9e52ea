"""Fixed scripts a client sends with parameters, which the lab runs as a Windows host would.

An operator's script text is acted out by the topology's ``scripts`` behaviours
(:mod:`lab.hyperv.scripts`). A few texts are different: a client sends them unchanged, with
their values as PSRP parameters bound by the ``param()`` block, and what they do is PowerShell
the lab can run itself. :data:`WAIT_FOR_ADDRESS` is one: the wait for a guest's address on
the host, in one call instead of a read per poll from the client.

The texts are kept here as a host would receive them, byte for byte; a script that differs in
any character is an operator's script again. Each is one line without control characters,
so the message carrying it stays plain CLIXML (``lab/server/pipeline.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lab.hyperv import errors
from lab.hyperv.context import prop
from lab.objects import CmdletError

# Returns once an adapter of the VM reports an address not in -Known, or once -TimeoutMs
# have passed, and outputs the VM's adapters as Get-VMNetworkAdapter does. Between reads it
# sleeps a twentieth of the time waited (-WaitedMs before this call, plus this call's own), at
# least -PollMs and at most -MaxPollMs, never past the deadline. A VM the host does not have
# (or any other error of the read) ends it at once with the read's error (-ErrorAction Stop).
WAIT_FOR_ADDRESS = (
    "param([string]$VMName, [string[]]$Known = @(), [int]$TimeoutMs = 0, [int]$PollMs = 50, "
    "[int]$MaxPollMs = 3000, [int]$WaitedMs = 0) "
    "$clock = [Diagnostics.Stopwatch]::StartNew(); "
    "while ($true) { "
    "$adapters = @(Get-VMNetworkAdapter -VMName $VMName -ErrorAction Stop); "
    "$new = @($adapters | ForEach-Object { $_.IPAddresses } | "
    "Where-Object { $_ -and $Known -notcontains $_ }); "
    "$left = $TimeoutMs - $clock.ElapsedMilliseconds; "
    "if ($new.Count -gt 0 -or $left -le 0) { $adapters; break }; "
    "$pause = [Math]::Min([double]$MaxPollMs, "
    "[Math]::Max([double]$PollMs, ($WaitedMs + $clock.ElapsedMilliseconds) / 20.0)); "
    "Start-Sleep -Milliseconds ([int][Math]::Min($pause, [double]$left)) "
    "}"
)

# The cmdlet the script runs: fault rules match the call by it (latency, failures, once per
# call: the host's own reads do not cross the network).
WAIT_FOR_ADDRESS_CMDLET = "Get-VMNetworkAdapter"
_CALLER = "WaitForAddress"  # how binding errors name the script


@dataclass(frozen=True)
class AddressWait:
    """The bound parameters of one :data:`WAIT_FOR_ADDRESS` call (times in seconds)."""

    vm_name: str
    known: frozenset[str]
    timeout: float
    poll: float
    max_poll: float
    waited: float

    def pause(self, elapsed: float, left: float) -> float:
        """The script's sleep after a read, ``elapsed`` seconds into the call."""
        pause = min(self.max_poll, max(self.poll, (self.waited + elapsed) / 20.0))
        return max(0.0, min(pause, left))

    def is_new(self, address: Any) -> bool:
        """True for an address the caller did not list (``-notcontains``: any case)."""
        return bool(address) and str(address).casefold() not in self.known


_INTS = {
    "timeoutms": "TimeoutMs",
    "pollms": "PollMs",
    "maxpollms": "MaxPollMs",
    "waitedms": "WaitedMs",
}
_DEFAULTS = {"TimeoutMs": 0, "PollMs": 50, "MaxPollMs": 3000, "WaitedMs": 0}


def bind_address_wait(parameters: Sequence[tuple[str | None, Any]]) -> AddressWait:
    """The script's ``param()`` block applied to a call's named parameters, as PowerShell
    binds them (names in any case; ``[int]`` and ``[string[]]`` conversions)."""
    name: str | None = None
    known: list[str] = []
    ints = dict(_DEFAULTS)
    for raw, value in parameters:
        key = (raw or "").lstrip("-").lower()
        if key == "vmname":
            name = None if value is None else str(value)
        elif key == "known":
            items = value if isinstance(value, list | tuple) else [value]
            known = [str(v) for v in items if v is not None]
        elif key in _INTS:
            ints[_INTS[key]] = _int(_INTS[key], value)
        else:
            raise CmdletError(errors.parameter_not_found(_CALLER, raw or "(positional)"))
    if not name:
        # Get-VMNetworkAdapter -VMName $null / "" fails to bind inside the script
        raise CmdletError(
            errors.bad_argument(
                WAIT_FOR_ADDRESS_CMDLET,
                "VMName",
                "The argument is null or empty. Provide an argument that is not null or empty, "
                "and then try the command again.",
            )
        )
    return AddressWait(
        vm_name=name,
        known=frozenset(k.casefold() for k in known),
        timeout=max(0, ints["TimeoutMs"]) / 1000.0,
        poll=max(0, ints["PollMs"]) / 1000.0,
        max_poll=max(0, ints["MaxPollMs"]) / 1000.0,
        waited=max(0, ints["WaitedMs"]) / 1000.0,
    )


def _int(parameter: str, value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        conversion = errors.conversion_message(value, "System.Int32")
        raise CmdletError(errors.cannot_convert(_CALLER, parameter, conversion, value)) from None


def addresses_of(adapters: Sequence[Any]) -> list[Any]:
    """Every address on the adapters (``ForEach-Object { $_.IPAddresses }``)."""
    found: list[Any] = []
    for adapter in adapters:
        value = prop(adapter, "IPAddresses")
        if isinstance(value, list | tuple):
            found.extend(value)
        elif value is not None:
            found.append(value)
    return found
