"""The lab's public facade: build a world from a topology, answer pipelines, admin calls.

``Lab`` is what the protocol layer (``lab.server``) and tests talk to. It has no network
code. ``invoke`` is thread-safe: every pipeline step runs under one world lock, while
injected latency and script durations are slept *outside* it, so 50 concurrent pipelines on
one host proceed together.

Errors follow PowerShell: parameter binding errors, unknown commands, script errors and
``-ErrorAction Stop`` raise :class:`~lab.objects.CmdletError` (terminating); Hyper-V per-VM
errors (unknown VM, invalid replication state) are *non-terminating* by default, as on a real
host: they come back in ``InvokeResult.errors`` and the pipeline carries on.
"""

from __future__ import annotations

import hmac
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lab.admin import AdminRoutes, apply_fault
from lab.audit import AuditLog
from lab.clock import Clock
from lab.faults import FaultInjector
from lab.hyperv import errors
from lab.hyperv.context import Cmdlet, Context, prop
from lab.hyperv.dns import build_zones
from lab.hyperv.hostscripts import (
    WAIT_FOR_ADDRESS,
    WAIT_FOR_ADDRESS_CMDLET,
    addresses_of,
    bind_address_wait,
)
from lab.hyperv.params import Bound, bind
from lab.hyperv.registry import lookup
from lab.hyperv.scripts import outcome
from lab.hyperv.state import HyperVWorld
from lab.objects import CmdletError, Command, InvokeResult, LabObject, TransportFault
from lab.topology import Topology, load_topology

SCRIPT = "Script"


@dataclass(frozen=True)
class HostInfo:
    """A host the lab serves an endpoint for."""

    name: str
    site: str
    role: str
    port: int | None


class Lab:
    """Two Hyper-V Replica sites with VMM and Windows DNS, simulated in memory."""

    def __init__(
        self,
        topology: Topology,
        *,
        time_scale: float | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.topology = topology
        scale = topology.time_scale if time_scale is None else time_scale
        self.clock = clock or Clock(scale)
        self.world = HyperVWorld(topology, self.clock)
        self.world.zones = build_zones(topology)
        self.audit = AuditLog()
        self.faults = FaultInjector(topology.seed)
        self._admin = AdminRoutes(self.world, self.audit, self.faults)
        for spec in topology.faults:
            apply_fault(self.world, self.faults, spec)
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()

    @classmethod
    def from_topology(
        cls,
        topology: Topology | dict[str, Any] | str | os.PathLike[str],
        *,
        time_scale: float | None = None,
    ) -> Lab:
        """Build a lab from a topology (object, dict or YAML path); ``time_scale`` overrides."""
        return cls(load_topology(topology), time_scale=time_scale)

    # ----------------------------------------------------------------- identity
    @property
    def hosts(self) -> dict[str, HostInfo]:
        """Every host by name."""
        return {h.name: HostInfo(h.name, h.site, h.role, h.port) for h in self.topology.hosts}

    @property
    def admin_port(self) -> int | None:
        """The admin API port the topology asks for, if any."""
        return self.topology.admin_port

    @property
    def username(self) -> str:
        """The lab's login name (``ferryman``)."""
        return self.topology.credentials.username

    @property
    def domain(self) -> str:
        """The NTLM domain of the login (``LAB``)."""
        return self.topology.credentials.domain

    @property
    def password(self) -> str:
        """The generated or env-resolved password (never written anywhere by the lab)."""
        return self.topology.credentials.password

    def check_password(self, username: str, password: str) -> bool:
        """True for the lab login as ``user``, ``DOMAIN\\user`` or ``user@DOMAIN``."""
        user, domain = username, None
        if "\\" in user:
            domain, user = user.split("\\", 1)
        elif "@" in user:
            user, domain = user.split("@", 1)
        if domain is not None and domain.split(".")[0].lower() != self.domain.lower():
            return False
        same_user = user.lower() == self.username.lower()
        same_password = hmac.compare_digest(password.encode(), self.password.encode())
        return same_user and same_password

    # ----------------------------------------------------------------- hosts
    def host_down(self, host: str) -> bool:
        """True while ``host`` is down (its endpoint should refuse connections)."""
        with self.world.lock:
            return host in self.world.down

    def host_is_up(self, host: str) -> bool:
        """The opposite of :meth:`host_down`."""
        return not self.host_down(host)

    # ----------------------------------------------------------------- pipelines
    def invoke(self, host: str, commands: Sequence[Command], *, user: str = "") -> InvokeResult:
        """Run a pipeline on ``host``: each command's output is the next one's input."""
        if host not in self.world.hosts:
            raise ValueError(f"no lab host {host!r}; hosts are {sorted(self.world.hosts)}")
        if self.host_down(host):
            raise TransportFault("reset")
        if self.world.hosts[host].language_mode == "NoLanguage" and any(
            c.is_script for c in commands
        ):
            # a constrained endpoint parses nothing but commands: refused before anything runs
            raise CmdletError(errors.scripts_not_allowed())
        result = InvokeResult()
        piped: list[Any] = []
        charged: set[int] = set()  # latency rules this call has paid (once per call)
        for position, command in enumerate(commands):
            if command.is_script and command.name == WAIT_FOR_ADDRESS:
                piped = self._wait_for_address(host, command, user, charged)
            elif command.is_script:
                piped = self._script(host, command, user, charged)
            else:
                piped = self._cmdlet(
                    host, command, piped, result, user, downstream=position > 0, charged=charged
                )
        result.output = piped
        return result

    def _cmdlet(
        self,
        host: str,
        command: Command,
        piped: list[Any],
        result: InvokeResult,
        user: str,
        *,
        downstream: bool = False,
        charged: set[int] | None = None,
        inject: bool = True,
    ) -> list[Any]:
        cmdlet = lookup(command.name)
        if cmdlet is None:
            raise CmdletError(errors.command_not_found(command.name))
        name = cmdlet.signature.cmdlet
        label = _vm_label(command, piped)
        # A cmdlet fed by an earlier one that output nothing: PowerShell still binds (and
        # checks) its named parameters, but calls ProcessRecord once per input object, so it
        # does nothing; running it with no operand would mean "every VM on the host".
        starved = downstream and not piped
        late_fault = None
        if not starved and inject:
            params = _raw_params(command)
            late_fault = self._inject(host, name, label, cmdlet.mutating, params, user, charged)
        try:
            bound = bind(
                cmdlet.signature, command.parameters, has_input=bool(piped) or starved, piped=piped
            )
            target = self._route(host, cmdlet, bound)
        except CmdletError as exc:
            if cmdlet.mutating:
                self._record(host, name, label, _raw_params(command), exc, user)
            raise
        if starved:
            return []
        with self.world.lock:
            self.world.advance()
            ctx = Context(self.world, target, name, bound, list(piped))
            failure: CmdletError | None = None
            try:
                output = cmdlet.handler(ctx)
            except CmdletError as exc:
                failure = exc
            except (ValueError, TypeError, KeyError) as exc:
                # A value the lab cannot read (e.g. a malformed TimeSpan): answer it as an
                # error record instead of breaking the pipeline's transport.
                failure = CmdletError(errors.bad_argument(name, "(input)", str(exc)))
            if cmdlet.mutating:
                self._audit_touches(ctx, label, failure, user, late_fault)
        if failure is not None:
            raise failure
        if late_fault is not None:
            raise TransportFault(late_fault)
        result.errors.extend(ctx.errors)
        result.warnings.extend(ctx.warnings)
        return output

    def _route(self, host: str, cmdlet: Cmdlet, bound: Bound) -> str:
        """Where the cmdlet runs: this host, or the one named by -ComputerName."""
        target = host
        wanted = bound.get("ComputerName")
        if isinstance(wanted, list | tuple):
            wanted = wanted[0] if wanted else None
        if wanted is not None and str(wanted).lower() not in ("localhost", ".", host.lower()):
            short = str(wanted).split(".")[0].lower()
            match = next((h for h in self.world.hosts if h.lower() == short), None)
            if match is None or match in self.world.down:
                raise CmdletError(
                    errors.operation_failed(
                        cmdlet.signature.cmdlet,
                        f"Hyper-V was unable to connect to computer '{wanted}'. Check the name "
                        "and that the host is up.",
                        str(wanted),
                    )
                )
            target = match
        role = self.world.hosts[target].role
        if role != cmdlet.role:
            # The module is not installed there (VMM/DNS cmdlets live on the VMM servers).
            raise CmdletError(errors.command_not_found(cmdlet.signature.cmdlet))
        return target

    def _inject(
        self,
        host: str,
        name: str,
        vm: str | None,
        mutating: bool,
        params: dict[str, Any],
        user: str,
        charged: set[int] | None = None,
    ) -> str | None:
        """Apply latency and failures due before the call; returns a fault due *after* it.

        ``charged``: the latency rules the call has paid already (see ``FaultInjector.decide``).
        """
        decision = self.faults.decide(host, name, vm, charged)
        if decision.delay > 0:
            time.sleep(decision.delay)  # real time, outside every lock
        rule = decision.failure
        if rule is None:
            return None
        if rule.after:
            return str(rule.fail)
        if rule.fail == "error":
            exc = CmdletError(errors.injected(name, rule.error_id, rule.message))
            if mutating:
                self._record(host, name, vm, params, exc, user)
            raise exc
        if mutating:
            self.audit.record(
                time=self._now(),
                host=host,
                cmdlet=name,
                vm=vm,
                parameters=params,
                outcome=f"fault:{rule.fail}",
                user=user,
                changed=False,
            )
        raise TransportFault(str(rule.fail))

    def _script(
        self, host: str, command: Command, user: str, charged: set[int] | None = None
    ) -> list[Any]:
        params = _raw_params(command)
        audited = {"script": command.name, **params}
        late_fault = self._inject(host, SCRIPT, None, True, audited, user, charged)
        result = outcome(self.topology.scripts, command.name, params)
        self.clock.sleep(result.duration)  # outside every lock
        exc = None if result.error is None else CmdletError(result.error)
        self._record(host, SCRIPT, None, audited, exc, user, fault=late_fault)
        if exc is not None:
            raise exc
        if late_fault is not None:
            raise TransportFault(late_fault)
        return list(result.output)

    def _wait_for_address(
        self, host: str, command: Command, user: str, charged: set[int] | None = None
    ) -> list[Any]:
        """Run :data:`~lab.hyperv.hostscripts.WAIT_FOR_ADDRESS` as a host would.

        The call crosses the network once: fault rules match it as the cmdlet the script runs
        (``Get-VMNetworkAdapter``, for the VM it names), their latency charged once before it
        starts. On the host it reads the VM's adapters (``-ErrorAction Stop``: a missing VM
        ends it with the read's error) until one reports an address not in ``-Known`` or
        ``-TimeoutMs`` have passed (real time, as the client's timeouts are), sleeping the
        script's pauses outside every lock; then it outputs the adapters. A host that goes
        down meanwhile drops the connection. Not a change: nothing is audited.
        """
        label = _vm_label(command, [])
        params = _raw_params(command)
        late_fault = self._inject(
            host, WAIT_FOR_ADDRESS_CMDLET, label, False, params, user, charged
        )
        wait = bind_address_wait(command.parameters)
        read = Command(WAIT_FOR_ADDRESS_CMDLET, [("VMName", wait.vm_name), ("ErrorAction", "Stop")])
        started = time.monotonic()
        while True:
            if self.host_down(host):
                raise TransportFault("reset")
            adapters = self._cmdlet(host, read, [], InvokeResult(), user, inject=False)
            elapsed = time.monotonic() - started
            left = wait.timeout - elapsed
            if left <= 0 or any(wait.is_new(a) for a in addresses_of(adapters)):
                break
            time.sleep(wait.pause(elapsed, left))  # real time, outside every lock
        if late_fault is not None:
            raise TransportFault(late_fault)
        return adapters

    # ----------------------------------------------------------------- audit
    def _now(self) -> str:
        return self.clock.datetime().isoformat()

    def _record(
        self,
        host: str,
        cmdlet: str,
        vm: str | None,
        params: dict[str, Any],
        exc: CmdletError | None,
        user: str,
        fault: str | None = None,
    ) -> None:
        outcome_text = "ok" if exc is None else "error:" + exc.info.fully_qualified_error_id
        self.audit.record(
            time=self._now(),
            host=host,
            cmdlet=cmdlet,
            vm=vm,
            parameters=params,
            outcome=outcome_text,
            user=user,
            changed=exc is None,
            fault=fault,
        )

    def _audit_touches(
        self,
        ctx: Context,
        label: str | None,
        failure: CmdletError | None,
        user: str,
        fault: str | None = None,
    ) -> None:
        params = {k: _summary(v) for k, v in ctx.bound.values.items()}
        touches = list(ctx.touched)
        if failure is not None and not any(t.outcome.startswith("error:") for t in touches):
            self._record(ctx.host, ctx.cmdlet, label, params, failure, user)
        for t in touches:
            self.audit.record(
                time=self._now(),
                host=ctx.host,
                cmdlet=ctx.cmdlet,
                vm=t.vm,
                parameters=params,
                outcome=t.outcome,
                user=user,
                changed=t.changed,
                fault=fault,
            )
        if not touches and failure is None:
            self.audit.record(
                time=self._now(),
                host=ctx.host,
                cmdlet=ctx.cmdlet,
                vm=label,
                parameters=params,
                outcome="ok",
                user=user,
                changed=False,
                fault=fault,
            )

    # ----------------------------------------------------------------- admin, time
    def admin(
        self, method: str, path: str, body: dict[str, Any] | None
    ) -> tuple[int, dict[str, Any]]:
        """Answer an admin API call (see :mod:`lab.admin`)."""
        return self._admin.handle(method, path, body)

    def tick(self) -> None:
        """Bring replication, boots and recovery points up to lab time now."""
        self.world.advance()

    def start(self) -> None:
        """Start the background ticker (replication cycles at the scaled frequency)."""
        if self._ticker is not None:
            return
        self._stop.clear()
        # About one tick per lab second, within [20 ms, 1 s] of real time (1 s when frozen:
        # reads bring the world up to date anyway, so the ticker only keeps it fresh).
        scale = self.clock.time_scale
        interval = 1.0 if self.clock.frozen else min(1.0, max(0.02, scale))
        self._ticker = threading.Thread(
            target=self._tick_loop, args=(interval,), name="lab-ticker", daemon=True
        )
        self._ticker.start()

    def stop(self) -> None:
        """Stop the ticker and wait for it."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
            self._ticker = None

    def close(self) -> None:
        """Release background work (same as :meth:`stop`)."""
        self.stop()

    def _tick_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.tick()

    def __enter__(self) -> Lab:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _vm_label(command: Command, piped: list[Any]) -> str | None:
    """The VM a call is about, for fault matching and the audit log."""
    for name, value in command.parameters:
        key = (name or "").lstrip("-").lower()
        if name is None or key in ("vmname", "name", "vm"):
            first = value[0] if isinstance(value, list | tuple) and value else value
            if isinstance(first, str):
                return first
            label = prop(first, "VMName") or prop(first, "Name")
            if label is not None:
                return str(label)
    for obj in piped:
        label = prop(obj, "VMName") or prop(obj, "Name")
        if label is not None:
            return str(label)
    return None


def _raw_params(command: Command) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, (name, value) in enumerate(command.parameters):
        out[(name or f"arg{i}").lstrip("-")] = value
    return _jsonable(out)


def _summary(value: Any) -> Any:
    """A parameter value for the audit log: objects (VMs, snapshots, records) by name."""
    if isinstance(value, list | tuple):
        return [_summary(v) for v in value]
    if isinstance(value, dict | LabObject) or hasattr(value, "PSObject"):
        for key in ("Name", "HostName", "VMName"):
            label = prop(value, key)
            if label is not None:
                return str(label)
    return _jsonable(value)


def _jsonable(value: Any) -> Any:
    """Parameters as plain JSON for the audit log (objects by their name)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, LabObject):
        return value.to_string or str(value.properties.get("Name"))
    label = prop(value, "Name") or prop(value, "HostName")
    return str(label) if label is not None else str(value)
