"""The lab topology: which sites, hosts, networks, VMs, DNS zones and faults the lab simulates.

A topology is a YAML (or dict) document::

    time_scale: 0.01          # real seconds per lab second (0.01: 100x faster; 0: frozen clock,
                              # time moves only through POST /time/advance; default 1: real
                              # time). `ferryman lab serve --time-scale` overrides it.
    admin_port: 15999         # optional; where the protocol layer serves the admin API
    seed: 7                   # optional; seeds the fault injector's random numbers
    initial_replication_seconds: 60   # lab seconds an initial replication takes, unless:
    replication_bandwidth_mbps: 1000  # optional; then an initial replication (and a
                              # resynchronisation, of a tenth of the disks) takes the VM's
                              # disk_gb at this many megabits per lab second
    resync_after_seconds: 3600        # optional (0: never); a primary that could not
                              # replicate for this long needs resynchronisation
                              # (WaitingForStartResynchronize, health Critical)
    credentials:
      username: ferryman
      domain: LAB
      password: generate      # random at start, or env:NAME (never a literal value)
    sites:                    # or just [stockholm, gothenburg]
      - {name: stockholm, cloud: sto-gold}    # cloud: the VMM cloud its VMs belong to
    hosts:
      - {name: vmm-sto, site: stockholm, role: vmm, port: 15985}     # port optional
      - {name: hv-sto-1, site: stockholm, role: hyperv}
      # language_mode: NoLanguage -- a constrained endpoint (JEA's default): cmdlets with
      # parameters run, script text is refused with ScriptsNotAllowed (default FullLanguage)
      - name: hv-got-1
        site: gothenburg
        role: hyperv
        replica_server:       # optional; Get-VMReplicationServer (defaults shown)
          enabled: true       # false: refuses Enable-VMReplication toward it
          auth: [kerberos, certificate]   # the authentication types it accepts
          storage: 'D:\\Hyper-V\\Replica'  # DefaultStorageLocation of replica VMs
    networks:                 # VM network name == Hyper-V virtual switch name
      - {name: corp-sto, site: stockholm, subnet: 10.10.0.0/16}
      - {name: test-got, site: gothenburg, subnet: 10.99.0.0/16, test: true}
    vms:
      - name: sql-01
        primary: hv-sto-1
        replica: hv-got-1     # optional: no replica -> a VM that is not protected
        networks: [corp-sto]  # adapters, connected on the primary
        ips: {corp-sto: 10.10.1.11, corp-got: 10.20.1.11}   # the guest's IP per network;
                              # networks not listed get the subnet's prefix + the last two
                              # octets of the VM's first IP
        disk_gb: 40           # size of its disks (initial replication time, progress)
        boot_seconds: 30      # lab seconds from Start-VM until the guest reports its IP
                              # (on a frozen clock: only once lab time is advanced that far)
        running: true         # primary running at start (default true)
        replication:          # omitted when replica is absent
          state: replicating  # replicating | ready (enabled, no initial replication yet)
          frequency: 300      # 30 | 300 | 900
          recovery_history: 0 # 0..24 additional hourly recovery points
          app_consistent_hours: 0   # 0 = off; else 1..12, < recovery_history
          auth: kerberos      # kerberos (HTTP 8083) | certificate (HTTPS 8084)
          port: 8083          # optional override
          compression: true
    dns:
      zones:
        - name: corp.example
          servers: [vmm-sto]  # VMM hosts answering the Windows DNS cmdlets for it
          records:
            - {name: sql-01, type: A, data: 10.10.1.11, ttl: 300}   # ttl: seconds
            - {name: sql-01, type: AAAA, data: "fd00::11"}         # A, AAAA, PTR, ...
            - {name: www, type: A, data: [10.10.3.31, 10.10.3.32]}
    scripts:                  # behaviours of AddScript text, first match wins
      - {pattern: "Invoke-Health", output: ["ok"], duration: 2}    # duration: lab seconds
      - {pattern: "throw", error: "the script failed"}
    faults:                   # same rules as POST /faults (see lab.faults)
      - {cmdlet: Start-VM, vm: sql-01, fail: http500, count: 2}
      - {host_down: hv-sto-2}
      - {vm: web-01, health: Warning}
      - {vm: web-02, no_ip: true}

Every duration in the topology is in *lab* seconds and follows ``time_scale``
(``boot_seconds``, ``initial_replication_seconds``, replication ``frequency``, script
``duration``); only a fault's ``latency_ms`` is real time, since it exists to trip client
timeouts.

Loading validates everything and reports every problem at once in :class:`TopologyError`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lab.faults import FaultInjector, FaultSpecError, is_world_fault

ROLES = ("vmm", "hyperv")
# What the endpoint lets a session run: everything, or cmdlets only (a JEA endpoint).
LANGUAGE_MODES = ("FullLanguage", "NoLanguage")
FREQUENCIES = (30, 300, 900)
AUTH_PORTS = {"kerberos": 8083, "certificate": 8084}


class TopologyError(ValueError):
    """The topology is invalid; ``problems`` lists every problem with its path in the file."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"invalid lab topology {source}; fix these and load it again:\n{lines}")


@dataclass(frozen=True)
class TopologyHost:
    """A simulated Windows host: a VMM server or a Hyper-V host."""

    name: str
    site: str
    role: str
    port: int | None = None
    replica_server: ReplicaServerSpec | None = None
    language_mode: str = "FullLanguage"


@dataclass(frozen=True)
class ReplicaServerSpec:
    """A Hyper-V host's Replica server configuration (``Get-VMReplicationServer``)."""

    enabled: bool = True
    auth: tuple[str, ...] = ("kerberos", "certificate")
    storage: str = "D:\\Hyper-V\\Replica"


@dataclass(frozen=True)
class NetworkSpec:
    """A VM network (and the Hyper-V switch of the same name on every host of its site)."""

    name: str
    site: str
    subnet: ipaddress.IPv4Network | None = None
    test: bool = False


@dataclass(frozen=True)
class ReplicationSpec:
    """Replication settings of a protected VM (see workflows/ARCHITECTURE.md, protection)."""

    state: str = "replicating"
    frequency: int = 300
    recovery_history: int = 0
    app_consistent_hours: int = 0
    auth: str = "kerberos"
    port: int = 8083
    compression: bool = True


@dataclass(frozen=True)
class VMSpec:
    """One VM: its primary (and optional replica) host, adapters, IPs and boot time."""

    name: str
    primary: str
    replica: str | None
    networks: tuple[str, ...]
    ips: dict[str, str]
    boot_seconds: float = 30.0
    running: bool = True
    replication: ReplicationSpec | None = None
    disk_gb: float = 40.0


@dataclass(frozen=True)
class RecordSpec:
    """A DNS resource record set (one name, one type, one or more values)."""

    name: str
    type: str
    data: tuple[str, ...]
    ttl: int = 3600


@dataclass(frozen=True)
class ZoneSpec:
    """A DNS zone served through the Windows DNS cmdlets of ``servers``."""

    name: str
    servers: tuple[str, ...]
    records: tuple[RecordSpec, ...] = ()


@dataclass(frozen=True)
class ScriptBehaviour:
    """What a script whose text matches ``pattern`` does: output, error, duration."""

    pattern: str
    output: tuple[Any, ...] = ()
    error: str | None = None
    duration: float = 0.0


@dataclass(frozen=True)
class Credentials:
    """The lab's single login; ``password`` is the generated or env-resolved value."""

    username: str
    domain: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Topology:
    """A validated lab topology (build it with :func:`load_topology`)."""

    sites: tuple[str, ...]
    hosts: tuple[TopologyHost, ...]
    networks: tuple[NetworkSpec, ...]
    vms: tuple[VMSpec, ...]
    zones: tuple[ZoneSpec, ...]
    scripts: tuple[ScriptBehaviour, ...]
    faults: tuple[dict[str, Any], ...]
    credentials: Credentials
    time_scale: float = 1.0
    admin_port: int | None = None
    seed: int | None = None
    initial_replication_seconds: float = 60.0
    replication_bandwidth_mbps: float = 0.0
    resync_after_seconds: float = 0.0
    clouds: dict[str, str] = field(default_factory=dict)

    def host(self, name: str) -> TopologyHost:
        """The host called ``name`` (KeyError if there is none)."""
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    def network(self, name: str) -> NetworkSpec | None:
        """The network called ``name``, if any."""
        return next((n for n in self.networks if n.name == name), None)


def load_topology(source: Topology | dict[str, Any] | str | os.PathLike[str]) -> Topology:
    """Load and validate a topology from a :class:`Topology`, a dict or a YAML file path."""
    if isinstance(source, Topology):
        return source
    if isinstance(source, dict):
        return _Parser("<dict>", source).parse()
    path = Path(source)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise TopologyError(str(path), [f"cannot read it: {exc}"]) from exc
    if not isinstance(data, dict):
        raise TopologyError(str(path), ["the document must be a mapping"])
    return _Parser(str(path), data).parse()


class _Parser:
    """Collects every problem instead of stopping at the first."""

    def __init__(self, source: str, data: dict[str, Any]) -> None:
        self.source = source
        self.data = data
        self.problems: list[str] = []

    def fail(self, path: str, message: str) -> None:
        """Note one problem at ``path``."""
        self.problems.append(f"{path}: {message}")

    def parse(self) -> Topology:
        """The topology, or TopologyError listing every problem found."""
        d = self.data
        sites = self._sites(d.get("sites") or [])
        clouds = {
            str(s["name"]): str(s["cloud"])
            for s in d.get("sites") or []
            if isinstance(s, dict) and s.get("cloud") and s.get("name")
        }
        hosts = self._hosts(d.get("hosts") or [], sites)
        networks = self._networks(d.get("networks") or [], sites)
        host_names = {h.name: h for h in hosts}
        vms = self._vms(d.get("vms") or [], host_names, {n.name for n in networks})
        zones = self._zones((d.get("dns") or {}).get("zones") or [], host_names)
        scripts = self._scripts(d.get("scripts") or [])
        faults = self._faults(d.get("faults") or [], host_names, {v.name for v in vms})
        credentials = self._credentials(d.get("credentials") or {})
        time_scale = self._number(d, "time_scale", 1.0, minimum=0.0)
        init_seconds = self._number(d, "initial_replication_seconds", 60.0, minimum=0.0)
        bandwidth = self._number(d, "replication_bandwidth_mbps", 0.0, minimum=0.0)
        resync_after = self._number(d, "resync_after_seconds", 0.0, minimum=0.0)
        admin_port = d.get("admin_port")
        if admin_port is not None and not _is_port(admin_port):
            self.fail("admin_port", f"{admin_port!r} is not a TCP port (1-65535)")
        seed = d.get("seed")
        if seed is not None and not isinstance(seed, int):
            self.fail("seed", "must be an integer")
        if self.problems:
            raise TopologyError(self.source, self.problems)
        return Topology(
            sites=sites,
            hosts=hosts,
            networks=networks,
            vms=vms,
            zones=zones,
            scripts=scripts,
            faults=faults,
            credentials=credentials,
            time_scale=time_scale,
            admin_port=admin_port,
            seed=seed,
            initial_replication_seconds=init_seconds,
            replication_bandwidth_mbps=bandwidth,
            resync_after_seconds=resync_after,
            clouds=clouds,
        )

    def _number(self, d: dict[str, Any], key: str, default: float, minimum: float) -> float:
        value = d.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            self.fail(key, f"must be a number >= {minimum}, not {value!r}")
            return default
        return float(value)

    def _sites(self, raw: list[Any]) -> tuple[str, ...]:
        names = []
        for i, item in enumerate(raw):
            name = item.get("name") if isinstance(item, dict) else item
            if not isinstance(name, str) or not name:
                self.fail(f"sites[{i}]", "needs a name")
                continue
            names.append(name)
        if not names:
            self.fail("sites", "list at least one site")
        return tuple(names)

    def _hosts(self, raw: list[Any], sites: tuple[str, ...]) -> tuple[TopologyHost, ...]:
        hosts: list[TopologyHost] = []
        seen: set[str] = set()
        ports: set[int] = set()
        for i, item in enumerate(raw):
            path = f"hosts[{i}]"
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                self.fail(path, "needs a mapping with a name")
                continue
            name, site, role, port = (
                item["name"],
                item.get("site"),
                item.get("role"),
                item.get("port"),
            )
            if name in seen:
                self.fail(path, f"host {name!r} is listed twice")
            seen.add(name)
            if site not in sites:
                self.fail(path, f"site {site!r} is not one of the sites {list(sites)}")
            if role not in ROLES:
                self.fail(path, f"role must be one of {list(ROLES)}, not {role!r}")
            if port is not None:
                if not _is_port(port):
                    self.fail(path, f"port {port!r} is not a TCP port")
                elif port in ports:
                    self.fail(path, f"port {port} is already used by another host")
                else:
                    ports.add(port)
            replica_server = None
            if role == "hyperv":
                replica_server = self._replica_server(f"{path}.replica_server", item)
            language_mode = item.get("language_mode", "FullLanguage")
            if language_mode not in LANGUAGE_MODES:
                self.fail(
                    f"{path}.language_mode",
                    f"must be one of {list(LANGUAGE_MODES)}, not {language_mode!r}",
                )
                language_mode = "FullLanguage"
            hosts.append(
                TopologyHost(name, str(site), str(role), port, replica_server, language_mode)
            )
        if not hosts:
            self.fail("hosts", "list at least one host")
        return tuple(hosts)

    def _replica_server(self, path: str, item: dict[str, Any]) -> ReplicaServerSpec:
        raw = item.get("replica_server") or {}
        if not isinstance(raw, dict):
            self.fail(path, "must be a mapping (enabled, auth, storage)")
            return ReplicaServerSpec()
        auth = raw.get("auth", list(AUTH_PORTS))
        if not isinstance(auth, list) or any(a not in AUTH_PORTS for a in auth):
            self.fail(f"{path}.auth", f"must be a list of {list(AUTH_PORTS)}")
            auth = list(AUTH_PORTS)
        storage = raw.get("storage", ReplicaServerSpec.storage)
        if not isinstance(storage, str) or not storage:
            self.fail(f"{path}.storage", "must be a path")
            storage = ReplicaServerSpec.storage
        return ReplicaServerSpec(bool(raw.get("enabled", True)), tuple(auth), storage)

    def _networks(self, raw: list[Any], sites: tuple[str, ...]) -> tuple[NetworkSpec, ...]:
        networks = []
        for i, item in enumerate(raw):
            path = f"networks[{i}]"
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                self.fail(path, "needs a mapping with a name")
                continue
            if item.get("site") not in sites:
                self.fail(path, f"site {item.get('site')!r} is not one of {list(sites)}")
            subnet = None
            if item.get("subnet") is not None:
                try:
                    subnet = ipaddress.IPv4Network(str(item["subnet"]))
                except ValueError as exc:
                    self.fail(path, f"subnet: {exc}")
            networks.append(
                NetworkSpec(item["name"], str(item.get("site")), subnet, bool(item.get("test")))
            )
        return tuple(networks)

    def _vms(
        self, raw: list[Any], hosts: dict[str, TopologyHost], networks: set[str]
    ) -> tuple[VMSpec, ...]:
        vms = []
        seen: set[str] = set()
        for i, item in enumerate(raw):
            path = f"vms[{i}]"
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                self.fail(path, "needs a mapping with a name")
                continue
            name = item["name"]
            if name in seen:
                self.fail(path, f"VM {name!r} is listed twice")
            seen.add(name)
            primary, replica = item.get("primary"), item.get("replica")
            for key, host in (("primary", primary), ("replica", replica)):
                if host is None and key == "replica":
                    continue
                spec = hosts.get(str(host))
                if spec is None or spec.role != "hyperv":
                    self.fail(f"{path}.{key}", f"{host!r} is not a Hyper-V host of the topology")
            if replica is not None and replica == primary:
                self.fail(path, "primary and replica must be different hosts")
            vm_networks = tuple(item.get("networks") or ())
            for net in vm_networks:
                if net not in networks:
                    self.fail(f"{path}.networks", f"network {net!r} is not defined")
            ips = {str(k): str(v) for k, v in (item.get("ips") or {}).items()}
            for net, ip in ips.items():
                if net not in networks:
                    self.fail(f"{path}.ips", f"network {net!r} is not defined")
                try:
                    ipaddress.IPv4Address(ip)
                except ValueError:
                    self.fail(f"{path}.ips.{net}", f"{ip!r} is not an IPv4 address")
            boot = item.get("boot_seconds", 30)
            if isinstance(boot, bool) or not isinstance(boot, int | float) or boot < 0:
                self.fail(f"{path}.boot_seconds", "must be a number of seconds >= 0")
                boot = 30
            disk = item.get("disk_gb", 40)
            if isinstance(disk, bool) or not isinstance(disk, int | float) or disk <= 0:
                self.fail(f"{path}.disk_gb", "must be a size in GB > 0")
                disk = 40
            replication = None
            if replica is not None:
                replication = self._replication(f"{path}.replication", item.get("replication"))
            vms.append(
                VMSpec(
                    name=name,
                    primary=str(primary),
                    replica=None if replica is None else str(replica),
                    networks=vm_networks,
                    ips=ips,
                    boot_seconds=float(boot),
                    running=bool(item.get("running", True)),
                    replication=replication,
                    disk_gb=float(disk),
                )
            )
        return tuple(vms)

    def _replication(self, path: str, raw: Any) -> ReplicationSpec:
        raw = raw or {}
        if not isinstance(raw, dict):
            self.fail(path, "must be a mapping")
            return ReplicationSpec()
        state = raw.get("state", "replicating")
        if state not in ("replicating", "ready"):
            self.fail(f"{path}.state", f"must be replicating or ready, not {state!r}")
        frequency = raw.get("frequency", 300)
        if frequency not in FREQUENCIES:
            self.fail(f"{path}.frequency", f"must be one of {list(FREQUENCIES)} seconds")
        history = raw.get("recovery_history", 0)
        if not isinstance(history, int) or not 0 <= history <= 24:
            self.fail(f"{path}.recovery_history", "must be an integer 0..24")
            history = 0
        app = raw.get("app_consistent_hours", 0)
        if not isinstance(app, int) or app < 0 or app > 12 or (app and app >= max(history, 1)):
            self.fail(
                f"{path}.app_consistent_hours",
                "must be 0 (off) or 1..12 and less than recovery_history",
            )
            app = 0
        auth = raw.get("auth", "kerberos")
        if auth not in AUTH_PORTS:
            self.fail(f"{path}.auth", f"must be one of {list(AUTH_PORTS)}")
            auth = "kerberos"
        port = raw.get("port", AUTH_PORTS[auth])
        if not _is_port(port):
            self.fail(f"{path}.port", f"{port!r} is not a TCP port")
        return ReplicationSpec(
            state=str(state),
            frequency=int(frequency) if frequency in FREQUENCIES else 300,
            recovery_history=history,
            app_consistent_hours=app,
            auth=auth,
            port=int(port) if _is_port(port) else AUTH_PORTS[auth],
            compression=bool(raw.get("compression", True)),
        )

    def _zones(self, raw: list[Any], hosts: dict[str, TopologyHost]) -> tuple[ZoneSpec, ...]:
        zones = []
        for i, item in enumerate(raw):
            path = f"dns.zones[{i}]"
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                self.fail(path, "needs a mapping with a name")
                continue
            servers = item.get("servers") or ([item["server"]] if item.get("server") else [])
            for server in servers:
                if server not in hosts or hosts[server].role != "vmm":
                    self.fail(f"{path}.servers", f"{server!r} is not a VMM host")
            if not servers:
                self.fail(path, "name the VMM host(s) serving the zone in servers")
            records = []
            for j, rec in enumerate(item.get("records") or []):
                rpath = f"{path}.records[{j}]"
                if not isinstance(rec, dict) or not isinstance(rec.get("name"), str):
                    self.fail(rpath, "needs a mapping with a name")
                    continue
                rtype = str(rec.get("type", "A")).upper()
                data = rec.get("data")
                values = tuple(str(v) for v in (data if isinstance(data, list) else [data]))
                values = self._record_values(rpath, rtype, values)
                ttl = rec.get("ttl", 3600)
                if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 0:
                    self.fail(f"{rpath}.ttl", "must be whole seconds >= 0")
                    ttl = 3600
                records.append(RecordSpec(rec["name"], rtype, values, ttl))
            zones.append(ZoneSpec(item["name"].rstrip("."), tuple(servers), tuple(records)))
        return tuple(zones)

    def _record_values(self, path: str, rtype: str, values: tuple[str, ...]) -> tuple[str, ...]:
        """Record data as the DNS server stores it: addresses checked and in canonical form
        (``fd00:0::1`` is ``fd00::1``), PTR targets absolute, so lookups match the cmdlets'."""
        if rtype == "PTR":
            return tuple(v if v.endswith(".") else v + "." for v in values)
        if rtype not in ("A", "AAAA"):
            return values
        address: type[ipaddress.IPv4Address] | type[ipaddress.IPv6Address] = (
            ipaddress.IPv4Address if rtype == "A" else ipaddress.IPv6Address
        )
        out = []
        for value in values:
            try:
                out.append(str(address(value)))
            except ValueError:
                self.fail(path, f"{value!r} is not an IPv{4 if rtype == 'A' else 6} address")
                out.append(value)
        return tuple(out)

    def _scripts(self, raw: list[Any]) -> tuple[ScriptBehaviour, ...]:
        behaviours = []
        for i, item in enumerate(raw):
            path = f"scripts[{i}]"
            if not isinstance(item, dict) or not isinstance(item.get("pattern"), str):
                self.fail(path, "needs a mapping with a pattern")
                continue
            try:
                re.compile(item["pattern"])
            except re.error as exc:
                self.fail(f"{path}.pattern", f"not a regular expression: {exc}")
            output = item.get("output", ())
            output = tuple(output) if isinstance(output, list) else (output,)
            behaviours.append(
                ScriptBehaviour(
                    item["pattern"],
                    output,
                    None if item.get("error") is None else str(item["error"]),
                    float(item.get("duration", 0)),
                )
            )
        return tuple(behaviours)

    def _faults(
        self, raw: list[Any], hosts: dict[str, TopologyHost], vms: set[str]
    ) -> tuple[dict[str, Any], ...]:
        faults = []
        for i, item in enumerate(raw):
            path = f"faults[{i}]"
            if not isinstance(item, dict):
                self.fail(path, "must be a mapping (see lab.faults)")
                continue
            if is_world_fault(item):
                if "host_down" in item and item["host_down"] not in hosts:
                    self.fail(path, f"host_down: {item['host_down']!r} is not a host")
                if "host_down" not in item and item.get("vm") not in vms:
                    self.fail(path, f"vm: {item.get('vm')!r} is not a VM of the topology")
                if "health" in item and item["health"] not in ("Normal", "Warning", "Critical"):
                    self.fail(path, "health must be Normal, Warning or Critical")
            else:
                try:
                    # A throwaway injector: validation only, the lab adds the rule itself.
                    FaultInjector().add(dict(item))
                except FaultSpecError as exc:
                    self.fail(path, str(exc))
            faults.append(dict(item))
        return tuple(faults)

    def _credentials(self, raw: dict[str, Any]) -> Credentials:
        username = str(raw.get("username", "ferryman"))
        domain = str(raw.get("domain", "LAB"))
        ref = raw.get("password", "generate")
        if ref == "generate":
            password = secrets.token_urlsafe(18)
        elif isinstance(ref, str) and ref.startswith("env:"):
            value = os.environ.get(ref[4:])
            if not value:
                self.fail("credentials.password", f"environment variable {ref[4:]} is not set")
            password = value or ""
        else:
            # A literal would put a credential in a file; refuse it outright.
            self.fail("credentials.password", "must be 'generate' or 'env:NAME', never a value")
            password = ""
        return Credentials(username, domain, password)


def _is_port(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536
