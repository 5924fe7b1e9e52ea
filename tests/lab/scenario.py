"""Drive the lab the way workers do: real pypsrp pools per host, one cmdlet per pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pypsrp.powershell import PowerShell, PSInvocationState, RunspacePool

from lab.testing import LabHandle
from tests.lab.clients import props, run, wsman_for

TOPOLOGY = Path(__file__).resolve().parents[2] / "deploy" / "lab" / "topology.yaml"


def scenario_topology() -> dict[str, Any]:
    """The shared example world, plus ``new-01``: a VM on hv-sto-1 that is not protected."""
    data: dict[str, Any] = yaml.safe_load(TOPOLOGY.read_text())
    data["vms"].append(
        {
            "name": "new-01",
            "primary": "hv-sto-1",
            "networks": ["corp-sto"],
            "ips": {"corp-sto": "10.10.9.91"},
        }
    )
    return data


class Sites:
    """One open RunspacePool per lab host, opened on first use and closed by :meth:`close`."""

    def __init__(self, handle: LabHandle) -> None:
        self.handle = handle
        self._pools: dict[str, RunspacePool] = {}

    def pool(self, host: str) -> RunspacePool:
        if host not in self._pools:
            pool = RunspacePool(wsman_for(self.handle.endpoints[host]))
            pool.open()
            self._pools[host] = pool
        return self._pools[host]

    def run(self, host: str, cmdlet: str, **params: Any) -> PowerShell:
        """Run one cmdlet; the pipeline may have failed or written errors."""
        return run(self.pool(host), cmdlet, **params)

    def ok(self, host: str, cmdlet: str, **params: Any) -> list[Any]:
        """Run one cmdlet that must succeed without error records; return its output."""
        ps = self.run(host, cmdlet, **params)
        errors = [(str(e), e.fq_error) for e in ps.streams.error]
        assert ps.state == PSInvocationState.COMPLETED and not errors, (cmdlet, params, errors)
        return list(ps.output)

    def error_id(self, host: str, cmdlet: str, **params: Any) -> str:
        """Run one cmdlet that must write exactly one error record; return its error id."""
        ps = self.run(host, cmdlet, **params)
        assert len(ps.streams.error) == 1, (cmdlet, params, [str(e) for e in ps.streams.error])
        return str(ps.streams.error[0].fq_error)

    def replication(self, host: str, vm: str) -> tuple[str, str, str]:
        """(State, Mode, Health) of ``vm`` as ``host`` reports it, enum names as text."""
        (obj,) = self.ok(host, "Get-VMReplication", VMName=vm)
        p = props(obj)
        return p["State"], p["Mode"], p["Health"]

    def replication_or_none(self, host: str, vm: str) -> tuple[str, str, str] | None:
        """Like :meth:`replication`, or None when ``vm`` is not replicated."""
        ps = self.run(host, "Get-VMReplication", VMName=vm)
        if not ps.output:
            return None
        p = props(ps.output[0])
        return p["State"], p["Mode"], p["Health"]

    def vm(self, host: str, name: str) -> dict[str, Any] | None:
        """Get-VM's properties for ``name`` on ``host``, or None if the host has no such VM."""
        ps = self.run(host, "Get-VM")
        for obj in ps.output:
            p = props(obj)
            if p["Name"] == name:
                return p
        return None

    def advance(self, seconds: float) -> None:
        """Move lab time forward (the tests freeze the clock)."""
        status, body = self.handle.admin("POST", "/time/advance", {"seconds": seconds})
        assert status == 200, body

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
