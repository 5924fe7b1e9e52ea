"""A tiny stand-in domain for protocol tests: a few cmdlets with known, checkable answers."""

from __future__ import annotations

import threading
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

HOSTS = [
    HostSpec("hv-sto-1", "stockholm", Role.HYPERV),
    HostSpec("hv-got-1", "gothenburg", Role.HYPERV),
]


def _param(cmd: Command, name: str, default: Any = None) -> Any:
    for key, value in cmd.parameters:
        if key is not None and key.lower() == name.lower():
            return value
    return default


class FakeBackend:
    """Cmdlets: Get-VM, Write-Big, Wait-Release, Fail-Hard, Write-Soft; plus host down/faults."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.faults: dict[str, list[str]] = {}
        self.release = threading.Event()
        self.waiting = 0  # Wait-Release pipelines running right now
        self.most_waiting = 0
        self.calls: list[tuple[str, list[Command]]] = []
        self.users: list[str] = []
        self._lock = threading.Lock()

    def hosts(self) -> Sequence[HostSpec]:
        return HOSTS

    def host_is_up(self, host: str) -> bool:
        return host not in self.down

    def admin(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if method == "GET" and path == "/hosts":
            return 200, [{"host": h.host, "up": h.host not in self.down} for h in HOSTS]
        if method == "POST" and path.startswith("/hosts/") and path.endswith("/down"):
            self.down.add(path.split("/")[2])
            return 200, {"ok": True}
        if method == "POST" and path.startswith("/hosts/") and path.endswith("/up"):
            self.down.discard(path.split("/")[2])
            return 200, {"ok": True}
        return 404, {"error": f"no such admin call: {method} {path}"}

    def invoke(self, host: str, commands: Sequence[Command], *, user: str = "") -> InvokeResult:
        with self._lock:
            self.calls.append((host, list(commands)))
            self.users.append(user)
            pending = self.faults.get(host)
            if pending:
                raise TransportFault(pending.pop(0))
        cmd = commands[0]
        name = cmd.name.lower()
        if name == "get-vm":
            vm = _param(cmd, "Name", "sql-01")
            return InvokeResult(output=[_vm(vm, host)])
        if name == "invoke-expression":
            return InvokeResult(output=[f"ran: {_param(cmd, 'Command')}", host])
        if name == "echo-param":
            return InvokeResult(output=[repr(_param(cmd, "Value"))])
        if name == "write-big":
            size = int(_param(cmd, "Size", 1000))
            return InvokeResult(output=["x" * size, "tail"])
        if name == "wait-release":
            with self._lock:
                self.waiting += 1
                self.most_waiting = max(self.most_waiting, self.waiting)
            try:
                self.release.wait(timeout=30)
            finally:
                with self._lock:
                    self.waiting -= 1
            return InvokeResult(output=["released", host])
        if name == "fail-hard":
            raise CmdletError(
                ErrorInfo(
                    "The operation cannot be performed while the VM is in this state.",
                    "InvalidReplicationState,Microsoft.HyperV.PowerShell.Commands.StartVMFailover",
                    category="InvalidOperation",
                    target_object=_param(cmd, "VMName", "sql-01"),
                )
            )
        if name == "write-soft":
            return InvokeResult(
                output=["partial"],
                errors=[ErrorInfo("soft problem", "SoftProblem", category="ObjectNotFound")],
                warnings=["careful"],
            )
        raise CmdletError(
            ErrorInfo(
                f"The term '{cmd.name}' is not recognized as a cmdlet.",
                "CommandNotFoundException",
                category="ObjectNotFound",
                exception_type="System.Management.Automation.CommandNotFoundException",
            )
        )


def _vm(name: str, host: str) -> LabObject:
    return LabObject(
        ["Microsoft.HyperV.PowerShell.VirtualMachine"],
        {
            "Name": name,
            "ComputerName": host,
            "State": LabEnum("Microsoft.HyperV.PowerShell.VMState", "Running", 2),
            "ReplicationState": LabEnum(
                "Microsoft.HyperV.PowerShell.VMReplicationState", "Replicating", 4
            ),
            "ProcessorCount": 4,
            "Tags": ["a", "b"],
        },
        to_string=f"VirtualMachine (Name = '{name}')",
    )
