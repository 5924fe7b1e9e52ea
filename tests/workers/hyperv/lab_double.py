"""A small domain behind the lab's real WinRM endpoints, for the PSRP runner's protocol tests.

The real lab world is tested in ``test_lab_world.py``; this double gives the runner tests
exact control: a cmdlet that blocks until released, queued transport faults, hosts going
down, and a count of every pipeline each host ran.
"""

from __future__ import annotations

import secrets
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from lab.objects import (
    CmdletError,
    Command,
    ErrorInfo,
    InvokeResult,
    LabEnum,
    LabObject,
    TransportFault,
)
from lab.server.auth import Account
from lab.server.backend import HostSpec, Role
from lab.server.service import LabServer
from plans.credentials import SecretRef
from workers.hyperv.connection import AuthMethod, PsrpEndpoint
from workers.hyperv.pool import RunspacePoolCache
from workers.hyperv.psrp import PsrpRunner

PASSWORD_VAR = "HV_TEST_LAB_PASSWORD"

HOSTS = [
    HostSpec("hv-got-1", "gothenburg", Role.HYPERV),
    HostSpec("vmm-got", "gothenburg", Role.VMM),
]


def _param(cmd: Command, name: str) -> Any:
    for key, value in cmd.parameters:
        if key is not None and key.lower() == name.lower():
            return value
    return None


class RunnerBackend:
    """Cmdlets: ``Get-VM -Name`` (known: sql-01), ``Block-Call`` (waits for :attr:`release`),
    ``Echo-Parameters`` (returns what it received), and the recovery-point pipeline
    ``Get-VMSnapshot -VMName sql-01 -Name P | Start-VMFailover`` (see :attr:`failed_over_to`);
    everything else is CommandNotFound.

    ``in_flight`` counts calls inside ``Block-Call`` right now (``max_in_flight`` the most at
    once); :meth:`wait_in_flight` waits for a number of them, so tests see concurrency as a
    fact on the host rather than as a duration.
    """

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.faults: dict[str, list[str]] = {}
        self.release = threading.Event()
        self.blocked = threading.Event()
        self.pipelines: Counter[str] = Counter()
        self.commands: list[list[Command]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        # Snapshot Id that Start-VMFailover received through the pipeline, per VM name.
        self.failed_over_to: dict[str, str] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    def wait_in_flight(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until ``count`` calls are inside Block-Call at once; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self.in_flight >= count, timeout=timeout)

    def hosts(self) -> Sequence[HostSpec]:
        return HOSTS

    def host_is_up(self, host: str) -> bool:
        return host not in self.down

    def admin(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        return 404, {"error": "no admin API in this double"}

    def invoke(self, host: str, commands: Sequence[Command], *, user: str = "") -> InvokeResult:
        with self._lock:
            self.pipelines[host] += 1
            self.commands.append(list(commands))
            pending = self.faults.get(host)
            if pending:
                raise TransportFault(pending.pop(0))
        if len(commands) > 1:
            return self._pipeline(commands)
        cmd = commands[0]
        if cmd.is_script:
            params = {k or "_": v for k, v in cmd.parameters}
            return InvokeResult(output=[LabObject(["Script"], {"Text": cmd.name, **params})])
        name = cmd.name.lower()
        if name == "get-vm":
            vm = _param(cmd, "Name")
            if vm != "sql-01":
                raise CmdletError(
                    ErrorInfo(
                        f'Hyper-V was unable to find a virtual machine with name "{vm}".',
                        "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM",
                        category="InvalidArgument",
                        target_object=vm,
                    )
                )
            return InvokeResult(output=[_vm(host)])
        if name == "block-call":
            with self._changed:
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                self._changed.notify_all()
            self.blocked.set()
            try:
                self.release.wait(timeout=30)
            finally:
                with self._changed:
                    self.in_flight -= 1
                    self._changed.notify_all()
            return InvokeResult(output=["released"])
        if name == "echo-parameters":
            return InvokeResult(
                output=[LabObject(["Echo"], {k or "_": v for k, v in cmd.parameters})]
            )
        raise CmdletError(
            ErrorInfo(
                f"The term '{cmd.name}' is not recognized as a cmdlet.",
                "CommandNotFoundException",
                category="ObjectNotFound",
                exception_type="System.Management.Automation.CommandNotFoundException",
            )
        )

    def _pipeline(self, commands: Sequence[Command]) -> InvokeResult:
        """``Get-VMSnapshot | Start-VMFailover``: the snapshot object is bound to
        -VMRecoverySnapshot by its type, as on a real host."""
        names = [c.name.lower() for c in commands]
        if names != ["get-vmsnapshot", "start-vmfailover"]:
            raise CmdletError(
                ErrorInfo(f"no such pipeline in this double: {names}", "NotSupported")
            )
        read, failover = commands
        wanted = _param(read, "Name")
        snapshots = [s for s in SNAPSHOTS if _param(read, "VMName") == "sql-01"]
        piped = [s for s in snapshots if s.properties["Name"] == wanted]
        out: list[object] = []
        for snapshot in piped:
            assert "Microsoft.HyperV.PowerShell.VMSnapshot" in snapshot.type_names
            self.failed_over_to[str(snapshot.properties["VMName"])] = str(snapshot.properties["Id"])
            if _param(failover, "Passthru"):
                out.append(_vm("hv-got-1"))
        return InvokeResult(output=out)


SNAPSHOTS = [
    LabObject(
        ["Microsoft.HyperV.PowerShell.VMSnapshot"],
        {
            "Name": f"sql-01 - Standard Replica - (11/29/2026 - {hour}:00:00 PM)",
            "Id": f"5e0c0000-0000-4000-8000-0000000000{hour}",
            "VMName": "sql-01",
            "SnapshotType": LabEnum("Microsoft.HyperV.PowerShell.SnapshotType", "Replica", 4),
        },
    )
    for hour in ("01", "02")
]


def _vm(host: str) -> LabObject:
    return LabObject(
        ["Microsoft.HyperV.PowerShell.VirtualMachine"],
        {
            "Name": "sql-01",
            "Id": "2f4c3a90-0000-4000-8000-000000000011",
            "ComputerName": host,
            "State": LabEnum("Microsoft.HyperV.PowerShell.VMState", "Off", 3),
            "ReplicationState": LabEnum(
                "Microsoft.HyperV.PowerShell.VMReplicationState", "Replicating", 4
            ),
            "ReplicationMode": LabEnum(
                "Microsoft.HyperV.PowerShell.VMReplicationMode", "Replica", 2
            ),
            "ReplicationHealth": LabEnum(
                "Microsoft.HyperV.PowerShell.VMReplicationHealthState", "Normal", 1
            ),
        },
        to_string="VirtualMachine (Name = 'sql-01')",
    )


def open_shells(server: LabServer, host: str) -> int:
    """How many shells (runspace pools) ``host``'s endpoint holds open right now.

    The lab server has no public counter for this, so the tests read its per-host service.
    """
    return len(server._hosts[host].service.shells)


@dataclass
class Site:
    """The double served over real WinRM, and the adapter's cache pointed at it."""

    server: LabServer
    backend: RunnerBackend
    cache: RunspacePoolCache
    password: str

    def endpoint(self, host: str = "hv-got-1", password_var: str = PASSWORD_VAR) -> PsrpEndpoint:
        ep = self.server.endpoints[host]
        auth = AuthMethod.NTLM if ep.auth == "ntlm" else AuthMethod.BASIC
        return PsrpEndpoint(
            host,
            ep.url,
            auth,
            ep.username,
            SecretRef("env", password_var),
            ca_bundle=ep.ca_bundle,
            connect_timeout=5,
            operation_timeout=5,
            read_timeout=15,
        )

    def runner(
        self, host: str = "hv-got-1", *, cache: RunspacePoolCache | None = None, **kw: float
    ) -> PsrpRunner:
        return PsrpRunner(self.endpoint(host), cache=self.cache if cache is None else cache, **kw)

    def bounce(self, host: str) -> None:
        """Take the host down and up again: connections reset, shells forgotten."""
        self.backend.down.add(host)
        self.server.sync_hosts()
        self.backend.down.discard(host)
        self.server.sync_hosts()


def serve_site(auth: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    """Serve a fresh :class:`RunnerBackend` with ``auth``; close everything afterwards."""
    password = secrets.token_urlsafe(16)
    monkeypatch.setenv(PASSWORD_VAR, password)
    backend = RunnerBackend()
    cache = RunspacePoolCache()
    with LabServer(backend, Account("ferryman", password), auth=auth) as server:
        try:
            yield Site(server, backend, cache, password)
        finally:
            backend.release.set()
            cache.close()
