"""A small in-memory Hyper-V Replica world behind fake PowerShellRunners.

It follows the state table of workflows/ARCHITECTURE.md closely enough for the executors' unit
tests: every cmdlet checks its precondition and fails like Hyper-V (a terminating
``CmdletFailed``) when it does not hold, and every call is recorded so tests can assert that
running a step twice makes no second mutating call. Integration tests use the real lab over
pypsrp instead.

Pipelines follow the lab (``lab/hyperv/failover.py``): objects one command outputs reach the
next as *live* objects of this host, so ``Get-VMSnapshot ... | Start-VMFailover`` binds the
piped snapshot as the recovery point, while a snapshot sent as a parameter value (a client's
copy or a hashtable) fails to bind, as on a real host. A command that the previous one fed
nothing never runs (PowerShell calls ProcessRecord once per input object).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lab.hyperv.wildcard import matches
from workers.errors import CmdletFailed, RemoteTransientError
from workers.hyperv.hyperv import WAIT_FOR_ADDRESS_SCRIPT
from workers.powershell import PSError, PSResult
from workflows.steps import HostRef

READS = ("Get-",)


@dataclass
class Repl:
    """One side of a replication relationship."""

    state: str = "Replicating"
    mode: str = "Primary"
    health: str = "Normal"
    primary: str = ""
    replica: str = ""
    done: int = 1  # completed replications


@dataclass(frozen=True)
class Point:
    """A replica recovery point (``Get-VMSnapshot -SnapshotType Replica``)."""

    id: str
    name: str
    created: str
    snapshot_type: str = "Replica"


@dataclass
class FakeVM:
    """A VM on one host; a replica has recovery points, oldest first, and remembers the
    point it was failed over to (None: the latest, or not failed over)."""

    name: str
    state: str = "Off"
    repl: Repl | None = None
    switches: list[str | None] = field(default_factory=lambda: [None])
    ips: list[str] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    failover_point: str | None = None


@dataclass(frozen=True)
class Live:
    """An object as it flows inside one host's pipeline: live, unlike a client's copy."""

    host: str
    cmdlet: str
    properties: dict[str, Any]


@dataclass
class Call:
    """One recorded runner call; a command of a pipeline also records what was piped in."""

    host: str
    cmdlet: str
    params: dict[str, Any]
    switches: tuple[str, ...]
    piped: tuple[dict[str, Any], ...] = ()

    @property
    def mutating(self) -> bool:
        """Whether the call changes something (everything but Get-*)."""
        return not self.cmdlet.startswith(READS)


@dataclass
class World:
    """Hosts with VMs, guest addresses per switch, scripts, faults and the call log."""

    vms: dict[tuple[str, str], FakeVM] = field(default_factory=dict)
    subnets: dict[str, str] = field(default_factory=dict)  # switch -> "10.20." prefix
    suffix: dict[str, str] = field(default_factory=dict)  # VM -> last two octets "1.11"
    calls: list[Call] = field(default_factory=list)
    down: set[str] = field(default_factory=set)
    faults: dict[tuple[str, str], BaseException] = field(default_factory=dict)
    scripts: dict[str, Callable[[Mapping[str, Any]], PSResult]] = field(default_factory=dict)
    boot_without_ip: set[str] = field(default_factory=set)
    # Start-VM answers before the VM runs (its -Passthru object says Starting)
    slow_start: set[str] = field(default_factory=set)

    # --- building ------------------------------------------------------------------------

    def replicated(self, vm: str, primary: str, replica: str, *, suffix: str) -> None:
        """A VM running on ``primary``, replicating to ``replica`` (replica off)."""
        self.vms[(primary, vm)] = FakeVM(
            vm,
            "Running",
            Repl("Replicating", "Primary", "Normal", primary, replica),
            [self._switch_of(primary)],
            [],
        )
        self.vms[(replica, vm)] = FakeVM(
            vm,
            "Off",
            Repl("Replicating", "Replica", "Normal", primary, replica),
            [None],
            points=[
                Point(
                    f"{vm}-point-{hour}",
                    f"{vm} - Standard Replica - {hour}",
                    f"2026-11-29T{hour}:00:00Z",
                )
                for hour in ("12", "13")
            ],
        )
        self.suffix[vm] = suffix
        self._assign_ip(primary, self.vms[(primary, vm)])

    def _switch_of(self, host: str) -> str | None:
        return "corp-sto" if "sto" in host else None

    def vm(self, host: str, name: str) -> FakeVM:
        """The VM ``name`` on ``host`` (KeyError when absent)."""
        return self.vms[(host, name)]

    def mutations(self, vm: str | None = None) -> list[Call]:
        """Mutating calls so far (optionally only those naming ``vm``)."""
        found = [c for c in self.calls if c.mutating]
        if vm is not None:
            found = [c for c in found if vm in _vm_names(c)]
        return found

    def runner(self, ref: HostRef) -> FakeRunner:
        """A runner factory for StepContext."""
        return FakeRunner(self, ref.name)

    # --- behaviour -----------------------------------------------------------------------

    def _assign_ip(self, host: str, vm: FakeVM) -> None:
        vm.ips = []
        if vm.state != "Running" or vm.name in self.boot_without_ip:
            return
        base = vm.name.removesuffix(" - Test")
        for switch in vm.switches:
            if switch and switch in self.subnets:
                vm.ips.append(self.subnets[switch] + self.suffix.get(base, "0.1"))

    def invoke(
        self,
        host: str,
        cmdlet: str,
        p: dict[str, Any],
        sw: tuple[str, ...],
        piped: Sequence[Live] = (),
    ) -> PSResult:
        """Run one cmdlet on ``host``, with ``piped`` as its pipeline input."""
        self.calls.append(Call(host, cmdlet, p, sw, tuple(o.properties for o in piped)))
        if host in self.down:
            raise RemoteTransientError(f"{cmdlet} on {host}: connection refused; will retry")
        fault = self.faults.pop((host, cmdlet), None)
        if fault is not None:
            raise fault
        if "VMRecoverySnapshot" in p:
            # Only a live VMSnapshot converts; what a client sends is a copy or a hashtable.
            raise _fail(
                host,
                cmdlet,
                "Cannot bind parameter 'VMRecoverySnapshot'. Cannot convert the value of type "
                '"System.Collections.Hashtable" to type "Microsoft.HyperV.PowerShell.VMSnapshot".',
                "InvalidArgument",
                error_id="CannotConvertArgumentNoMessage",
            )
        handler = getattr(self, "_" + cmdlet.replace("-", "_").lower(), None)
        if handler is None:
            raise AssertionError(f"the fake world does not know {cmdlet}")
        if piped and cmdlet != "Start-VMFailover":
            raise AssertionError("the fake world pipes objects only into Start-VMFailover")
        result: PSResult = (
            self._start_vmfailover(host, p, set(sw), piped) if piped else handler(host, p, set(sw))
        )
        return result

    def _find(self, host: str, name: str, cmdlet: str) -> FakeVM:
        vm = self.vms.get((host, name))
        if vm is None:
            raise _fail(
                host,
                cmdlet,
                f'Hyper-V was unable to find a virtual machine with name "{name}".',
                "ObjectNotFound",
            )
        return vm

    def _get_vm(self, host: str, p: dict[str, Any], sw: set[str]) -> PSResult:
        vm = self.vms.get((host, p["Name"]))
        if vm is None:
            return PSResult(
                errors=[
                    PSError(
                        f'Hyper-V was unable to find a virtual machine with name "{p["Name"]}".',
                        "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM",
                        "InvalidArgument",
                    )
                ],
                had_errors=True,
            )
        obj = {"Name": vm.name, "State": vm.state, "ComputerName": host, "Id": f"id-{vm.name}"}
        if vm.repl:
            obj |= {
                "ReplicationState": vm.repl.state,
                "ReplicationMode": vm.repl.mode,
                "ReplicationHealth": vm.repl.health,
            }
        else:
            obj |= {"ReplicationState": "Disabled", "ReplicationMode": "None"}
        return PSResult(output=[obj])

    def _get_vmreplication(self, host: str, p: dict[str, Any], sw: set[str]) -> PSResult:
        vm = self._find(host, p["VMName"], "Get-VMReplication")
        if vm.repl is None:
            raise _fail(
                host,
                "Get-VMReplication",
                f"Replication is not enabled for virtual machine '{vm.name}'.",
            )
        r = vm.repl
        return PSResult(
            output=[
                {
                    "VMName": vm.name,
                    "State": r.state,
                    "Health": r.health,
                    "Mode": r.mode,
                    "PrimaryServer": f"{r.primary}.lab.example",
                    "ReplicaServer": f"{r.replica}.lab.example",
                    "FrequencySec": 300,
                }
            ]
        )

    def _get_vmnetworkadapter(self, host: str, p: dict[str, Any], sw: set[str]) -> PSResult:
        vm = self._find(host, p["VMName"], "Get-VMNetworkAdapter")
        out = []
        for i, switch in enumerate(vm.switches):
            out.append(
                {
                    "Name": f"nic{i}",
                    "SwitchName": switch,
                    "IPAddresses": list(vm.ips),
                    "Id": f"{vm.name}-nic{i}",
                }
            )
        return PSResult(output=out)

    def _stop_vm(self, host: str, p: dict[str, Any], sw: set[str]) -> PSResult:
        vm = self._find(host, p["Name"], "Stop-VM")
        vm.state = "Off"
        self._assign_ip(host, vm)
        return PSResult()

    def _start_vm(self, host: str, p: dict[str, Any], sw: set[str]) -> PSResult:
        vm = self._find(host, p["Name"], "Start-VM")
        if (
            vm.repl
            and vm.repl.mode == "Replica"
            and vm.repl.state != "FailedOverWaitingCompletion"
            and vm.repl.state != "FailedOver"
        ):
            raise _fail(
                host, "Start-VM", f"'{vm.name}' is a replica and cannot be started before failover."
            )
        vm.state = "Running"
        self._assign_ip(host, vm)
        if vm.name in self.slow_start and "Passthru" in sw:
            shown = self._get_vm(host, {"Name": vm.name}, sw)
            return PSResult(output=[{**shown.output[0], "State": "Starting"}])
        return self._passthru(host, vm.name, sw)

    def _get_vmsnapshot(self, host: str, p: dict[str, Any], sw: set[str]) -> PSResult:
        vm = self._find(host, p["VMName"], "Get-VMSnapshot")
        wanted_type = p.get("SnapshotType")
        # -Name takes PowerShell wildcards (backtick escapes); no match lists nothing.
        name = str(p.get("Name", "*"))
        return PSResult(
            output=[
                {
                    "Name": point.name,
                    "Id": point.id,
                    "VMName": vm.name,
                    "SnapshotType": point.snapshot_type,
                    "CreationTime": point.created,
                }
                for point in vm.points
                if wanted_type in (None, point.snapshot_type) and matches(name, point.name)
            ]
        )

    def _start_vmfailover(
        self, host: str, p: dict[str, Any], sw: set[str], piped: Sequence[Live] = ()
    ) -> PSResult:
        if not piped:
            return self._failover(host, p["VMName"], sw, None)
        # Each piped snapshot is one failover, as each input object is one ProcessRecord.
        result = PSResult()
        for obj in piped:
            snapshot = obj.properties
            if obj.host != host or obj.cmdlet != "Get-VMSnapshot":
                raise _fail(
                    host,
                    "Start-VMFailover",
                    "The input object cannot be bound to any parameters for the command.",
                    "InvalidArgument",
                    error_id="InputObjectNotBound",
                )
            vm = self.vms.get((host, snapshot["VMName"]))
            if vm is None or snapshot["Id"] not in [pt.id for pt in vm.points]:
                # Non-terminating, as in the lab: the point was merged or pruned meanwhile.
                result.errors.append(
                    PSError(
                        "Hyper-V was unable to find the recovery point given in "
                        "-VMRecoverySnapshot.",
                        "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.StartVMFailover",
                        "InvalidArgument",
                        snapshot["VMName"],
                    )
                )
                result.had_errors = True
                continue
            result.output += self._failover(host, vm.name, sw, snapshot["Id"]).output
        return result

    def _failover(self, host: str, name: str, sw: set[str], point: str | None) -> PSResult:
        vm = self._find(host, name, "Start-VMFailover")
        r = vm.repl
        if r is None:
            raise _fail(host, "Start-VMFailover", "replication is not enabled")
        if "Prepare" in sw:
            if r.mode != "Primary" or r.state != "Replicating" or vm.state != "Off":
                raise _fail(host, "Start-VMFailover", f"cannot prepare in {r.state}/{vm.state}")
            r.state = "PreparedForFailover"
            return self._passthru(host, name, sw)
        if r.mode != "Replica":
            raise _fail(host, "Start-VMFailover", "the operation is invalid on the primary")
        if "AsTest" in sw:
            test = f"{name} - Test"
            if r.state != "Replicating" or (host, test) in self.vms:
                raise _fail(host, "Start-VMFailover", f"cannot test-fail over in {r.state}")
            self.vms[(host, test)] = FakeVM(test, "Off", None, [None], failover_point=point)
            return self._passthru(host, test, sw)
        if (
            r.state not in ("Replicating", "Resynchronizing", "Suspended")
            or vm.state != "Off"
            or r.done < 1
        ):
            raise _fail(host, "Start-VMFailover", f"cannot fail over in {r.state}")
        r.state = "FailedOverWaitingCompletion"
        vm.failover_point = point
        return self._passthru(host, name, sw)

    def _passthru(self, host: str, name: str, sw: set[str]) -> PSResult:
        return self._get_vm(host, {"Name": name}, sw) if "Passthru" in sw else PSResult()

    def _stop_vmfailover(self, host: str, p: dict[str, Any], sw: set[str]) -> PSResult:
        name = p["VMName"]
        vm = self._find(host, name, "Stop-VMFailover")
        test = (host, f"{name} - Test")
        if test in self.vms:
            del self.vms[test]
            return PSResult()
        r = vm.repl
        if r and r.state in ("FailedOverWaitingCompletion", "PreparedForFailover"):
            if vm.state != "Off" and r.mode == "Replica":
                raise _fail(host, "Stop-VMFailover", "turn the VM off first")
            r.state = "Replicating"
            vm.failover_point = None
            return PSResult()
        raise _fail(host, "Stop-VMFailover", f"nothing to cancel in {r.state if r else 'Disabled'}")

    def _complete_vmfailover(self, host: str, p: dict[str, Any], sw: set[str]) -> PSResult:
        vm = self._find(host, p["VMName"], "Complete-VMFailover")
        if not vm.repl or vm.repl.state != "FailedOverWaitingCompletion":
            raise _fail(host, "Complete-VMFailover", "not failed over")
        vm.repl.state, vm.repl.health = "FailedOver", "Warning"
        return PSResult()

    def _set_vmreplication(self, host: str, p: dict[str, Any], sw: set[str]) -> PSResult:
        name = p["VMName"]
        vm = self._find(host, name, "Set-VMReplication")
        r = vm.repl
        assert r is not None
        if "AsReplica" in sw:
            if vm.state != "Off":
                raise _fail(host, "Set-VMReplication", "turn the virtual machine off first")
            r.mode, r.state = "Replica", "WaitingForInitialReplication"
            return PSResult()
        if "Reverse" not in sw:
            raise AssertionError("only -Reverse and -AsReplica are simulated")
        if r.mode == "Primary":
            raise _fail(host, "Set-VMReplication", "-Reverse is invalid on the primary")
        target = p.get("ReplicaServerName")
        if target:
            if r.state != "FailedOver":
                raise _fail(host, "Set-VMReplication", f"commit first (state {r.state})")
            vm.repl = Repl("ReadyForInitialReplication", "Primary", "Normal", host, target, 0)
            return PSResult()
        if r.state != "FailedOverWaitingCompletion":
            raise _fail(host, "Set-VMReplication", f"cannot reverse in {r.state}")
        old = self.vms[(r.primary, name)]
        assert old.repl is not None
        if old.repl.state != "PreparedForFailover":
            raise _fail(host, "Set-VMReplication", "the primary is not prepared for failover")
        old_primary = r.primary
        vm.repl = Repl("Replicating", "Primary", "Normal", host, old_primary)
        old.repl = Repl("Replicating", "Replica", "Normal", host, old_primary)
        return PSResult()

    def _start_vminitialreplication(self, host: str, p: dict[str, Any], sw: set[str]) -> PSResult:
        vm = self._find(host, p["VMName"], "Start-VMInitialReplication")
        r = vm.repl
        if not r or r.state != "ReadyForInitialReplication":
            raise _fail(host, "Start-VMInitialReplication", "not ready")
        r.state, r.done = "Replicating", 1
        other = self.vms.get((r.replica, vm.name))
        if other and other.repl:
            other.repl = Repl("Replicating", "Replica", "Normal", host, r.replica)
        return PSResult()

    def _connect_vmnetworkadapter(self, host: str, p: dict[str, Any], sw: set[str]) -> PSResult:
        vm = self._find(host, p["VMName"], "Connect-VMNetworkAdapter")
        if p["SwitchName"] not in self.subnets:
            raise _fail(
                host, "Connect-VMNetworkAdapter", f"no switch {p['SwitchName']}", "InvalidArgument"
            )
        vm.switches = [p["SwitchName"] for _ in vm.switches]
        self._assign_ip(host, vm)
        return PSResult()

    def _disconnect_vmnetworkadapter(self, host: str, p: dict[str, Any], sw: set[str]) -> PSResult:
        vm = self._find(host, p["VMName"], "Disconnect-VMNetworkAdapter")
        vm.switches = [None for _ in vm.switches]
        self._assign_ip(host, vm)
        return PSResult()

    def _get_scvirtualmachine(self, host: str, p: dict[str, Any], sw: set[str]) -> PSResult:
        out = []
        for (vm_host, name), vm in self.vms.items():
            if name == p["Name"]:
                adapters = [
                    {"ID": f"{vm_host}/{name}/{i}", "Name": f"nic{i}"}
                    for i in range(len(vm.switches))
                ]
                status = "Running" if vm.state == "Running" else "PowerOff"
                out.append(
                    {
                        "Name": name,
                        "ID": f"{vm_host}/{name}",
                        "HostName": vm_host,
                        "Status": status,
                        "VirtualNetworkAdapters": adapters,
                    }
                )
        return PSResult(output=out)

    def _get_scipaddress(self, host: str, p: dict[str, Any], sw: set[str]) -> PSResult:
        vm_host, name, _ = p["GrantToObjectID"].split("/")
        return PSResult(output=[{"Address": ip} for ip in self.vms[(vm_host, name)].ips])


def _vm_names(call: Call) -> set[str]:
    names = {call.params.get("Name"), call.params.get("VMName")}
    names |= {obj.get("VMName") for obj in call.piped}
    return {str(n) for n in names if n}


def _fail(
    host: str,
    cmdlet: str,
    message: str,
    category: str = "InvalidOperation",
    *,
    error_id: str | None = None,
) -> CmdletFailed:
    return CmdletFailed(
        f"{cmdlet} failed on {host}: {message}",
        host=host,
        cmdlet=cmdlet,
        fully_qualified_error_id=f"{error_id or category},{cmdlet}",
        category=category,
    )


@dataclass
class FakeRunner:
    """A PowerShellRunner for one host of a :class:`World`."""

    world: World
    host: str

    def run(
        self,
        cmdlet: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        switches: Sequence[str] = (),
        timeout: float | None = None,
    ) -> PSResult:
        """Run one cmdlet in the world."""
        return self.world.invoke(self.host, cmdlet, dict(parameters or {}), tuple(switches))

    def run_pipeline(
        self,
        commands: Sequence[tuple[str, Mapping[str, Any], Sequence[str]]],
        *,
        timeout: float | None = None,
    ) -> PSResult:
        """Run ``commands`` as one pipeline on this host: each command gets the previous one's
        output as live input, a command fed nothing does not run, and the result is the last
        command's output with every command's error records (a terminating error raises)."""
        if not commands:
            raise ValueError("a pipeline needs at least one command")
        piped: list[Live] = []
        output: list[dict[str, Any]] = []
        errors: list[PSError] = []
        for index, (cmdlet, parameters, switches) in enumerate(commands):
            if index and not piped:
                output = []
                break
            result = self.world.invoke(self.host, cmdlet, dict(parameters), tuple(switches), piped)
            errors += result.errors
            output = result.output
            piped = [Live(self.host, cmdlet, obj) for obj in output]
        return PSResult(output=output, errors=errors, had_errors=bool(errors))

    def run_script(
        self,
        script: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> PSResult:
        """Run a script registered in ``world.scripts`` under its text.

        The host-side wait for an address (``WAIT_FOR_ADDRESS_SCRIPT``) is one
        ``Get-VMNetworkAdapter`` here: this world has no clock, so its guests report their
        addresses when they start and the wait has nothing to wait for.
        """
        params = dict(parameters or {})
        if script == WAIT_FOR_ADDRESS_SCRIPT:
            read = {"VMName": params["VMName"]}
            return self.world.invoke(self.host, "Get-VMNetworkAdapter", read, ())
        self.world.calls.append(Call(self.host, "script", {"script": script, **params}, ()))
        if self.host in self.world.down:
            raise RemoteTransientError(f"script on {self.host}: connection refused")
        fault = self.world.faults.pop((self.host, "script"), None)
        if fault is not None:
            raise fault
        return self.world.scripts[script](params)


def host_ref(name: str) -> HostRef:
    """A HostRef for a fake host (nothing is ever connected)."""
    site = "stockholm" if "sto" in name else "gothenburg"
    return HostRef(name, site, f"http://127.0.0.1:1/{name}", "ntlm", "LAB\\ferryman", "env:NOPE")


def example_world() -> World:
    """sql-01 (hv-sto-1 -> hv-got-1) and web-02 (hv-sto-2 -> hv-got-2), as in the example."""
    world = World(subnets={"corp-sto": "10.10.", "corp-got": "10.20.", "test-got": "10.99."})
    world.replicated("sql-01", "hv-sto-1", "hv-got-1", suffix="1.11")
    world.replicated("web-02", "hv-sto-2", "hv-got-2", suffix="3.32")
    return world
