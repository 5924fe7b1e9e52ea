"""The admin API's logic, free of any transport: JSON in, ``(status, JSON)`` out.

``GET /state``                      every VM record on every host, plus the hosts
``GET /audit[?host=&vm=&cmdlet=]``  the audit log; ``DELETE /audit`` clears it
``POST /faults`` / ``GET`` / ``DELETE``   fault rules (see :mod:`lab.faults`)
``POST /hosts/<name>/down|up``      take a host off the network or bring it back
``POST /vms/<name>/health``         ``{"health": "Warning"|"Critical"|"Normal"}`` (Normal
                                    drops the override: health is computed again)
``POST /vms/<name>/no-ip``          the guest never reports an IP (``{"no_ip": false}`` undoes)
``POST /time/advance``              ``{"seconds": N}``: move lab time forward
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from lab.audit import AuditLog
from lab.faults import FaultInjector, FaultSpecError, is_world_fault
from lab.hyperv.enums import ReplicationHealth, VMState, parse_member
from lab.hyperv.state import VM, HyperVWorld

Reply = tuple[int, dict[str, Any]]


class AdminError(Exception):
    """A request the admin API refuses; carries the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def set_host_down(world: HyperVWorld, host: str, down: bool) -> None:
    """Take ``host`` down (its endpoint refuses connections) or bring it up."""
    if host not in world.hosts:
        raise AdminError(404, f"no host {host!r}; hosts are {sorted(world.hosts)}")
    with world.lock:
        world.advance()
        if down:
            world.down.add(host)
        else:
            world.down.discard(host)


def set_health(world: HyperVWorld, vm: str, health: Any) -> ReplicationHealth:
    """Force a VM's replication health (both ends); Normal removes the override."""
    _known_vm(world, vm)
    try:
        value = parse_member(ReplicationHealth, health)
    except ValueError as exc:
        raise AdminError(400, f"health: {exc}") from None
    with world.lock:
        world.advance()
        if value is ReplicationHealth.Normal:
            world.health_override.pop(vm.lower(), None)
        else:
            world.health_override[vm.lower()] = value
    return value


def set_no_ip(world: HyperVWorld, vm: str, no_ip: bool = True) -> None:
    """Make a VM's guest never report an IP (or undo it)."""
    _known_vm(world, vm)
    with world.lock:
        if no_ip:
            world.no_ip.add(vm.lower())
        else:
            world.no_ip.discard(vm.lower())


def apply_fault(world: HyperVWorld, faults: FaultInjector, spec: dict[str, Any]) -> dict[str, Any]:
    """Add a rule, or apply a world fault; returns what was done as JSON."""
    if not isinstance(spec, dict):
        raise AdminError(400, "the body must be a JSON object (see lab.faults)")
    if is_world_fault(spec):
        if "host_down" in spec:
            set_host_down(world, str(spec["host_down"]), True)
            return {"host_down": spec["host_down"]}
        vm = spec.get("vm")
        if not isinstance(vm, str):
            raise AdminError(400, "health and no_ip faults need a vm")
        if "health" in spec:
            return {"vm": vm, "health": set_health(world, vm, spec["health"]).name}
        set_no_ip(world, vm, bool(spec["no_ip"]))
        return {"vm": vm, "no_ip": bool(spec["no_ip"])}
    try:
        return {"rule": faults.add(spec).as_dict()}
    except FaultSpecError as exc:
        raise AdminError(400, str(exc)) from None


def _known_vm(world: HyperVWorld, name: str) -> None:
    if not any(vm.name.lower() == name.lower() for vm in world.all_vms()):
        raise AdminError(404, f"no VM {name!r} on any host; GET /state lists them")


def vm_state(world: HyperVWorld, vm: VM) -> dict[str, Any]:
    """One VM record as ``GET /state`` shows it."""
    rep = vm.replication
    last = None if rep is None or rep.last_replication is None else rep.last_replication
    return {
        "name": vm.name,
        "host": vm.host,
        "site": world.hosts[vm.host].site,
        "id": str(vm.id),
        "state": vm.state.name,
        "running": vm.state is VMState.Running,
        "mode": vm.mode.label,
        "replication_state": vm.replication_state.name,
        "health": world.health(vm).name,
        "ips": [ip for ip in world.guest_ips(vm) if ":" not in ip],
        "switches": [a.switch for a in vm.adapters],
        "primary_server": None if rep is None else rep.primary_host or None,
        "replica_server": None if rep is None else rep.replica_host,
        "last_replication": None if last is None else world.clock.datetime(last).isoformat(),
        "replication_count": 0 if rep is None else rep.count,
        "test_vm": None if vm.test_vm is None else vm.test_vm.name,
        "test_of": None if vm.test_of is None else vm.test_of.name,
    }


class AdminRoutes:
    """Routes admin calls to the world, the audit log and the fault injector."""

    def __init__(self, world: HyperVWorld, audit: AuditLog, faults: FaultInjector) -> None:
        self.world = world
        self.audit = audit
        self.faults = faults

    def handle(self, method: str, path: str, body: dict[str, Any] | None) -> Reply:
        """Answer one call; never raises for a bad request (4xx with a message instead)."""
        try:
            return self._route(method.upper(), path, body or {})
        except AdminError as exc:
            return exc.status, {"error": str(exc)}

    def _route(self, method: str, raw_path: str, body: dict[str, Any]) -> Reply:
        url = urlsplit(raw_path)
        parts = [p for p in url.path.split("/") if p]
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        routes: dict[tuple[str, ...], dict[str, Any]] = {
            ("state",): {"GET": self._state},
            ("audit",): {"GET": lambda: self._audit(query), "DELETE": self._clear_audit},
            ("faults",): {
                "GET": self._faults,
                "POST": lambda: (201, apply_fault(self.world, self.faults, body)),
                "DELETE": self._clear_faults,
            },
            ("time", "advance"): {"POST": lambda: self._advance(body)},
        }
        key = tuple(parts)
        if len(parts) == 3 and parts[0] == "hosts" and parts[2] in ("down", "up"):
            key = ("hosts", "*", parts[2])
            routes[key] = {"POST": lambda: self._host(parts[1], parts[2] == "down")}
        if len(parts) == 3 and parts[0] == "vms" and parts[2] in ("health", "no-ip"):
            key = ("vms", "*", parts[2])
            routes[key] = {"POST": lambda: self._vm(parts[1], parts[2], body)}
        handlers = routes.get(key)
        if handlers is None:
            raise AdminError(
                404,
                f"no admin endpoint {url.path!r}; try GET /state, GET|DELETE /audit, "
                "GET|POST|DELETE /faults, POST /hosts/<name>/down|up, "
                "POST /vms/<name>/health|no-ip, POST /time/advance",
            )
        handler = handlers.get(method)
        if handler is None:
            raise AdminError(405, f"{method} is not allowed on {url.path}; use {sorted(handlers)}")
        result: Reply = handler()
        return result

    def _state(self) -> Reply:
        world = self.world
        with world.lock:
            world.advance()
            hosts = [
                {
                    "name": h.name,
                    "site": h.site,
                    "role": h.role,
                    "port": h.port,
                    "down": h.name in world.down,
                }
                for h in world.hosts.values()
            ]
            vms = [vm_state(world, vm) for vm in world.all_vms()]
            now = world.clock.datetime().isoformat()
        return 200, {"time": now, "hosts": hosts, "vms": vms}

    def _audit(self, query: dict[str, str]) -> Reply:
        entries = self.audit.entries(
            host=query.get("host"), vm=query.get("vm"), cmdlet=query.get("cmdlet")
        )
        return 200, {"entries": [e.as_dict() for e in entries]}

    def _clear_audit(self) -> Reply:
        return 200, {"cleared": self.audit.clear()}

    def _faults(self) -> Reply:
        w = self.world
        with w.lock:
            return 200, {
                "rules": [r.as_dict() for r in self.faults.rules()],
                "hosts_down": sorted(w.down),
                "health": {vm: h.name for vm, h in w.health_override.items()},
                "no_ip": sorted(w.no_ip),
            }

    def _clear_faults(self) -> Reply:
        w = self.world
        with w.lock:
            cleared = len(w.down) + len(w.health_override) + len(w.no_ip)
            w.advance()
            w.down.clear()
            w.health_override.clear()
            w.no_ip.clear()
        return 200, {"cleared": cleared + self.faults.clear()}

    def _host(self, host: str, down: bool) -> Reply:
        set_host_down(self.world, host, down)
        return 200, {"host": host, "down": down}

    def _vm(self, vm: str, what: str, body: dict[str, Any]) -> Reply:
        if what == "health":
            if "health" not in body:
                raise AdminError(400, 'give {"health": "Warning"|"Critical"|"Normal"}')
            return 200, {"vm": vm, "health": set_health(self.world, vm, body["health"]).name}
        no_ip = bool(body.get("no_ip", True))
        set_no_ip(self.world, vm, no_ip)
        return 200, {"vm": vm, "no_ip": no_ip}

    def _advance(self, body: dict[str, Any]) -> Reply:
        seconds = body.get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise AdminError(400, 'give {"seconds": N} with N >= 0')
        self.world.clock.advance(float(seconds))
        self.world.advance()
        return 200, {"time": self.world.clock.datetime().isoformat()}
