"""Every semantic rule: a variant of the example world that breaks it, and the problem it gives."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from plans import Severity
from tests.plans.conftest import World

NOW = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)
PROFILE = ("fabric", "pairings", "gold", "profile")
STO = ("fabric", "sites", "stockholm")
GOT = ("fabric", "sites", "gothenburg")
ZONE = ("fabric", "dns_zones", "corp.example")
PLAN = ("plans", "three-tier")
G0 = (*PLAN, "groups", 0)


@dataclass
class Case:
    """A change to the example world and the one problem it must cause."""

    id: str
    edits: list[tuple[tuple[Any, ...], Any]]
    message: str
    path: str
    severity: Severity = Severity.ERROR
    more: Callable[[World], None] | None = field(default=None)
    alone: bool = True  # False where the break rightly has knock-on problems elsewhere


def add_pairing(world: World) -> None:
    world.fabric["pairings"]["silver"] = {
        "primary": {"site": "stockholm", "cloud": "sto-gold"},
        "recovery": {"site": "gothenburg", "cloud": "got-silver"},
    }
    world.fabric["sites"]["gothenburg"]["clouds"].append("got-silver")


def second_pairing_with(vm: str) -> Callable[[World], None]:
    def edit(world: World) -> None:
        world.fabric["sites"]["stockholm"]["clouds"].append("sto-silver")
        world.fabric["sites"]["gothenburg"]["clouds"].append("got-silver")
        world.fabric["pairings"]["silver"] = {
            "primary": {"site": "stockholm", "cloud": "sto-silver"},
            "recovery": {"site": "gothenburg", "cloud": "got-silver"},
            "vms": {vm: {"primary_host": "hv-sto-1", "replica_host": "hv-got-1"}},
        }

    return edit


def duplicate_mapping(world: World) -> None:
    world.fabric["network_mappings"].append(dict(world.fabric["network_mappings"][0]))


def duplicate_storage_mapping(world: World) -> None:
    world.fabric["storage_mappings"].append(dict(world.fabric["storage_mappings"][0]))


def add_mon_01(world: World) -> None:
    world.plan["groups"][2]["vms"].append("mon-01")


def add_sql_01_to_web(world: World) -> None:
    world.plan["groups"][2]["vms"].append({"name": "sql-01"})


CASES = [
    # secrets
    Case(
        "literal-password",
        [(("fabric", "credentials", "lab-admin", "password"), "s3cret-value")],
        "credential 'lab-admin' has its password written as a value; write a reference",
        "fabric.credentials.lab-admin.password",
    ),
    Case(
        "literal-tsig-key",
        [((*ZONE, "tsig_key"), "c2VjcmV0LXZhbHVl")],
        "zone 'corp.example' has its TSIG key written as a value",
        'fabric.dns_zones["corp.example"].tsig_key',
    ),
    # endpoints
    Case(
        "unknown-credential",
        [((*STO, "hosts", "hv-sto-1", "credential"), "lab-admn")],
        "unknown credential 'lab-admn'; defined credentials: lab-admin",
        "fabric.sites.stockholm.hosts.hv-sto-1.credential",
    ),
    Case(
        "url-port-out-of-range",
        [((*STO, "vmm", "url"), "http://127.0.0.1:99999/wsman")],
        "'http://127.0.0.1:99999/wsman' has an invalid port",
        "fabric.sites.stockholm.vmm.url",
    ),
    Case(
        "basic-over-http-remote",
        [
            ((*GOT, "hosts", "hv-got-1", "url"), "http://hv-got-1.corp.example:5985/wsman"),
            ((*GOT, "hosts", "hv-got-1", "auth"), "basic"),
        ],
        "basic authentication over plain http sends the password in clear; use an https://",
        "fabric.sites.gothenburg.hosts.hv-got-1.auth",
    ),
    Case(
        "basic-over-http-loopback",
        [((*GOT, "hosts", "hv-got-1", "auth"), "basic")],
        "basic authentication over plain http sends the password in clear; acceptable only on "
        "loopback",
        "fabric.sites.gothenburg.hosts.hv-got-1.auth",
        Severity.WARNING,
    ),
    Case(
        "duplicate-host-across-sites",
        [
            (
                (*GOT, "hosts", "hv-sto-2"),
                {"url": "http://127.0.0.1:1/wsman", "credential": "lab-admin"},
            )
        ],
        "host 'hv-sto-2' is already defined in site 'stockholm'",
        "fabric.sites.gothenburg.hosts.hv-sto-2",
    ),
    Case(
        "vmm-name-equals-host",
        [((*GOT, "vmm", "name"), "hv-got-1")],
        "host 'hv-got-1' is already defined in site 'gothenburg'",
        "fabric.sites.gothenburg.hosts.hv-got-1",
    ),
    # networks
    Case(
        "subnet-not-cidr",
        [((*STO, "networks", "corp-sto", "subnets"), ["10.10.0.0/33"])],
        "'10.10.0.0/33' is not a subnet in CIDR notation",
        "fabric.sites.stockholm.networks.corp-sto.subnets[0]",
    ),
    Case(
        "subnet-host-bits",
        [((*STO, "networks", "corp-sto", "subnets"), ["10.10.3.0/16"])],
        "'10.10.3.0/16' has host bits set; did you mean '10.10.0.0/16'?",
        "fabric.sites.stockholm.networks.corp-sto.subnets[0]",
    ),
    # pairings
    Case(
        "pairing-unknown-site",
        [(("fabric", "pairings", "gold", "recovery", "site"), "malmo")],
        "unknown site 'malmo'; defined sites: gothenburg, stockholm",
        "fabric.pairings.gold.recovery.site",
    ),
    Case(
        "pairing-cloud-not-in-site",
        [(("fabric", "pairings", "gold", "primary", "cloud"), "got-gold")],
        "site 'stockholm' has no cloud 'got-gold'; its clouds: sto-gold",
        "fabric.pairings.gold.primary.cloud",
    ),
    Case(
        "cloud-in-two-pairings",
        [],
        "cloud 'sto-gold' of site 'stockholm' is already in pairing 'gold'",
        "fabric.pairings.silver.primary.cloud",
        more=add_pairing,
    ),
    Case(
        "pairing-within-one-site",
        [
            (("fabric", "pairings", "gold", "recovery"), {"site": "stockholm", "cloud": "sto-x"}),
            ((*STO, "clouds"), ["sto-gold", "sto-x"]),
        ],
        "a pairing links two different sites",
        "fabric.pairings.gold.recovery.site",
        alone=False,  # the replica hosts are then not in the recovery site either
    ),
    Case(
        "vm-in-two-pairings",
        [],
        "VM 'mon-01' is already protected by pairing 'gold'",
        "fabric.pairings.silver.vms.mon-01",
        more=second_pairing_with("mon-01"),
    ),
    # protection profile
    Case(
        "replication-frequency",
        [((*PROFILE, "replication_frequency"), 600)],
        "replication_frequency must be 30, 300 or 900 seconds, got 600",
        "fabric.pairings.gold.profile.replication_frequency",
    ),
    Case(
        "recovery-points-range",
        [((*PROFILE, "recovery_points"), 25), ((*PROFILE, "app_consistent_frequency"), None)],
        "recovery_points must be 0 to 24",
        "fabric.pairings.gold.profile.recovery_points",
    ),
    Case(
        "app-consistent-range",
        [((*PROFILE, "recovery_points"), 24), ((*PROFILE, "app_consistent_frequency"), 13)],
        "app_consistent_frequency must be 1 to 12 hours, got 13",
        "fabric.pairings.gold.profile.app_consistent_frequency",
    ),
    Case(
        "app-consistent-needs-recovery-points",
        [((*PROFILE, "recovery_points"), 0)],
        "app_consistent_frequency needs additional recovery points",
        "fabric.pairings.gold.profile.app_consistent_frequency",
    ),
    Case(
        "app-consistent-less-than-points",
        [((*PROFILE, "app_consistent_frequency"), 4)],
        "app_consistent_frequency (4) must be less than recovery_points (4)",
        "fabric.pairings.gold.profile.app_consistent_frequency",
    ),
    Case(
        "replication-port-range",
        [((*PROFILE, "port"), 70000)],
        "port must be 1 to 65535, got 70000",
        "fabric.pairings.gold.profile.port",
    ),
    Case(
        "offline-needs-paths",
        [((*PROFILE, "initial_replication"), {"method": "offline", "import_path": "E:\\in"})],
        "offline initial replication needs export_path",
        "fabric.pairings.gold.profile.initial_replication",
    ),
    Case(
        "paths-without-offline",
        [((*PROFILE, "initial_replication"), {"method": "network", "export_path": "D:\\out"})],
        "export_path/import_path are used only by method: offline",
        "fabric.pairings.gold.profile.initial_replication",
        Severity.WARNING,
    ),
    Case(
        "scheduled-needs-start-time",
        [((*PROFILE, "initial_replication"), {"method": "scheduled"})],
        "scheduled initial replication needs start_time",
        "fabric.pairings.gold.profile.initial_replication",
    ),
    Case(
        "scheduled-in-the-past",
        [
            (
                (*PROFILE, "initial_replication"),
                {"method": "scheduled", "start_time": NOW - timedelta(hours=1)},
            )
        ],
        "is in the past",
        "fabric.pairings.gold.profile.initial_replication.start_time",
    ),
    Case(
        "scheduled-beyond-7-days",
        [
            (
                (*PROFILE, "initial_replication"),
                {"method": "scheduled", "start_time": NOW + timedelta(days=7, minutes=1)},
            )
        ],
        "is more than 7 days ahead",
        "fabric.pairings.gold.profile.initial_replication.start_time",
    ),
    Case(
        "start-time-without-schedule",
        [((*PROFILE, "initial_replication"), {"method": "network", "start_time": NOW})],
        "start_time is used only by method: scheduled",
        "fabric.pairings.gold.profile.initial_replication.start_time",
        Severity.WARNING,
    ),
    # protected VMs
    Case(
        "primary-host-in-other-site",
        [(("fabric", "pairings", "gold", "vms", "sql-01", "primary_host"), "hv-got-1")],
        "'hv-got-1' is not a Hyper-V host of the primary site 'stockholm'",
        "fabric.pairings.gold.vms.sql-01.primary_host",
    ),
    Case(
        "replica-host-unknown",
        [(("fabric", "pairings", "gold", "vms", "sql-01", "replica_host"), "hv-got-9")],
        "'hv-got-9' is not a Hyper-V host of the recovery site 'gothenburg'",
        "fabric.pairings.gold.vms.sql-01.replica_host",
    ),
    Case(
        "vm-network-unknown",
        [(("fabric", "pairings", "gold", "vms", "sql-01", "networks"), ["corp-got"])],
        "unknown network 'corp-got' in site 'stockholm'",
        "fabric.pairings.gold.vms.sql-01.networks[0]",
    ),
    Case(
        "vm-storage-unknown",
        [(("fabric", "pairings", "gold", "vms", "sql-01", "storage_classification"), "platinum")],
        "unknown storage classification 'platinum' in site 'stockholm'",
        "fabric.pairings.gold.vms.sql-01.storage_classification",
    ),
    # mappings
    Case(
        "mapping-unknown-network",
        [(("fabric", "network_mappings", 0, "target", "network"), "corp-gbg")],
        "unknown network 'corp-gbg' in site 'gothenburg'",
        "fabric.network_mappings[0].target.network",
    ),
    Case(
        "mapping-unknown-site",
        [(("fabric", "network_mappings", 0, "source", "site"), "uppsala")],
        "unknown site 'uppsala'",
        "fabric.network_mappings[0].source.site",
        alone=False,  # and every plan VM on corp-sto is then unmapped (warnings)
    ),
    Case(
        "mapping-unknown-test-network",
        [(("fabric", "network_mappings", 0, "test_network"), "lab-got")],
        "unknown network 'lab-got' in site 'gothenburg'",
        "fabric.network_mappings[0].test_network",
    ),
    Case(
        "network-mapped-twice",
        [],
        "network 'corp-sto' of site 'stockholm' is mapped twice",
        "fabric.network_mappings[1].source",
        more=duplicate_mapping,
    ),
    Case(
        "storage-mapping-unknown",
        [(("fabric", "storage_mappings", 0, "target", "classification"), "gold")],
        "unknown storage classification 'gold' in site 'gothenburg'",
        "fabric.storage_mappings[0].target.classification",
    ),
    Case(
        "storage-mapped-twice",
        [],
        "storage classification 'gold' of site 'stockholm' is mapped twice",
        "fabric.storage_mappings[1].source",
        more=duplicate_storage_mapping,
    ),
    # DNS zones
    Case(
        "rfc2136-needs-servers",
        [((*ZONE, "primary"), None), ((*ZONE, "servers"), None)],
        "rfc2136 zone 'corp.example' needs 'primary'",
        'fabric.dns_zones["corp.example"]',
    ),
    Case(
        "rfc2136-bad-port",
        [((*ZONE, "servers"), ["127.0.0.1:15353", "127.0.0.1:dns"])],
        "'127.0.0.1:dns' has an invalid port",
        'fabric.dns_zones["corp.example"].servers[1]',
    ),
    Case(
        "windows-needs-site",
        [(("fabric", "dns_zones", "test.corp.example", "site"), None)],
        "windows zone 'test.corp.example' needs 'site'",
        'fabric.dns_zones["test.corp.example"]',
    ),
    Case(
        "windows-unknown-site",
        [(("fabric", "dns_zones", "test.corp.example", "site"), "goteborg")],
        "unknown site 'goteborg'",
        'fabric.dns_zones["test.corp.example"].site',
    ),
    Case(
        "test-zone-unknown",
        [((*ZONE, "test_zone"), "drill.corp.example")],
        "unknown zone 'drill.corp.example'",
        'fabric.dns_zones["corp.example"].test_zone',
    ),
    Case(
        "test-zone-is-itself",
        [((*ZONE, "test_zone"), "corp.example")],
        "a zone cannot be its own test zone",
        'fabric.dns_zones["corp.example"].test_zone',
    ),
    # plans
    Case(
        "plan-unknown-pairing",
        [((*PLAN, "pairing"), "silver")],
        "unknown pairing 'silver'; defined pairings: gold",
        "plans.three-tier.pairing",
    ),
    Case(
        "plan-vm-not-protected",
        [((*PLAN, "groups", 1, "vms", 0, "name"), "app-09")],
        "VM 'app-09' is not protected by pairing 'gold'",
        "plans.three-tier.groups[1].vms[0].name",
    ),
    Case(
        "dns-record-unknown-zone",
        [((*G0, "vms", 0, "dns", 0, "zone"), "corp.exampel")],
        "unknown DNS zone 'corp.exampel'",
        "plans.three-tier.groups[0].vms[0].dns[0].zone",
    ),
    Case(
        "dns-ptr-in-a-windows-zone",
        [
            ((*ZONE, "kind"), "windows"),
            ((*ZONE, "site"), "stockholm"),
            ((*G0, "vms", 0, "dns", 0, "ptr"), True),
        ],
        "ptr: true, but corp.example and test.corp.example (its test zone) are Windows DNS",
        "plans.three-tier.groups[0].vms[0].dns[0].ptr",
    ),
    Case(
        "dns-ptr-with-a-windows-test-zone",
        [((*G0, "vms", 0, "dns", 0, "ptr"), True)],
        "ptr: true, but test.corp.example (its test zone) is Windows DNS",
        "plans.three-tier.groups[0].vms[0].dns[0].ptr",
    ),
    Case(
        "duplicate-group-name",
        [((*PLAN, "groups", 2, "name"), "databases")],
        "group name 'databases' is already used by group 1 of this plan",
        "plans.three-tier.groups[2].name",
    ),
    Case(
        "duplicate-action-name",
        [((*PLAN, "groups", 2, "post", 0, "name"), "application-up")],
        "action name 'application-up' is already used in group 'application'",
        "plans.three-tier.groups[2].post[0].name",
    ),
    Case(
        "vm-in-two-groups",
        [],
        "VM 'sql-01' is already in group 'databases'",
        "plans.three-tier.groups[2].vms[2].name",
        more=add_sql_01_to_web,
    ),
    Case(
        "vm-on-unmapped-network",
        [],
        "adapter 1 of VM 'mon-01' is on network 'mgmt-sto', which has no network mapping: "
        "that adapter is left unconnected after failover (map stockholm/mgmt-sto",
        "plans.three-tier.groups[2].vms[2]",
        Severity.WARNING,
        more=add_mon_01,
    ),
    # actions
    Case(
        "action-no-types",
        [((*G0, "pre", 0, "types"), [])],
        "applies to no failover type",
        "plans.three-tier.groups[0].pre[0].types",
    ),
    Case(
        "action-no-directions",
        [((*G0, "post", 0, "directions"), [])],
        "applies to no direction",
        "plans.three-tier.groups[0].post[0].directions",
    ),
    Case(
        "script-both-sources",
        [((*G0, "pre", 0, "file"), "quiesce.ps1")],
        "a script action has either 'script' or 'file', not both",
        "plans.three-tier.groups[0].pre[0]",
    ),
    Case(
        "script-no-source",
        [((*G0, "pre", 0, "script"), None)],
        "a script action needs 'script' (inline PowerShell) or 'file'",
        "plans.three-tier.groups[0].pre[0]",
    ),
    Case(
        "script-file-missing",
        [((*G0, "pre", 0, "script"), None), ((*G0, "pre", 0, "file"), "scripts/quiesce.ps1")],
        "script file 'scripts/quiesce.ps1' not found",
        "plans.three-tier.groups[0].pre[0].file",
    ),
    Case(
        "script-host-not-in-site",
        [((*G0, "pre", 0, "host"), "hv-got-1")],
        "'hv-got-1' is not a host of the primary site 'stockholm'",
        "plans.three-tier.groups[0].pre[0].host",
    ),
    Case(
        "script-zero-timeout",
        [((*G0, "pre", 0, "timeout"), 0)],
        "timeout must be greater than 0",
        "plans.three-tier.groups[0].pre[0].timeout",
    ),
    Case(
        "manual-zero-timeout",
        [((*G0, "post", 0, "timeout"), "0s")],
        "timeout 0 would expire the gate at once",
        "plans.three-tier.groups[0].post[0].timeout",
    ),
    Case(
        "manual-policy-without-timeout",
        [((*G0, "post", 0, "timeout"), None)],
        "on_timeout has no effect without a timeout",
        "plans.three-tier.groups[0].post[0].on_timeout",
        Severity.WARNING,
    ),
    Case(
        "manual-blank-instructions",
        [((*G0, "post", 0, "instructions"), "   ")],
        "a manual action needs instructions for the operator",
        "plans.three-tier.groups[0].post[0].instructions",
    ),
    Case(
        "health-check-zero-timeout",
        [((*PLAN, "groups", 1, "post", 0, "timeout"), 0)],
        "timeout must be greater than 0",
        "plans.three-tier.groups[1].post[0].timeout",
    ),
]


def test_the_example_world_is_clean(world: World) -> None:
    report = world.validate(now=NOW)
    assert report.problems == []
    assert report.bundle is not None


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_rule(world: World, case: Case) -> None:
    for path, value in case.edits:
        if value is None and isinstance(path[-1], str):
            _delete(world, path)
        else:
            world.set(path, value)
    if case.more is not None:
        case.more(world)
    report = world.validate(now=NOW)
    matching = [p for p in report.problems if case.message in p.message]
    assert len(matching) == 1, [str(p) for p in report.problems]
    problem = matching[0]
    assert problem.path_text == case.path
    assert problem.severity is case.severity
    assert problem.line > 0 and problem.col > 0
    if case.alone:
        others = [p for p in report.problems if p is not problem]
        assert others == [], [str(p) for p in others]
    assert (report.bundle is None) == (case.severity is Severity.ERROR)


def _delete(world: World, path: tuple[Any, ...]) -> None:
    doc = world.fabric_doc if path[0] == "fabric" else world.plan_doc
    for part in path[:-1]:
        doc = doc[part]
    doc.pop(path[-1], None)


def test_secret_values_never_appear_in_messages(world: World) -> None:
    world.set(("fabric", "credentials", "lab-admin", "password"), "hunter2-value")
    world.set((*ZONE, "tsig_key"), "c2VjcmV0LWtleQ==")
    report = world.validate(now=NOW)
    assert len(report.errors) == 2
    assert not any("hunter2" in str(p) or "c2VjcmV0" in str(p) for p in report.problems)


def test_scheduled_within_a_week_is_accepted(world: World) -> None:
    start = NOW + timedelta(days=6, hours=23)
    world.set((*PROFILE, "initial_replication"), {"method": "scheduled", "start_time": start})
    assert world.validate(now=NOW).problems == []


def test_naive_start_time_is_read_as_utc(world: World) -> None:
    start = (NOW + timedelta(days=1)).replace(tzinfo=None)
    world.set((*PROFILE, "initial_replication"), {"method": "scheduled", "start_time": start})
    assert world.validate(now=NOW).problems == []
    assert world.validate(now=NOW + timedelta(days=2)).errors != []


def test_basic_over_https_is_accepted(world: World) -> None:
    world.set((*GOT, "hosts", "hv-got-1", "url"), "https://hv-got-1.corp.example:5986/wsman")
    world.set((*GOT, "hosts", "hv-got-1", "auth"), "basic")
    assert world.validate(now=NOW).problems == []


def test_script_file_next_to_the_plan_is_accepted(world: World) -> None:
    (world.directory / "scripts").mkdir()
    (world.directory / "scripts" / "quiesce.ps1").write_text("Write-Output quiesced\n")
    world.set((*G0, "pre", 0, "file"), "scripts/quiesce.ps1")
    _delete(world, (*G0, "pre", 0, "script"))
    report = world.validate(now=NOW)
    assert report.problems == []


def test_all_problems_are_reported_at_once(world: World) -> None:
    world.set((*PROFILE, "replication_frequency"), 45)
    world.set(("fabric", "credentials", "lab-admin", "password"), "plain")
    world.set((*PLAN, "groups", 2, "name"), "databases")
    world.set((*PLAN, "groups", 0, "vms", 0, "dns", 0, "zone"), "nowhere.example")
    report = world.validate(now=NOW)
    assert len(report.errors) == 4
    files = {p.file.rsplit("/", 1)[-1] for p in report.errors}
    assert files == {"fabric.yaml", "three-tier.yaml"}
