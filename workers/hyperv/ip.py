"""Waiting for a failed-over VM's guest to report an address in the target subnets.

:func:`wait_for_ip` waits until a VM reports an address (IPv4 or IPv6) inside one of the
target subnets. Two sources exist, as the plan's ``ip_source`` chooses:

* Hyper-V (``Get-VMNetworkAdapter`` ``.IPAddresses``, empty until the guest's integration
  services report): the host itself waits (:class:`HostWaitSource`), in calls of at most
  :data:`HOST_WAIT_SLICE` seconds that each return as soon as the VM reports an address the
  client has not seen yet. The address is noticed within a local read's pause of the guest
  reporting it, not a round trip later, and a boot costs a call or two instead of a read per
  poll. The subnets are checked here; an address outside them (a link-local one first, say)
  is passed back as known, and the host waits for another.
* VMM (``Get-SCVirtualMachine`` → its ``VirtualNetworkAdapters`` → ``Get-SCIPAddress
  -GrantToObjectID``): polled from here, a tenth of the time waited between reads.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, runtime_checkable

from plans.errors import TransientError
from workers.errors import CmdletFailed, RemoteTransientError
from workers.hyperv.hyperv import HyperVHost
from workers.hyperv.vmm import VmmServer
from workflows.waiting import pauses, wait_until

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class IpTimeout(RemoteTransientError):
    """No address in the target subnets appeared in time (transient: the guest may be slow)."""

    def __init__(self, vm: str, host: str, subnets: Sequence[Network], seen: Sequence[str]) -> None:
        shown = ", ".join(seen) if seen else "no addresses at all"
        super().__init__(
            f"VM {vm} on {host} reported no address in {', '.join(map(str, subnets))} "
            f"(saw: {shown}); check that it booted, is connected to the mapped network and "
            "that its guest services/VMM IP pool are working"
        )
        self.vm = vm
        self.host = host
        self.subnets = list(subnets)
        self.seen = list(seen)


class IpSource(Protocol):
    """Where a VM's current addresses are read from."""

    @property
    def host(self) -> str:
        """The host asked (for messages)."""
        ...

    def addresses(self, vm: str) -> list[str]:
        """The VM's addresses now; empty while none are known."""
        ...


@runtime_checkable
class HostWaitSource(IpSource, Protocol):
    """A source whose host can wait for a new address itself, in one call."""

    def addresses_after(
        self, vm: str, known: Sequence[str], *, within: float, waited: float
    ) -> list[str]:
        """The VM's addresses once one not in ``known`` is reported, or after ``within``
        seconds (then as they are); ``waited``: seconds already waited before this call."""
        ...


class HyperVIpSource:
    """Addresses the guest reports through Hyper-V integration services."""

    def __init__(self, hyperv: HyperVHost) -> None:
        self.hyperv = hyperv

    @property
    def host(self) -> str:
        """The Hyper-V host that runs the VM."""
        return self.hyperv.host_name

    def addresses(self, vm: str) -> list[str]:
        """Every address on every adapter of ``vm``."""
        return [a for adapter in self.hyperv.get_network_adapters(vm) for a in adapter.ip_addresses]

    def addresses_after(
        self, vm: str, known: Sequence[str], *, within: float, waited: float
    ) -> list[str]:
        """Every address of ``vm`` once one not in ``known`` appears (or after ``within``
        seconds), waited for on the host (``HyperVHost.wait_for_adapter_addresses``).

        A host whose endpoint runs cmdlets only (a JEA endpoint in no-language mode refuses
        script text with ``ScriptsNotAllowed``) is read once instead, now and from then on in
        this process: :func:`wait_for_ip` then paces the reads as it polls any source."""
        host = self.hyperv.host_name
        endpoint = getattr(self.hyperv.runner, "endpoint", None)
        where = (host, getattr(endpoint, "url", None))  # the same name at another URL: another
        if where not in _SCRIPTLESS_ENDPOINTS:
            try:
                adapters = self.hyperv.wait_for_adapter_addresses(
                    vm,
                    known=known,
                    timeout=within,
                    poll=HOST_POLL_INTERVAL,
                    max_poll=HOST_MAX_POLL_INTERVAL,
                    waited=waited,
                )
            except CmdletFailed as exc:
                if exc.fully_qualified_error_id.split(",")[0] != SCRIPTS_NOT_ALLOWED:
                    raise
                _SCRIPTLESS_ENDPOINTS.add(where)
                log.warning(
                    "%s's endpoint runs no scripts (%s): its VMs' addresses are polled with "
                    "Get-VMNetworkAdapter instead of waited for on the host",
                    host,
                    exc,
                )
            else:
                return [a for adapter in adapters for a in adapter.ip_addresses]
        return self.addresses(vm)


class VmmIpSource:
    """Addresses VMM granted to the VM's adapters; ``prefer_host`` picks among namesakes."""

    def __init__(self, vmm: VmmServer, prefer_host: str | None = None) -> None:
        self.vmm = vmm
        self.prefer_host = prefer_host

    @property
    def host(self) -> str:
        """The VMM server asked."""
        return self.vmm.host_name

    def addresses(self, vm: str) -> list[str]:
        """Addresses of the best-ranked VM named ``vm`` (none while VMM does not know it)."""
        found = self.vmm.get_sc_virtual_machines(vm, prefer_host=self.prefer_host)
        if not found:
            return []
        return [a for adapter in found[0].adapters for a in self.vmm.get_ip_addresses(adapter.id)]


def parse_subnets(subnets: Iterable[str | Network]) -> list[Network]:
    """Subnets as networks (host bits allowed, ``10.20.1.0/16`` means ``10.20.0.0/16``)."""
    return [ipaddress.ip_network(s, strict=False) for s in subnets]


def in_subnets(address: str, subnets: Sequence[Network]) -> bool:
    """True when ``address`` (an IPv6 zone suffix such as ``%3`` is ignored) is in a subnet."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0].strip())
    except ValueError:
        return False
    return any(ip.version == net.version and ip in net for net in subnets)


LATENESS = 0.1  # the share of the time waited so far by which an address may be noticed late
# The host-side wait: the longest one call waits (under WinRM's limits, and so that a worker
# gets control back every so often), and the pauses between the host's local reads (a
# twentieth of the time waited, within these bounds; the script's own rule, see hyperv.py).
HOST_WAIT_SLICE = 20.0
HOST_POLL_INTERVAL = 0.05
HOST_MAX_POLL_INTERVAL = 3.0
# PowerShell's error id for script text in a no-language runspace (JEA endpoints), and the
# endpoints (host, URL) that gave it: their addresses are polled (shared by the process's
# threads; an endpoint's language mode changes with its configuration, a worker restart forgets)
SCRIPTS_NOT_ALLOWED = "ScriptsNotAllowed"
_SCRIPTLESS_ENDPOINTS: set[tuple[str, str | None]] = set()


def wait_for_ip(
    source: IpSource,
    vm: str,
    subnets: Iterable[str | Network],
    *,
    timeout: float = 600.0,
    initial_interval: float = 0.2,
    max_interval: float = 3.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Wait until ``vm`` has an address in ``subnets``; return that address.

    A :class:`HostWaitSource` waits on the host (see the module's docstring); any other
    source is polled. The wait between polls, and after a failed host-side wait, is a tenth
    of the time waited so far (``LATENESS``), at least ``initial_interval`` and at most
    ``max_interval``: a polled address is noticed at most ``initial_interval`` or a tenth of
    the boot late, whichever is more; a 60 s boot costs about fifty cheap reads.
    A transient error from one read or wait is remembered and waiting goes on; a permanent
    one (e.g. authentication, a VM the host does not have) is raised at once. After
    ``timeout`` seconds raises :class:`IpTimeout` naming the VM, host, subnets and everything
    seen; a ``timeout`` of 0 is a single look.
    """
    networks = parse_subnets(subnets)
    if not networks:
        raise ValueError(f"wait_for_ip for {vm}: no subnets given")
    seen: list[str] = []
    if isinstance(source, HostWaitSource):
        return _wait_on_host(
            source,
            vm,
            networks,
            seen,
            timeout=timeout,
            initial_interval=initial_interval,
            max_interval=max_interval,
            clock=clock,
            sleep=sleep,
        )

    def address_in_subnets() -> str | None:
        try:
            current = source.addresses(vm)
        except TransientError as exc:
            log.info(
                "polling %s's addresses on %s failed (%s); will poll again", vm, source.host, exc
            )
            _remember(seen, f"error: {exc}")
            return None
        for address in current:
            _remember(seen, address)
            if in_subnets(address, networks):
                return address.split("%", 1)[0].strip()
        return None

    found = wait_until(
        address_in_subnets,
        timeout=timeout,
        interval=initial_interval,
        lateness=LATENESS,
        max_interval=max_interval,
        clock=clock,
        sleep=sleep,
    )
    if found is None:
        raise IpTimeout(vm, source.host, networks, seen)
    return found


def _wait_on_host(
    source: HostWaitSource,
    vm: str,
    networks: Sequence[Network],
    seen: list[str],
    *,
    timeout: float,
    initial_interval: float,
    max_interval: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> str:
    """Host-side waits of at most :data:`HOST_WAIT_SLICE` each until an address in
    ``networks`` is reported or ``timeout`` passes; every address reported so far goes back
    as known, so the host returns only when something new appears."""
    started = clock()
    deadline = started + timeout
    # the pauses after a failed wait or an early answer: the polling schedule's own
    pacing = pauses(
        timeout=timeout,
        interval=initial_interval,
        lateness=LATENESS,
        max_interval=max_interval,
        clock=clock,
    )
    known: list[str] = []
    while True:
        now = clock()
        within = min(max(0.0, deadline - now), HOST_WAIT_SLICE)
        try:
            current = source.addresses_after(vm, known, within=within, waited=now - started)
        except TransientError as exc:
            log.info(
                "waiting for %s's address on %s failed (%s); will wait again", vm, source.host, exc
            )
            _remember(seen, f"error: {exc}")
        else:
            new = False
            for address in current:
                _remember(seen, address)
                if in_subnets(address, networks):
                    return address.split("%", 1)[0].strip()
                if address not in known:
                    known.append(address)
                    new = True
            after = clock()
            if after >= deadline:
                break
            if new or after - now >= within:
                continue  # something new, or the host waited its whole slice: ask again
            # back early with nothing new (a host that does not wait): do not call in a loop
        pause = next(pacing, None)
        if pause is None:  # the deadline has passed
            break
        sleep(pause)
    raise IpTimeout(vm, source.host, networks, seen)


def _remember(seen: list[str], item: str) -> None:
    # Keep messages short: each distinct observation once, at most a handful.
    if item not in seen and len(seen) < 10:
        seen.append(item)
