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
import math
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
)

from plans.names import check_line, check_name, check_text, url_problem

# --- shared pieces -------------------------------------------------------------------------

Name = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(check_name)]
"""Names of sites, hosts, VMs, networks, zones, groups, actions, plans: see plans.names."""

FreeText = Annotated[str, AfterValidator(check_text)]
"""Descriptions and instructions: printable text, line breaks and tabs; see plans.names."""
HostPath = Annotated[str, Field(min_length=1), AfterValidator(check_line)]
"""A path on a Windows host: one line, no control characters (it is sent to the host)."""

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


DURATION_PATTERN = r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)?\s*$"

MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0
MAX_SECONDS = 30 * DAY  # the longest duration the format accepts anywhere


def _duration_schema(maximum: float) -> WithJsonSchema:
    # The file format accepts "90s"/"10m"/"1h" as well as plain seconds; say so.
    return WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": maximum},
                {"type": "string", "pattern": DURATION_PATTERN},
            ]
        }
    )


# Every duration has an upper bound, so nothing that validates can overflow later (a
# timedelta, a Celery countdown, a PowerShell timeout). The bounds are in plans/FORMAT.md.
Seconds = Annotated[
    float,
    BeforeValidator(_parse_duration),
    Field(ge=0, le=MAX_SECONDS, allow_inf_nan=False),
    _duration_schema(MAX_SECONDS),
]
"""A duration: 0 to 30 days, as seconds or text such as ``"90s"``."""
SecondsUpTo5Minutes = Annotated[
    float,
    BeforeValidator(_parse_duration),
    Field(ge=0, le=5 * MINUTE, allow_inf_nan=False),
    _duration_schema(5 * MINUTE),
]
SecondsUpToHour = Annotated[
    float,
    BeforeValidator(_parse_duration),
    Field(ge=0, le=HOUR, allow_inf_nan=False),
    _duration_schema(HOUR),
]
SecondsUpToDay = Annotated[
    float,
    BeforeValidator(_parse_duration),
    Field(ge=0, le=DAY, allow_inf_nan=False),
    _duration_schema(DAY),
]
SecondsUpToWeek = Annotated[
    float,
    BeforeValidator(_parse_duration),
    Field(ge=0, le=7 * DAY, allow_inf_nan=False),
    _duration_schema(7 * DAY),
]

MAX_TTL = 2**31 - 1  # RFC 2181: a TTL is an unsigned 31-bit number
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def _script_parameter(value: Any) -> Any:
    """Refuse numbers PowerShell cannot hold: integers outside Int64, non-finite doubles."""
    outside = not INT64_MIN <= value <= INT64_MAX if isinstance(value, int) else False
    if outside and not isinstance(value, bool):
        raise ValueError(
            "a whole-number parameter must fit PowerShell's Int64 "
            f"({INT64_MIN} to {INT64_MAX}); quote it to pass it as text"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("a number parameter must be finite (a PowerShell double)")
    return value


ParameterName = Annotated[
    str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
]
ParameterValue = Annotated[
    str | int | Annotated[float, Field(allow_inf_nan=False)] | bool,
    BeforeValidator(_script_parameter),
]


def _check_url(value: str) -> str:
    problem = url_problem(value)
    if problem:
        raise ValueError(problem)
    return value


class Model(BaseModel):
    """Base of every document class: unknown keys are errors, objects are immutable."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, use_attribute_docstrings=True
    )


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
    """User name, e.g. ``LAB\\ferryman`` or ``ferryman@lab.example``."""
    password: str
    """Reference to the password: ``env:NAME`` or ``file:PATH``; never the value."""


class Endpoint(Model):
    """How to reach one Windows host over WinRM/PSRP."""

    url: Annotated[str, Field(pattern=r"^https?://[^/\s]+(/\S*)?$"), AfterValidator(_check_url)]
    """WinRM URL, e.g. ``https://hv-1.example:5986/wsman``."""
    auth: Literal["negotiate", "ntlm", "kerberos", "credssp", "basic"] = "negotiate"
    """WinRM authentication; ``basic`` only over https (or loopback)."""
    credential: Name
    """Name of an entry under ``fabric.credentials``."""
    verify_tls: bool = True
    """Verify the server's TLS certificate (https URLs)."""
    ca_bundle: str | None = None
    """Path to a CA bundle for TLS verification; default: the system's."""
    operation_timeout: SecondsUpToHour = 20
    """WS-Management operation timeout (seconds or '20s'), at most 1 h."""
    connect_timeout: SecondsUpToHour = 30
    """TCP connect timeout (seconds or '30s')."""


class VmmServer(Endpoint):
    """A site's VMM server; ``name`` is its host name."""

    name: Name
    """Host name of the VMM server (unique across sites)."""


class Network(Model):
    """A VM network (the Hyper-V virtual switch of the same name) and its subnets."""

    subnets: list[str] = Field(default_factory=list)
    """Subnets in CIDR notation, e.g. ``10.10.0.0/16``."""


class Site(Model):
    """One datacenter: its VMM server, Hyper-V hosts, VM networks and VMM clouds."""

    vmm: VmmServer
    """The site's VMM server."""
    hosts: dict[Name, Endpoint] = Field(min_length=1)
    """Hyper-V hosts by host name (unique across sites); at least one."""
    networks: dict[Name, Network] = Field(default_factory=dict)
    """VM networks (= Hyper-V virtual switch names) by name."""
    clouds: list[Name] = Field(default_factory=list)
    """VMM clouds of the site."""
    storage_classifications: list[Name] = Field(default_factory=list)
    """VMM storage classifications of the site."""


class CloudRef(Model):
    """A VMM cloud in a site."""

    site: Name
    """Name of a site under ``fabric.sites``."""
    cloud: Name
    """Name of a cloud in that site's ``clouds``."""


class InitialReplication(Model):
    """How the first copy reaches the replica: over the network now, later, or offline."""

    method: Literal["network", "scheduled", "offline"] = "network"
    """``network`` (now), ``scheduled`` (at start_time) or ``offline`` (export/import)."""
    start_time: datetime | None = None
    """When a scheduled copy starts: in the future, at most 7 days ahead (ISO 8601)."""
    export_path: HostPath | None = None
    """Offline only: where the source host exports the initial copy (one line of text)."""
    import_path: HostPath | None = None
    """Offline only: where the target host imports the initial copy from (one line of text)."""


class ProtectionProfile(Model):
    """Replication settings applied to every VM of a pairing (the seed's step 5)."""

    replication_frequency: int = 300
    """Seconds between replications: 30, 300 or 900."""
    recovery_points: int = 0
    """Additional hourly recovery points to keep, 0-24 (0 = latest only)."""
    app_consistent_frequency: int | None = None
    """Hours between app-consistent (VSS) snapshots, 1-12, less than recovery_points."""
    compression: bool = True
    """Compress replication traffic."""
    authentication: Literal["kerberos", "certificate"] = "kerberos"
    """``kerberos`` (HTTP, port 8083) or ``certificate`` (HTTPS, port 8084)."""
    port: int | None = None
    """Replication port override, 1-65535."""
    initial_replication: InitialReplication = Field(default_factory=InitialReplication)
    """How the first copy reaches the replica."""
    delete_replica_on_disable: bool = False
    """Delete the replica VM when protection is disabled."""

    @property
    def effective_port(self) -> int:
        """The replication port: the override, else 8083 (Kerberos/HTTP) or 8084 (HTTPS)."""
        if self.port is not None:
            return self.port
        return 8083 if self.authentication == "kerberos" else 8084


class ProtectedVM(Model):
    """A VM protected by a pairing: where it runs, where its replica lives, its networks."""

    primary_host: Name
    """Hyper-V host of the primary site the VM runs on."""
    replica_host: Name
    """Hyper-V host of the recovery site that holds the replica."""
    networks: list[Name] = Field(default_factory=list)
    """VM networks of the primary site the VM is connected to."""
    storage_classification: Name | None = None
    """Storage classification of the primary site; default: the host's default path."""


class Pairing(Model):
    """A primary cloud paired with a recovery cloud, the profile, and the VMs protected."""

    primary: CloudRef
    """The primary cloud (where the VMs run)."""
    recovery: CloudRef
    """The recovery cloud (where the replicas live), in another site."""
    profile: ProtectionProfile = Field(default_factory=ProtectionProfile)
    """Replication settings for every VM of the pairing."""
    vms: dict[Name, ProtectedVM] = Field(default_factory=dict)
    """Protected VMs by name."""


class NetworkRef(Model):
    """A VM network in a site."""

    site: Name
    """Name of a site."""
    network: Name
    """Name of a VM network in that site."""


class NetworkMapping(Model):
    """Source VM network -> target VM network, plus the network test failovers use."""

    source: NetworkRef
    """The network in the primary site."""
    target: NetworkRef
    """The network failed-over VMs connect to."""
    test_network: Name | None = None
    """Network of the target site that test failovers connect to."""


class StorageRef(Model):
    """A storage classification in a site."""

    site: Name
    """Name of a site."""
    classification: Name
    """A storage classification of that site."""


class StorageMapping(Model):
    """Source storage classification -> target classification (the replica location)."""

    source: StorageRef
    """Classification in the primary site."""
    target: StorageRef
    """Classification in the recovery site (where replicas are stored)."""


class DnsZone(Model):
    """A zone Ferryman updates: BIND-style RFC 2136 with TSIG, or Windows DNS via a site.

    ``primary`` and ``servers`` are ``host[:port]``; without ``servers`` the zone's NS records
    name the authoritative servers to verify. ``tsig_key`` is a ``file:`` reference to a key
    file as ``tsig-keygen`` writes it. A test failover writes to ``test_zone`` and never to
    this zone; without a test zone, test runs leave DNS alone.
    """

    kind: Literal["rfc2136", "windows"] = "rfc2136"
    """``rfc2136`` (BIND-style dynamic update) or ``windows`` (DNS Server cmdlets)."""
    primary: str | None = None
    """rfc2136: ``host[:port]`` of the server that accepts updates."""
    servers: list[str] | None = None
    """``host[:port]`` of the authoritative servers to verify; default: the zone's NS."""
    tsig_key: str | None = None
    """Reference to the TSIG key: ``file:PATH`` (tsig-keygen output) or ``env:NAME``."""
    algorithm: str = "hmac-sha256"
    """TSIG algorithm."""
    site: Name | None = None
    """windows: the site whose DNS server holds the zone (required)."""
    test_zone: Name | None = None
    """Zone (defined under dns_zones) that test failovers write to instead."""
    timeout: SecondsUpTo5Minutes = 5
    """Timeout of one DNS query or update, at most 5 min."""
    verify_timeout: SecondsUpToDay = 60
    """How long to wait for every server to serve the new records."""


class Fabric(Model):
    """Everything about the two sites that plans refer to."""

    credentials: dict[Name, Credential] = Field(default_factory=dict)
    """Logins by name; passwords are references."""
    sites: dict[Name, Site] = Field(default_factory=dict)
    """The datacenters by name."""
    pairings: dict[Name, Pairing] = Field(default_factory=dict)
    """Cloud pairings by name, with the VMs each protects."""
    network_mappings: list[NetworkMapping] = Field(default_factory=list)
    """Source network -> target network (+ test network)."""
    storage_mappings: list[StorageMapping] = Field(default_factory=list)
    """Source storage classification -> target classification."""
    dns_zones: dict[Name, DnsZone] = Field(default_factory=dict)
    """DNS zones Ferryman updates, by zone name."""

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
    """Action name, unique in the plan."""
    types: list[FailoverType] = Field(default_factory=lambda: list(ALL_TYPES))
    """Failover types the action runs in: test, planned, unplanned (default: all)."""
    directions: list[Direction] = Field(default_factory=lambda: list(ALL_DIRECTIONS))
    """Directions the action runs in: failover, failback (default: both)."""

    def applies_to(self, failover_type: FailoverType, direction: Direction) -> bool:
        """Whether this action runs in a run of that type and direction."""
        return failover_type in self.types and direction in self.directions


class ScriptAction(_ActionBase):
    """PowerShell run on a site's VMM/management host through PSRP.

    ``on_error`` defaults to ASR's behaviour: stop a planned (and test) failover, continue an
    unplanned one.
    """

    kind: Literal["script"]
    """``script``."""
    script: str | None = None
    """Inline PowerShell (exactly one of script and file)."""
    file: str | None = None
    """PowerShell file, relative to the plan file (exactly one of script and file)."""
    parameters: dict[ParameterName, ParameterValue] = Field(default_factory=dict)
    """Named parameters passed to the script (numbers within PowerShell's Int64 and double)."""
    site: Literal["primary", "recovery"] = "recovery"
    """Which site of the pairing runs it (relative to the run's direction)."""
    host: Name | None = None
    """Host of that site to run on; default: the site's VMM server."""
    timeout: SecondsUpToWeek = 600
    """How long the script may run, at most 7 days."""
    on_error: OnError | None = None
    """``stop`` or ``continue``; default: stop, except continue in unplanned failovers."""
    undo: str | None = None
    """PowerShell run when the action is compensated."""
    rerun_on_redelivery: bool = False
    """Run it again when its worker died while it ran; default: fail the step for a check."""

    def error_policy(self, failover_type: FailoverType) -> OnError:
        """The effective policy for this run type."""
        if self.on_error is not None:
            return self.on_error
        return OnError.CONTINUE if failover_type is FailoverType.UNPLANNED else OnError.STOP


class ManualAction(_ActionBase):
    """Instructions for an operator; the run waits until someone approves or rejects."""

    kind: Literal["manual"]
    """``manual``."""
    instructions: FreeText
    """What the operator must do before approving (no control characters but line breaks, tabs)."""
    timeout: Seconds | None = None
    """How long to wait for a decision; default: forever."""
    on_timeout: Literal["fail", "continue"] = "fail"
    """What a timeout does: fail the run or continue it."""


class WaitForIpAction(_ActionBase):
    """Wait until every VM of the group reports an address in its target network."""

    kind: Literal["wait_for_ip"]
    """``wait_for_ip``."""
    timeout: SecondsUpToDay = 600
    """How long to wait for every VM's address, at most 1 day."""


class UpdateDnsAction(_ActionBase):
    """Switch the DNS records of every VM of the group to its new address."""

    kind: Literal["update_dns"]
    """``update_dns``."""


class HealthCheckAction(_ActionBase):
    """Check that every VM of the group runs and its replication health is not Critical."""

    kind: Literal["health_check"]
    """``health_check``."""
    timeout: SecondsUpToDay = 300
    """How long the VMs have to become healthy, at most 1 day."""


Action = Annotated[
    ScriptAction | ManualAction | WaitForIpAction | UpdateDnsAction | HealthCheckAction,
    Field(discriminator="kind"),
]


class DnsRecord(Model):
    """A name whose A/AAAA records follow the VM."""

    zone: Name
    """A zone under ``fabric.dns_zones``."""
    name: Name
    """Record name relative to the zone, e.g. ``sql-01`` or ``www``."""
    ttl: Annotated[int, Field(ge=0, le=MAX_TTL)] | None = None
    """TTL of the new records in seconds; default: keep the current TTL."""
    ptr: bool = False
    """Also update the reverse (PTR) record; RFC 2136 only: refused if a zone is Windows DNS."""


def _vm_from_name(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


class PlanVM(Model):
    """A VM's entry in a group: DNS records to switch, where its IP comes from, a delay."""

    name: Name
    """A VM protected by the plan's pairing."""
    dns: list[DnsRecord] = Field(default_factory=list)
    """DNS records that follow the VM's address."""
    ip_source: Literal["hyperv", "vmm"] = "hyperv"
    """Where the new address is read: Hyper-V's adapter or VMM's IP pool."""
    start_delay: SecondsUpToDay = 0
    """Wait this long before starting the VM, at most 1 day."""
    wait_for_ip: bool = True
    """Wait for the VM's address before the group counts as up."""


class Group(Model):
    """VMs failed over in parallel, with actions before and after."""

    name: Name
    """Group name, unique in the plan."""
    vms: list[
        Annotated[PlanVM, BeforeValidator(_vm_from_name, json_schema_input_type=str | PlanVM)]
    ] = Field(default_factory=list)
    """VMs failed over in parallel: names or mappings."""
    pre: list[Action] = Field(default_factory=list)
    """Actions run in order before the group's VMs fail over."""
    post: list[Action] = Field(default_factory=list)
    """Actions run in order after the group's VMs are up."""


class RecoveryPlan(Model):
    """Ordered groups of VMs of one pairing; group N+1 starts when group N is up."""

    pairing: Name
    """The pairing (under ``fabric.pairings``) whose VMs the plan recovers."""
    description: FreeText = ""
    """Free text shown in reports (no control characters but line breaks and tabs)."""
    rto: Seconds | None = None
    """Recovery time objective; reports compare the run's duration with it."""
    on_group_failure: Literal["stop", "continue"] = "stop"
    """Whether a failed group stops the run or the next group starts anyway."""
    test_network: Literal["isolated", "mapped", "none"] = "isolated"
    """Test failovers connect to: each mapping's test network, the mapped network, or nothing."""
    groups: list[Group] = Field(min_length=1)
    """Ordered groups; group N+1 starts when every VM of group N is up."""

    def vm_names(self) -> list[str]:
        """Every VM of the plan, in group order."""
        return [vm.name for group in self.groups for vm in group.vms]


class Document(Model):
    """One YAML file: a fabric, plans, or both, and the files it includes."""

    version: Literal[1] = 1
    """File format version: 1."""
    include: list[str] = Field(default_factory=list)
    """Files to load too, relative to this file (each loaded once)."""
    fabric: Fabric | None = None
    """The sites, pairings, mappings and zones (one fabric per bundle)."""
    plans: dict[Name, RecoveryPlan] = Field(default_factory=dict)
    """Recovery plans by name."""


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
