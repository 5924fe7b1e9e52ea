"""Waiting for a failed-over VM's guest to report an address in the target subnets.

:func:`wait_for_ip` polls an :class:`IpSource` with exponential backoff until an address
(IPv4 or IPv6) inside one of the subnets appears. Two sources exist, as the plan's
``ip_source`` chooses: Hyper-V (``Get-VMNetworkAdapter`` ``.IPAddresses``, empty until the
guest's integration services report) and VMM (``Get-SCVirtualMachine`` → its
``VirtualNetworkAdapters`` → ``Get-SCIPAddress -GrantToObjectID``).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from plans.errors import TransientError
from workers.errors import RemoteTransientError
from workers.hyperv.hyperv import HyperVHost
from workers.hyperv.vmm import VmmServer
from workflows.waiting import wait_until

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
    """Poll ``source`` until ``vm`` has an address in ``subnets``; return that address.

    The wait between polls is a tenth of the time waited so far (``LATENESS``), at least
    ``initial_interval`` and at most ``max_interval``: the address is noticed at most
    ``initial_interval`` or a tenth of the boot late, whichever is more. A 1 s boot is seen
    within 0.2 s of it (doubling waits would have read at 1.4 s); a 60 s boot costs about
    fifty cheap reads, one every few seconds at the end.
    A transient error from one poll is remembered and polling goes on; a permanent one
    (e.g. authentication) is raised at once. After ``timeout`` seconds raises
    :class:`IpTimeout` naming the VM, host, subnets and everything seen.
    """
    networks = parse_subnets(subnets)
    if not networks:
        raise ValueError(f"wait_for_ip for {vm}: no subnets given")
    seen: list[str] = []

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


def _remember(seen: list[str], item: str) -> None:
    # Keep messages short: each distinct observation once, at most a handful.
    if item not in seen and len(seen) < 10:
        seen.append(item)
