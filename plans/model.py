"""The fabric and recovery-plan model: what a Ferryman YAML document means.

These classes are the contract between the files operators write and the engine. They check
shapes and single-field rules; rules that span objects (references, uniqueness, the protection
profile's interplay of fields) live in :mod:`plans.rules`, so that every problem in a set of
files is reported at once with its line and column.

A document may hold a ``fabric``, ``plans``, or both, and may ``include`` other files
(typically a plan file includes the fabric file it runs against).
"""

from __future__ import annotations

import enum
import ipaddress
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

# --- shared pieces -------------------------------------------------------------------------

Name = Annotated[str, Field(min_length=1, max_length=128)]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def _parse_duration(value: Any) -> Any:
    """Accept seconds as a number or a string such as ``"90s"``, ``"10m"``, ``"1h"``."""
    if isinstance(value, bool):
        return value  # let the float validator refuse it with a type error
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(
                "a duration is a number of seconds or a string like '90s', '10m', '1h'"
            )
        return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    return value


Seconds = Annotated[float, BeforeValidator(_parse_duration), Field(ge=0, allow_inf_nan=False)]


class Model(BaseModel):
    """Base of every document class: unknown keys are errors, objects are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class FailoverType(enum.StrEnum):
    """The three failover types of a run."""

    TEST = "test"
    PLANNED = "planned"
    UNPLANNED = "unplanned"


class Direction(enum.StrEnum):
    """Primary to recovery site (``failover``) or back (``failback``)."""

    FAILOVER = "failover"
    FAILBACK = "failback"


class OnError(enum.StrEnum):
    """What a script error does to the run."""

    STOP = "stop"
    CONTINUE = "continue"


ALL_TYPES = (FailoverType.TEST, FailoverType.PLANNED, FailoverType.UNPLANNED)
ALL_DIRECTIONS = (Direction.FAILOVER, Direction.FAILBACK)


# --- fabric --------------------------------------------------------------------------------


class Credential(Model):
    """A login for a WinRM endpoint. ``password`` is a reference (``env:NAME``/``file:PATH``)."""

    username: Name
    password: str


class Endpoint(Model):
    """How to reach one Windows host over WinRM/PSRP."""

    url: Annotated[str, Field(pattern=r"^https?://[^/\s]+(/\S*)?$")]
    auth: Literal["negotiate", "ntlm", "kerberos", "credssp", "basic"] = "negotiate"
    credential: Name
    verify_tls: bool = True
    ca_bundle: str | None = None
    operation_timeout: Seconds = 20
    connect_timeout: Seconds = 30


class VmmServer(Endpoint):
    """A site's VMM server; ``name`` is its host name."""

    name: Name


class Network(Model):
    """A VM network (the Hyper-V virtual switch of the same name) and its subnets."""

    subnets: list[str] = Field(default_factory=list)


class Site(Model):
    """One datacenter: its VMM server, Hyper-V hosts, VM networks and VMM clouds."""

    vmm: VmmServer
    hosts: dict[Name, Endpoint] = Field(min_length=1)
    networks: dict[Name, Network] = Field(default_factory=dict)
    clouds: list[Name] = Field(default_factory=list)
    storage_classifications: list[Name] = Field(default_factory=list)


class CloudRef(Model):
    """A VMM cloud in a site."""

    site: Name
    cloud: Name


class InitialReplication(Model):
    """How the first copy reaches the replica: over the network now, later, or offline."""

    method: Literal["network", "scheduled", "offline"] = "network"
    start_time: datetime | None = None
    export_path: str | None = None
    import_path: str | None = None


class ProtectionProfile(Model):
    """Replication settings applied to every VM of a pairing (the seed's step 5)."""

    replication_frequency: int = 300
    recovery_points: int = 0
    app_consistent_frequency: int | None = None
    compression: bool = True
    authentication: Literal["kerberos", "certificate"] = "kerberos"
    port: int | None = None
    initial_replication: InitialReplication = Field(default_factory=InitialReplication)
    delete_replica_on_disable: bool = False

    @property
    def effective_port(self) -> int:
        """The replication port: the override, else 8083 (Kerberos/HTTP) or 8084 (HTTPS)."""
        if self.port is not None:
            return self.port
        return 8083 if self.authentication == "kerberos" else 8084


class ProtectedVM(Model):
    """A VM protected by a pairing: where it runs, where its replica lives, its networks."""

    primary_host: Name
    replica_host: Name
    networks: list[Name] = Field(default_factory=list)
    storage_classification: Name | None = None


class Pairing(Model):
    """A primary cloud paired with a recovery cloud, the profile, and the VMs protected."""

    primary: CloudRef
    recovery: CloudRef
    profile: ProtectionProfile = Field(default_factory=ProtectionProfile)
    vms: dict[Name, ProtectedVM] = Field(default_factory=dict)


class NetworkRef(Model):
    """A VM network in a site."""

    site: Name
    network: Name


class NetworkMapping(Model):
    """Source VM network -> target VM network, plus the network test failovers use."""

    source: NetworkRef
    target: NetworkRef
    test_network: Name | None = None


class StorageRef(Model):
    """A storage classification in a site."""

    site: Name
    classification: Name


class StorageMapping(Model):
    """Source storage classification -> target classification (the replica location)."""

    source: StorageRef
    target: StorageRef


class DnsZone(Model):
    """A zone Ferryman updates: BIND-style RFC 2136 with TSIG, or Windows DNS via a site.

    ``primary`` and ``servers`` are ``host[:port]``; without ``servers`` the zone's NS records
    name the authoritative servers to verify. ``tsig_key`` is a ``file:`` reference to a key
    file as ``tsig-keygen`` writes it. A test failover writes to ``test_zone`` and never to
    this zone; without a test zone, test runs leave DNS alone.
    """

    kind: Literal["rfc2136", "windows"] = "rfc2136"
    primary: str | None = None
    servers: list[str] | None = None
    tsig_key: str | None = None
    algorithm: str = "hmac-sha256"
    site: Name | None = None
    test_zone: Name | None = None
    timeout: Seconds = 5
    verify_timeout: Seconds = 60


class Fabric(Model):
    """Everything about the two sites that plans refer to."""

    credentials: dict[Name, Credential] = Field(default_factory=dict)
    sites: dict[Name, Site] = Field(default_factory=dict)
    pairings: dict[Name, Pairing] = Field(default_factory=dict)
    network_mappings: list[NetworkMapping] = Field(default_factory=list)
    storage_mappings: list[StorageMapping] = Field(default_factory=list)
    dns_zones: dict[Name, DnsZone] = Field(default_factory=dict)

    def host_endpoint(self, host: str) -> tuple[str, Endpoint]:
        """The site name and endpoint of a Hyper-V host or VMM server, by host name."""
        for site_name, site in self.sites.items():
            if host in site.hosts:
                return site_name, site.hosts[host]
            if site.vmm.name == host:
                return site_name, site.vmm
        raise KeyError(host)

    def mapping_for(self, site: str, network: str) -> NetworkMapping | None:
        """The network mapping whose source is ``network`` in ``site``, if any."""
        for mapping in self.network_mappings:
            if mapping.source.site == site and mapping.source.network == network:
                return mapping
        return None


# --- recovery plans ------------------------------------------------------------------------


class _ActionBase(Model):
    name: Name
    types: list[FailoverType] = Field(default_factory=lambda: list(ALL_TYPES))
    directions: list[Direction] = Field(default_factory=lambda: list(ALL_DIRECTIONS))

    def applies_to(self, failover_type: FailoverType, direction: Direction) -> bool:
        """Whether this action runs in a run of that type and direction."""
        return failover_type in self.types and direction in self.directions


class ScriptAction(_ActionBase):
    """PowerShell run on a site's VMM/management host through PSRP.

    ``on_error`` defaults to ASR's behaviour: stop a planned (and test) failover, continue an
    unplanned one.
    """

    kind: Literal["script"]
    script: str | None = None
    file: str | None = None
    parameters: dict[str, str | int | float | bool] = Field(default_factory=dict)
    site: Literal["primary", "recovery"] = "recovery"
    host: Name | None = None
    timeout: Seconds = 600
    on_error: OnError | None = None
    undo: str | None = None

    def error_policy(self, failover_type: FailoverType) -> OnError:
        """The effective policy for this run type."""
        if self.on_error is not None:
            return self.on_error
        return OnError.CONTINUE if failover_type is FailoverType.UNPLANNED else OnError.STOP


class ManualAction(_ActionBase):
    """Instructions for an operator; the run waits until someone approves or rejects."""

    kind: Literal["manual"]
    instructions: str
    timeout: Seconds | None = None
    on_timeout: Literal["fail", "continue"] = "fail"


class WaitForIpAction(_ActionBase):
    """Wait until every VM of the group reports an address in its target network."""

    kind: Literal["wait_for_ip"]
    timeout: Seconds = 600


class UpdateDnsAction(_ActionBase):
    """Switch the DNS records of every VM of the group to its new address."""

    kind: Literal["update_dns"]


class HealthCheckAction(_ActionBase):
    """Check that every VM of the group runs and its replication health is not Critical."""

    kind: Literal["health_check"]
    timeout: Seconds = 300


Action = Annotated[
    ScriptAction | ManualAction | WaitForIpAction | UpdateDnsAction | HealthCheckAction,
    Field(discriminator="kind"),
]


class DnsRecord(Model):
    """A name whose A/AAAA records follow the VM."""

    zone: Name
    name: Name
    ttl: int | None = None
    ptr: bool = False


def _vm_from_name(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


class PlanVM(Model):
    """A VM's entry in a group: DNS records to switch, where its IP comes from, a delay."""

    name: Name
    dns: list[DnsRecord] = Field(default_factory=list)
    ip_source: Literal["hyperv", "vmm"] = "hyperv"
    start_delay: Seconds = 0
    wait_for_ip: bool = True


class Group(Model):
    """VMs failed over in parallel, with actions before and after."""

    name: Name
    vms: list[Annotated[PlanVM, BeforeValidator(_vm_from_name)]] = Field(default_factory=list)
    pre: list[Action] = Field(default_factory=list)
    post: list[Action] = Field(default_factory=list)


class RecoveryPlan(Model):
    """Ordered groups of VMs of one pairing; group N+1 starts when group N is up."""

    pairing: Name
    description: str = ""
    rto: Seconds | None = None
    on_group_failure: Literal["stop", "continue"] = "stop"
    test_network: Literal["isolated", "mapped", "none"] = "isolated"
    groups: list[Group] = Field(min_length=1)

    def vm_names(self) -> list[str]:
        """Every VM of the plan, in group order."""
        return [vm.name for group in self.groups for vm in group.vms]


class Document(Model):
    """One YAML file: a fabric, plans, or both, and the files it includes."""

    version: Literal[1] = 1
    include: list[str] = Field(default_factory=list)
    fabric: Fabric | None = None
    plans: dict[Name, RecoveryPlan] = Field(default_factory=dict)


def address_in(address: str, subnets: list[str]) -> bool:
    """Whether ``address`` (IPv4 or IPv6) lies in one of ``subnets``; False for junk."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    for subnet in subnets:
        try:
            if ip in ipaddress.ip_network(subnet, strict=False):
                return True
        except ValueError:
            continue
    return False
