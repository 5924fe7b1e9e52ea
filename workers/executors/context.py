"""StepContext: what an executor knows about its run and how it reaches hosts and DNS.

A context is built per task from JSON (run id, type, direction, :class:`HostRef` s with
credential *references*). Runners come from ``runner_factory``; the default builds a
:class:`~workers.hyperv.psrp.PsrpRunner` on the process-wide session cache
(:mod:`workers.hyperv.pool`): a bounded set of sessions per host, each leased to one call at a
time, opened only when every open one is busy and reused by every task of the worker process,
never opened once per call. Tests pass their own factories instead of monkeypatching.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from plans.errors import ConfigurationError
from workers.executors.dnsops import DnsOps, default_dns_ops
from workers.hyperv.connection import PsrpEndpoint
from workers.hyperv.hyperv import HyperVHost
from workers.hyperv.psrp import PsrpRunner
from workers.hyperv.vmm import VmmServer
from workers.powershell import PowerShellRunner
from workflows.inputs import ZoneTarget
from workflows.steps import HostRef

POLL_INTERVAL = 0.2  # seconds; see StepContext.poll_interval

RunnerFactory = Callable[[HostRef], PowerShellRunner]
ProgressHook = Callable[[dict[str, Any]], None]
DnsFactory = Callable[[ZoneTarget], DnsOps]


def psrp_runner(ref: HostRef) -> PowerShellRunner:
    """The default runner: pypsrp over the process-wide session cache (a bounded set of
    sessions per host, ``FERRYMAN_PSRP_SESSIONS_PER_HOST``)."""
    return PsrpRunner(PsrpEndpoint.from_ref(ref))


@dataclass
class StepContext:
    """The run an executor works for and its ways out to hosts and DNS servers.

    ``prior`` holds the results of earlier steps of the same VM in this task, keyed by
    :class:`~workflows.steps.StepKind` value (e.g. ``prior["wait_ip"]["addresses"]``).
    ``attempt`` counts the starts of this step, this one included: above 1, an earlier start
    (a retry, a redelivery after a crash, a resume) may already have done part of its work.
    """

    run_id: str
    failover_type: str
    direction: str
    hosts: dict[str, HostRef]
    prior: dict[str, dict[str, Any]] = field(default_factory=dict)
    attempt: int = 1
    runner_factory: RunnerFactory = psrp_runner
    dns_factory: DnsFactory | None = None  # None: the DNS adapter for the zone's kind
    # seconds between reads while waiting for a state, and the shortest wait for an IP (later
    # a tenth of the time waited, up to 15x this): Start-VM and Stop-VM return when done, so
    # state waits mostly end at the first read, and a booted guest is noticed within 0.2 s
    poll_interval: float = POLL_INTERVAL
    # where a long step reports how far it got (the task running it sets a throttled write to
    # the step's record, :mod:`workers.progress`); None: nowhere. ``last_progress``: what an
    # earlier start of the step reported (a resumed copy knows its total from it).
    on_progress: ProgressHook | None = None
    last_progress: dict[str, Any] | None = None
    _runners: dict[str, PowerShellRunner] = field(default_factory=dict, repr=False)

    def progress(self, figures: dict[str, Any]) -> None:
        """Report the step's progress (JSON figures, e.g. percent and bytes)."""
        if self.on_progress is not None:
            self.on_progress(figures)

    def host_ref(self, host_name: str) -> HostRef:
        """The HostRef of ``host_name``; an unknown host is a configuration error."""
        try:
            return self.hosts[host_name]
        except KeyError:
            known = ", ".join(sorted(self.hosts)) or "none"
            raise ConfigurationError(
                f"run {self.run_id}: host {host_name!r} is not in the run's fabric snapshot "
                f"(known: {known}); check the plan's fabric"
            ) from None

    def runner(self, host_name: str) -> PowerShellRunner:
        """The PowerShell runner for ``host_name`` (one runner object per host per context;
        each of its calls leases its own session from the cache)."""
        runner = self._runners.get(host_name)
        if runner is None:
            runner = self.runner_factory(self.host_ref(host_name))
            self._runners[host_name] = runner
        return runner

    def hyperv(self, host_name: str) -> HyperVHost:
        """Typed Hyper-V cmdlets on ``host_name``."""
        return HyperVHost(self.runner(host_name), host_name)

    def vmm(self, host_name: str) -> VmmServer:
        """Typed VMM cmdlets on the VMM server ``host_name``."""
        return VmmServer(self.runner(host_name), host_name)

    def dns(self, target: ZoneTarget) -> DnsOps:
        """DNS operations on one zone target (as the compiler resolved it)."""
        if self.dns_factory is not None:
            return self.dns_factory(target)
        return default_dns_ops(target, self.runner)


def context(
    run_id: str,
    failover_type: str,
    direction: str,
    hosts: dict[str, HostRef],
    prior: dict[str, dict[str, Any]] | None = None,
    *,
    attempt: int = 1,
    runner_factory: RunnerFactory | None = None,
    dns_factory: DnsFactory | None = None,
    poll_interval: float = POLL_INTERVAL,
) -> StepContext:
    """Build a :class:`StepContext`; factories default to pypsrp and the DNS adapter."""
    return StepContext(
        run_id=run_id,
        failover_type=failover_type,
        direction=direction,
        hosts=dict(hosts),
        prior=dict(prior or {}),
        attempt=attempt,
        runner_factory=runner_factory or psrp_runner,
        dns_factory=dns_factory,
        poll_interval=poll_interval,
    )
