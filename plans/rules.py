"""Semantic rules: what a structurally valid fabric and plan set must also satisfy.

The model checks shapes; these rules check meaning across objects: references between sites,
hosts, clouds, networks, zones and credentials; uniqueness; Hyper-V Replica's protection
profile rules; secrets written as values. Each rule is a function over the whole bundle that
yields :class:`Finding` objects with the document path of the offending node (``("fabric",
...)`` or ``("plans", NAME, ...)``); the caller turns paths into file positions.

Rules do no I/O except checking that a script ``file`` exists next to its plan file.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from plans.credentials import SecretRef
from plans.files import script_file_problem
from plans.model import (
    Endpoint,
    Fabric,
    ManualAction,
    ProtectionProfile,
    RecoveryPlan,
    ScriptAction,
)
from plans.names import host_port_problem
from plans.problems import DocPath, Severity

REPLICATION_FREQUENCIES = (30, 300, 900)  # seconds; Hyper-V Replica offers only these
MAX_RECOVERY_POINTS = 24
APP_CONSISTENT_HOURS = (1, 12)
MAX_SCHEDULE_AHEAD = timedelta(days=7)

ERROR = Severity.ERROR
WARNING = Severity.WARNING


@dataclass(frozen=True)
class Finding:
    """A rule's verdict on one node, by document path."""

    path: DocPath
    message: str
    severity: Severity = ERROR
    at_key: bool = False  # point at the entry's key rather than its value


@dataclass(frozen=True)
class RuleContext:
    """What rules need beyond the model: the time and where each plan file lives."""

    now: datetime | None = None
    plan_dirs: dict[str, str] = field(default_factory=dict)
    roots: tuple[str, ...] = ()  # folders named files may lie in (resolved); () = plan_dirs

    def current_time(self) -> datetime:
        """``now`` (naive values are UTC), or the current time."""
        if self.now is None:
            return datetime.now(UTC)
        return _aware(self.now)


Rule = Callable[[Fabric, dict[str, RecoveryPlan], RuleContext], Iterator[Finding]]


def check_bundle(
    fabric: Fabric, plans: dict[str, RecoveryPlan], context: RuleContext | None = None
) -> list[Finding]:
    """Run every rule; all findings, errors and warnings."""
    context = context or RuleContext()
    findings: list[Finding] = []
    for rule in RULES:
        findings.extend(rule(fabric, plans, context))
    return findings


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _choices(names: object) -> str:
    listed = sorted(str(n) for n in names)  # type: ignore[attr-defined]
    return ", ".join(listed) if listed else "none defined"


def _unknown_site(path: DocPath, site: str, fabric: Fabric) -> Finding:
    return Finding(path, f"unknown site {site!r}; defined sites: {_choices(fabric.sites)}")


# --- fabric ---------------------------------------------------------------------------------


def credentials_are_references(
    fabric: Fabric, plans: dict[str, RecoveryPlan], context: RuleContext
) -> Iterator[Finding]:
    """Passwords and TSIG keys are ``env:``/``file:`` references, never values."""
    for name, credential in fabric.credentials.items():
        if not SecretRef.looks_like_reference(credential.password):
            # Never repeat the value: this message ends up in terminals and CI logs.
            yield Finding(
                ("fabric", "credentials", name, "password"),
                f"credential {name!r} has its password written as a value; write a reference "
                "instead, env:NAME or file:PATH, and keep the secret out of the file",
            )
    for zone_name, zone in fabric.dns_zones.items():
        if zone.tsig_key is not None and not SecretRef.looks_like_reference(zone.tsig_key):
            yield Finding(
                ("fabric", "dns_zones", zone_name, "tsig_key"),
                f"zone {zone_name!r} has its TSIG key written as a value; write a reference "
                "instead, file:PATH to the key file (as tsig-keygen writes it) or env:NAME",
            )


def _endpoints(fabric: Fabric) -> Iterator[tuple[DocPath, Endpoint]]:
    for site_name, site in fabric.sites.items():
        yield ("fabric", "sites", site_name, "vmm"), site.vmm
        for host_name, host in site.hosts.items():
            yield ("fabric", "sites", site_name, "hosts", host_name), host


def endpoints_are_sound(
    fabric: Fabric, plans: dict[str, RecoveryPlan], context: RuleContext
) -> Iterator[Finding]:
    """Each endpoint names a known credential, a usable port, and no basic auth in clear."""
    for path, endpoint in _endpoints(fabric):
        if endpoint.credential not in fabric.credentials:
            yield Finding(
                (*path, "credential"),
                f"unknown credential {endpoint.credential!r}; defined credentials: "
                f"{_choices(fabric.credentials)}",
            )
        parts = urlsplit(endpoint.url)
        try:
            parts.port  # noqa: B018 - urlsplit checks the port only when asked
        except ValueError:
            yield Finding((*path, "url"), f"{endpoint.url!r} has an invalid port (1-65535)")
        if endpoint.auth == "basic" and parts.scheme == "http":
            if _is_loopback(parts.hostname or ""):
                yield Finding(
                    (*path, "auth"),
                    "basic authentication over plain http sends the password in clear; "
                    "acceptable only on loopback as here, use https anywhere else",
                    WARNING,
                )
            else:
                yield Finding(
                    (*path, "auth"),
                    "basic authentication over plain http sends the password in clear; "
                    "use an https:// URL or auth: negotiate/ntlm/kerberos",
                )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_names_are_unique(
    fabric: Fabric, plans: dict[str, RecoveryPlan], context: RuleContext
) -> Iterator[Finding]:
    """A host name (Hyper-V host or VMM server) is defined once across all sites."""
    first: dict[str, str] = {}
    for site_name, site in fabric.sites.items():
        names: list[tuple[str, DocPath, bool]] = [
            (site.vmm.name, ("fabric", "sites", site_name, "vmm", "name"), False)
        ]
        names += [
            (host, ("fabric", "sites", site_name, "hosts", host), True) for host in site.hosts
        ]
        for host, path, at_key in names:
            if host in first:
                yield Finding(
                    path,
                    f"host {host!r} is already defined in site {first[host]!r}; host names must "
                    "be unique across sites",
                    at_key=at_key,
                )
            else:
                first[host] = site_name


def subnets_are_cidr(
    fabric: Fabric, plans: dict[str, RecoveryPlan], context: RuleContext
) -> Iterator[Finding]:
    """Every network subnet is valid CIDR with no host bits set."""
    for site_name, site in fabric.sites.items():
        for net_name, network in site.networks.items():
            for index, subnet in enumerate(network.subnets):
                path = ("fabric", "sites", site_name, "networks", net_name, "subnets", index)
                try:
                    ipaddress.ip_network(subnet, strict=True)
                except ValueError:
                    try:
                        fixed = ipaddress.ip_network(subnet, strict=False)
                    except ValueError:
                        yield Finding(
                            path,
                            f"{subnet!r} is not a subnet in CIDR notation such as 10.10.0.0/16",
                        )
                    else:
                        yield Finding(
                            path, f"{subnet!r} has host bits set; did you mean '{fixed}'?"
                        )


def pairings_are_consistent(
    fabric: Fabric, plans: dict[str, RecoveryPlan], context: RuleContext
) -> Iterator[Finding]:
    """Pairings name existing sites and clouds, each cloud in at most one pairing."""
    cloud_owner: dict[tuple[str, str], str] = {}
    vm_owner: dict[str, str] = {}
    for name, pairing in fabric.pairings.items():
        base: DocPath = ("fabric", "pairings", name)
        for role, ref in (("primary", pairing.primary), ("recovery", pairing.recovery)):
            site = fabric.sites.get(ref.site)
            if site is None:
                yield _unknown_site((*base, role, "site"), ref.site, fabric)
                continue
            if ref.cloud not in site.clouds:
                yield Finding(
                    (*base, role, "cloud"),
                    f"site {ref.site!r} has no cloud {ref.cloud!r}; its clouds: "
                    f"{_choices(site.clouds)}",
                )
            key = (ref.site, ref.cloud)
            if key in cloud_owner:
                yield Finding(
                    (*base, role, "cloud"),
                    f"cloud {ref.cloud!r} of site {ref.site!r} is already in pairing "
                    f"{cloud_owner[key]!r}; a cloud belongs to at most one pairing",
                )
            else:
                cloud_owner[key] = name
        if pairing.primary.site == pairing.recovery.site:
            yield Finding(
                (*base, "recovery", "site"),
                "a pairing links two different sites; the recovery site equals the primary",
            )
        for vm_name in pairing.vms:
            if vm_name in vm_owner:
                yield Finding(
                    (*base, "vms", vm_name),
                    f"VM {vm_name!r} is already protected by pairing {vm_owner[vm_name]!r}; "
                    "a VM replicates in one pairing",
                    at_key=True,
                )
            else:
                vm_owner[vm_name] = name


def protection_profiles_are_valid(
    fabric: Fabric, plans: dict[str, RecoveryPlan], context: RuleContext
) -> Iterator[Finding]:
    """Hyper-V Replica's rules for frequency, recovery points, snapshots, initial copy."""
    for name, pairing in fabric.pairings.items():
        yield from _profile(("fabric", "pairings", name, "profile"), pairing.profile, context)


def _profile(base: DocPath, profile: ProtectionProfile, context: RuleContext) -> Iterator[Finding]:
    if profile.replication_frequency not in REPLICATION_FREQUENCIES:
        yield Finding(
            (*base, "replication_frequency"),
            f"replication_frequency must be 30, 300 or 900 seconds, got "
            f"{profile.replication_frequency}",
        )
    points = profile.recovery_points
    if not 0 <= points <= MAX_RECOVERY_POINTS:
        yield Finding(
            (*base, "recovery_points"),
            f"recovery_points must be 0 to {MAX_RECOVERY_POINTS} (hourly points kept), "
            f"got {points}",
        )
    snapshots = profile.app_consistent_frequency
    if snapshots is not None:
        low, high = APP_CONSISTENT_HOURS
        path = (*base, "app_consistent_frequency")
        if not low <= snapshots <= high:
            yield Finding(
                path, f"app_consistent_frequency must be {low} to {high} hours, got {snapshots}"
            )
        elif points <= 0:
            yield Finding(
                path,
                "app_consistent_frequency needs additional recovery points; set recovery_points "
                "above 0 or remove app_consistent_frequency",
            )
        elif snapshots >= points:
            yield Finding(
                path,
                f"app_consistent_frequency ({snapshots}) must be less than recovery_points "
                f"({points})",
            )
    if profile.port is not None and not 1 <= profile.port <= 65535:
        yield Finding((*base, "port"), f"port must be 1 to 65535, got {profile.port}")
    yield from _initial_replication((*base, "initial_replication"), profile, context)


def _initial_replication(
    path: DocPath, profile: ProtectionProfile, context: RuleContext
) -> Iterator[Finding]:
    initial = profile.initial_replication
    if initial.method == "offline":
        missing = [k for k in ("export_path", "import_path") if not getattr(initial, k)]
        if missing:
            yield Finding(
                path,
                "offline initial replication needs export_path (where the source exports) and "
                f"import_path (where the target imports); missing: {', '.join(missing)}",
            )
    elif initial.export_path or initial.import_path:
        yield Finding(
            path,
            f"export_path/import_path are used only by method: offline, not {initial.method}",
            WARNING,
        )
    if initial.method == "scheduled":
        if initial.start_time is None:
            yield Finding(path, "scheduled initial replication needs start_time")
        else:
            now = context.current_time()
            start = _aware(initial.start_time)
            if start < now:
                yield Finding(
                    (*path, "start_time"),
                    f"start_time {start.isoformat()} is in the past; pick a time within the "
                    "next 7 days",
                )
            elif start > now + MAX_SCHEDULE_AHEAD:
                yield Finding(
                    (*path, "start_time"),
                    f"start_time {start.isoformat()} is more than 7 days ahead; Hyper-V Replica "
                    "schedules at most 7 days ahead",
                )
    elif initial.start_time is not None:
        yield Finding(
            (*path, "start_time"),
            f"start_time is used only by method: scheduled, not {initial.method}",
            WARNING,
        )


def protected_vms_are_placed(
    fabric: Fabric, plans: dict[str, RecoveryPlan], context: RuleContext
) -> Iterator[Finding]:
    """Protected VMs name hosts, networks and storage of the right sites."""
    for name, pairing in fabric.pairings.items():
        primary = fabric.sites.get(pairing.primary.site)
        recovery = fabric.sites.get(pairing.recovery.site)
        for vm_name, vm in pairing.vms.items():
            base = ("fabric", "pairings", name, "vms", vm_name)
            if primary is not None:
                if vm.primary_host not in primary.hosts:
                    yield Finding(
                        (*base, "primary_host"),
                        f"{vm.primary_host!r} is not a Hyper-V host of the primary site "
                        f"{pairing.primary.site!r}; its hosts: {_choices(primary.hosts)}",
                    )
                for index, network in enumerate(vm.networks):
                    if network not in primary.networks:
                        yield Finding(
                            (*base, "networks", index),
                            f"unknown network {network!r} in site {pairing.primary.site!r}; "
                            f"its networks: {_choices(primary.networks)}",
                        )
                classification = vm.storage_classification
                if classification and classification not in primary.storage_classifications:
                    yield Finding(
                        (*base, "storage_classification"),
                        f"unknown storage classification {classification!r} in site "
                        f"{pairing.primary.site!r}; its classifications: "
                        f"{_choices(primary.storage_classifications)}",
                    )
            if recovery is not None and vm.replica_host not in recovery.hosts:
                yield Finding(
                    (*base, "replica_host"),
                    f"{vm.replica_host!r} is not a Hyper-V host of the recovery site "
                    f"{pairing.recovery.site!r}; its hosts: {_choices(recovery.hosts)}",
                )


def mappings_are_consistent(
    fabric: Fabric, plans: dict[str, RecoveryPlan], context: RuleContext
) -> Iterator[Finding]:
    """Network and storage mappings name existing sites, networks and classifications."""
    sources: set[tuple[str, str]] = set()
    for index, mapping in enumerate(fabric.network_mappings):
        base: DocPath = ("fabric", "network_mappings", index)
        for role, ref in (("source", mapping.source), ("target", mapping.target)):
            site = fabric.sites.get(ref.site)
            if site is None:
                yield _unknown_site((*base, role, "site"), ref.site, fabric)
            elif ref.network not in site.networks:
                yield Finding(
                    (*base, role, "network"),
                    f"unknown network {ref.network!r} in site {ref.site!r}; its networks: "
                    f"{_choices(site.networks)}",
                )
        target = fabric.sites.get(mapping.target.site)
        if (
            mapping.test_network
            and target is not None
            and mapping.test_network not in target.networks
        ):
            yield Finding(
                (*base, "test_network"),
                f"unknown network {mapping.test_network!r} in site {mapping.target.site!r}; its "
                f"networks: {_choices(target.networks)}",
            )
        key = (mapping.source.site, mapping.source.network)
        if key in sources:
            yield Finding(
                (*base, "source"),
                f"network {key[1]!r} of site {key[0]!r} is mapped twice; keep one mapping",
            )
        sources.add(key)
    storage_sources: set[tuple[str, str]] = set()
    for index, storage in enumerate(fabric.storage_mappings):
        base = ("fabric", "storage_mappings", index)
        for role, sref in (("source", storage.source), ("target", storage.target)):
            site = fabric.sites.get(sref.site)
            if site is None:
                yield _unknown_site((*base, role, "site"), sref.site, fabric)
            elif sref.classification not in site.storage_classifications:
                yield Finding(
                    (*base, role, "classification"),
                    f"unknown storage classification {sref.classification!r} in site "
                    f"{sref.site!r}; its classifications: "
                    f"{_choices(site.storage_classifications)}",
                )
        skey = (storage.source.site, storage.source.classification)
        if skey in storage_sources:
            yield Finding(
                (*base, "source"),
                f"storage classification {skey[1]!r} of site {skey[0]!r} is mapped twice",
            )
        storage_sources.add(skey)


def dns_zones_are_reachable(
    fabric: Fabric, plans: dict[str, RecoveryPlan], context: RuleContext
) -> Iterator[Finding]:
    """RFC 2136 zones name servers; Windows zones name the site whose DNS they use."""
    for name, zone in fabric.dns_zones.items():
        base: DocPath = ("fabric", "dns_zones", name)
        if zone.kind == "rfc2136":
            if not zone.primary and not zone.servers:
                yield Finding(
                    base,
                    f"rfc2136 zone {name!r} needs 'primary' (host[:port] that takes updates) "
                    "or 'servers'",
                    at_key=True,
                )
            addresses: list[tuple[DocPath, str]] = []
            if zone.primary:
                addresses.append((("primary",), zone.primary))
            addresses += [(("servers", i), s) for i, s in enumerate(zone.servers or [])]
            for where, address in addresses:
                problem = _host_port_problem(address)
                if problem:
                    yield Finding((*base, *where), problem)
        elif zone.site is None:
            yield Finding(
                base,
                f"windows zone {name!r} needs 'site': the site whose DNS server holds it",
                at_key=True,
            )
        elif zone.site not in fabric.sites:
            yield _unknown_site((*base, "site"), zone.site, fabric)
        if zone.test_zone is not None:
            if zone.test_zone == name:
                yield Finding((*base, "test_zone"), "a zone cannot be its own test zone")
            elif zone.test_zone not in fabric.dns_zones:
                yield Finding(
                    (*base, "test_zone"),
                    f"unknown zone {zone.test_zone!r}; defined zones: {_choices(fabric.dns_zones)}",
                )


def _host_port_problem(address: str) -> str | None:
    return host_port_problem(address)


# --- plans ----------------------------------------------------------------------------------


def plan_references_exist(
    fabric: Fabric, plans: dict[str, RecoveryPlan], context: RuleContext
) -> Iterator[Finding]:
    """A plan's pairing exists, its VMs are protected by it, its DNS zones are defined."""
    for name, plan in plans.items():
        pairing = fabric.pairings.get(plan.pairing)
        if pairing is None:
            yield Finding(
                ("plans", name, "pairing"),
                f"unknown pairing {plan.pairing!r}; defined pairings: {_choices(fabric.pairings)}",
            )
        for g, group in enumerate(plan.groups):
            for v, vm in enumerate(group.vms):
                base = ("plans", name, "groups", g, "vms", v)
                if pairing is not None and vm.name not in pairing.vms:
                    yield Finding(
                        (*base, "name"),
                        f"VM {vm.name!r} is not protected by pairing {plan.pairing!r}; add it "
                        f"under fabric.pairings.{plan.pairing}.vms or remove it from the plan",
                    )
                for d, record in enumerate(vm.dns):
                    if record.zone not in fabric.dns_zones:
                        yield Finding(
                            (*base, "dns", d, "zone"),
                            f"unknown DNS zone {record.zone!r}; defined zones: "
                            f"{_choices(fabric.dns_zones)}",
                        )
                    if record.ttl is not None and not 0 <= record.ttl <= 2**31 - 1:
                        yield Finding((*base, "dns", d, "ttl"), "ttl must be 0 to 2147483647")
                    if record.ptr:
                        problem = _windows_ptr(record.zone, fabric)
                        if problem:
                            yield Finding((*base, "dns", d, "ptr"), problem)


def _windows_ptr(zone_name: str, fabric: Fabric) -> str:
    """Why a record with ``ptr: true`` in ``zone_name`` cannot be kept, or "": Ferryman does
    not manage PTR records through Windows DNS, in the zone itself or the test zone that a
    test failover writes to instead."""
    zone = fabric.dns_zones.get(zone_name)
    if zone is None:
        return ""  # reported as an unknown zone
    windows = [zone_name] if zone.kind == "windows" else []
    test = fabric.dns_zones.get(zone.test_zone) if zone.test_zone else None
    if test is not None and test.kind == "windows":
        windows.append(f"{zone.test_zone} (its test zone)")
    if not windows:
        return ""
    return (
        f"ptr: true, but {' and '.join(windows)} {'is' if len(windows) == 1 else 'are'} "
        "Windows DNS, where Ferryman does not "
        "update PTR records; set ptr: false or serve the zone over RFC 2136"
    )


def plan_names_are_unique(
    fabric: Fabric, plans: dict[str, RecoveryPlan], context: RuleContext
) -> Iterator[Finding]:
    """Group names, action names, and VMs appear once in a plan."""
    for name, plan in plans.items():
        groups: dict[str, int] = {}
        actions: dict[str, str] = {}
        vms: dict[str, str] = {}
        for g, group in enumerate(plan.groups):
            base: DocPath = ("plans", name, "groups", g)
            if group.name in groups:
                yield Finding(
                    (*base, "name"),
                    f"group name {group.name!r} is already used by group {groups[group.name] + 1} "
                    "of this plan; group names are unique in a plan",
                )
            else:
                groups[group.name] = g
            for phase in ("pre", "post"):
                for a, action in enumerate(getattr(group, phase)):
                    if action.name in actions:
                        yield Finding(
                            (*base, phase, a, "name"),
                            f"action name {action.name!r} is already used in group "
                            f"{actions[action.name]!r}; action names are unique in a plan",
                        )
                    else:
                        actions[action.name] = group.name
            for v, vm in enumerate(group.vms):
                if vm.name in vms:
                    yield Finding(
                        (*base, "vms", v, "name"),
                        f"VM {vm.name!r} is already in group {vms[vm.name]!r}; a VM is in at "
                        "most one group of a plan",
                    )
                else:
                    vms[vm.name] = group.name


def plan_vms_stay_connected(
    fabric: Fabric, plans: dict[str, RecoveryPlan], context: RuleContext
) -> Iterator[Finding]:
    """Warn about each adapter of a plan VM whose network has no mapping: failover connects
    every other adapter by its own network's mapping and leaves that one unconnected."""
    for name, plan in plans.items():
        pairing = fabric.pairings.get(plan.pairing)
        if pairing is None:
            continue
        site = pairing.primary.site
        primary = fabric.sites.get(site)
        networks = primary.networks if primary is not None else {}
        for g, group in enumerate(plan.groups):
            for v, plan_vm in enumerate(group.vms):
                protected = pairing.vms.get(plan_vm.name)
                if protected is None:
                    continue
                for index, network in enumerate(protected.networks, start=1):
                    if network not in networks:
                        continue  # an unknown network is reported as an error already
                    if fabric.mapping_for(site, network) is None:
                        # the n-th adapter goes to the n-th network's mapping at failover
                        others = len(protected.networks) - 1
                        rest = (
                            f"; its other {others} adapter(s) are connected by their own "
                            "networks' mappings"
                            if others
                            else ""
                        )
                        yield Finding(
                            ("plans", name, "groups", g, "vms", v),
                            f"adapter {index} of VM {plan_vm.name!r} is on network "
                            f"{network!r}, which has no network mapping: that adapter is left "
                            f"unconnected after failover{rest} (map {site}/{network} in "
                            "fabric.network_mappings)",
                            WARNING,
                        )


def actions_are_runnable(
    fabric: Fabric, plans: dict[str, RecoveryPlan], context: RuleContext
) -> Iterator[Finding]:
    """Actions apply to some run, scripts have exactly one source, gates a sane timeout."""
    for name, plan in plans.items():
        pairing = fabric.pairings.get(plan.pairing)
        for g, group in enumerate(plan.groups):
            for phase in ("pre", "post"):
                for a, action in enumerate(getattr(group, phase)):
                    base = ("plans", name, "groups", g, phase, a)
                    if not action.types:
                        yield Finding(
                            (*base, "types"),
                            "applies to no failover type; list one or more of test, planned, "
                            "unplanned, or leave types out for all",
                        )
                    if not action.directions:
                        yield Finding(
                            (*base, "directions"),
                            "applies to no direction; list failover and/or failback, or leave "
                            "directions out for both",
                        )
                    if isinstance(action, ScriptAction):
                        yield from _script(base, action, name, context, fabric, pairing)
                    elif isinstance(action, ManualAction):
                        yield from _manual(base, action)
                    elif getattr(action, "timeout", 1) == 0:
                        yield Finding((*base, "timeout"), "timeout must be greater than 0")


def _script(
    base: DocPath,
    action: ScriptAction,
    plan_name: str,
    context: RuleContext,
    fabric: Fabric,
    pairing: object,
) -> Iterator[Finding]:
    if action.script is not None and action.file is not None:
        yield Finding(base, "a script action has either 'script' or 'file', not both")
    elif action.script is None and action.file is None:
        yield Finding(base, "a script action needs 'script' (inline PowerShell) or 'file'")
    elif action.file is not None:
        directory = context.plan_dirs.get(plan_name, ".")
        path = os.path.join(directory, action.file)
        if not os.path.lexists(path):
            yield Finding(
                (*base, "file"),
                f"script file {action.file!r} not found (looked for {os.path.normpath(path)!r}); "
                "paths are relative to the plan file",
            )
        else:
            problem = script_file_problem(path, context.roots or (directory,))
            if problem:
                yield Finding((*base, "file"), problem)
    if action.timeout == 0:
        yield Finding((*base, "timeout"), "timeout must be greater than 0")
    if action.host is not None and pairing is not None:
        ref = getattr(pairing, action.site)
        site = fabric.sites.get(ref.site)
        if site is not None and action.host not in site.hosts and action.host != site.vmm.name:
            yield Finding(
                (*base, "host"),
                f"{action.host!r} is not a host of the {action.site} site {ref.site!r}; its "
                f"hosts: {_choices([site.vmm.name, *site.hosts])}",
            )


def _manual(base: DocPath, action: ManualAction) -> Iterator[Finding]:
    if action.timeout == 0:
        yield Finding(
            (*base, "timeout"),
            "timeout 0 would expire the gate at once; give a duration such as 1h or leave it out",
        )
    if action.timeout is None and "on_timeout" in action.model_fields_set:
        yield Finding(
            (*base, "on_timeout"),
            "on_timeout has no effect without a timeout; add a timeout or remove on_timeout",
            WARNING,
        )
    if not action.instructions.strip():
        yield Finding(
            (*base, "instructions"), "a manual action needs instructions for the operator"
        )


RULES: tuple[Rule, ...] = (
    credentials_are_references,
    endpoints_are_sound,
    host_names_are_unique,
    subnets_are_cidr,
    pairings_are_consistent,
    protection_profiles_are_valid,
    protected_vms_are_placed,
    mappings_are_consistent,
    dns_zones_are_reachable,
    plan_references_exist,
    plan_names_are_unique,
    plan_vms_stay_connected,
    actions_are_runnable,
)
