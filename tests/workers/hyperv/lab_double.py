"""A small domain behind the lab's real WinRM endpoints, for the PSRP runner's protocol tests.

The real lab world is tested in ``test_lab_world.py``; this double gives the runner tests
exact control: a cmdlet that blocks until released, queued transport faults, hosts going
down, and a count of every pipeline each host ran.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

from lab.objects import (
    CmdletError,
    Command,
    ErrorInfo,
    InvokeResult,
    LabEnum,
    LabObject,
    TransportFault,
)
from lab.server.backend import HostSpec, Role
from lab.server.service import LabServer

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
    ``Echo-Parameters`` (returns what it received); everything else is CommandNotFound."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.faults: dict[str, list[str]] = {}
        self.release = threading.Event()
        self.blocked = threading.Event()
        self.pipelines: Counter[str] = Counter()
        self._lock = threading.Lock()

    def hosts(self) -> Sequence[HostSpec]:
        return HOSTS

    def host_is_up(self, host: str) -> bool:
        return host not in self.down

    def admin(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        return 404, {"error": "no admin API in this double"}

    def invoke(self, host: str, commands: Sequence[Command], *, user: str = "") -> InvokeResult:
        with self._lock:
            self.pipelines[host] += 1
            pending = self.faults.get(host)
            if pending:
                raise TransportFault(pending.pop(0))
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
            self.blocked.set()
            self.release.wait(timeout=30)
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
