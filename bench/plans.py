"""Generated worlds for benchmarks: a lab topology, a fabric and a plan of G groups x M VMs.

The shape follows the shared example world (``stockholm`` primary, ``gothenburg`` recovery,
pairing ``gold``, networks ``corp-sto`` -> ``corp-got`` with test network ``test-got``), scaled
up: VM ``vm-00042`` runs on a Hyper-V host of stockholm and replicates to its partner in
gothenburg, VMs spread round-robin over ``hosts_per_site`` hosts per site.

The fabric needs the lab's real endpoints, which exist only once a lab runs, so it is built
from a mapping host name -> WinRM URL (:func:`fabric_document`); for compile-only benchmarks
:func:`placeholder_urls` gives URLs nobody is asked to answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PRIMARY_SITE = "stockholm"
RECOVERY_SITE = "gothenburg"
PAIRING = "gold"
PLAN_NAME = "bench"
CREDENTIAL = "lab-admin"
PASSWORD_REF = "env:FERRYMAN_LAB_PASSWORD"
VMM_HOSTS = {PRIMARY_SITE: "vmm-sto", RECOVERY_SITE: "vmm-got"}


@dataclass(frozen=True)
class Shape:
    """How big a generated world is and how its lab behaves.

    ``boot_seconds`` is lab time from Start-VM until the guest reports its IP; the lab's
    ``time_scale`` turns it into real time.
    """

    groups: int
    vms_per_group: int
    hosts_per_site: int = 2
    boot_seconds: float = 0.0

    @property
    def vm_count(self) -> int:
        """Every VM of the plan."""
        return self.groups * self.vms_per_group

    def vm_name(self, index: int) -> str:
        """The name of the ``index``-th VM (0-based, plan order)."""
        return f"vm-{index:05d}"

    def host_pair(self, index: int) -> tuple[str, str]:
        """The primary and replica host of the ``index``-th VM."""
        n = index % self.hosts_per_site + 1
        return f"hv-sto-{n}", f"hv-got-{n}"

    def ip_suffix(self, index: int) -> str:
        """The last two octets shared by the VM's addresses in every network."""
        return f"{index // 250 + 1}.{index % 250 + 1}"

    def groups_of_names(self) -> list[list[str]]:
        """VM names per group, in order."""
        m = self.vms_per_group
        return [[self.vm_name(g * m + i) for i in range(m)] for g in range(self.groups)]


def hyperv_hosts(shape: Shape) -> dict[str, list[str]]:
    """Hyper-V host names per site."""
    n = range(1, shape.hosts_per_site + 1)
    return {PRIMARY_SITE: [f"hv-sto-{i}" for i in n], RECOVERY_SITE: [f"hv-got-{i}" for i in n]}


def topology_document(
    shape: Shape,
    *,
    time_scale: float = 1.0,
    cmdlet_latency: float = 0.0,
    password: str = "generate",
) -> dict[str, Any]:
    """The lab topology (see ``lab/topology.py``); ``cmdlet_latency`` in real seconds.

    The latency is a fault rule applying to every cmdlet on every host (the admin API's fixed
    per-cmdlet latency), so each PSRP call costs that much on top of the protocol work.
    """
    hosts: list[dict[str, Any]] = [
        {"name": VMM_HOSTS[PRIMARY_SITE], "site": PRIMARY_SITE, "role": "vmm"},
        {"name": VMM_HOSTS[RECOVERY_SITE], "site": RECOVERY_SITE, "role": "vmm"},
    ]
    for site, names in hyperv_hosts(shape).items():
        hosts.extend({"name": name, "site": site, "role": "hyperv"} for name in names)
    vms = []
    for index in range(shape.vm_count):
        primary, replica = shape.host_pair(index)
        suffix = shape.ip_suffix(index)
        vms.append(
            {
                "name": shape.vm_name(index),
                "primary": primary,
                "replica": replica,
                "networks": ["corp-sto"],
                "ips": {"corp-sto": f"10.10.{suffix}", "corp-got": f"10.20.{suffix}"},
                "boot_seconds": shape.boot_seconds,
                "replication": {"state": "replicating", "frequency": 300},
            }
        )
    document: dict[str, Any] = {
        "time_scale": time_scale,
        "seed": 7,
        "credentials": {"username": "ferryman", "domain": "LAB", "password": password},
        "sites": [PRIMARY_SITE, RECOVERY_SITE],
        "hosts": hosts,
        "networks": [
            {"name": "corp-sto", "site": PRIMARY_SITE, "subnet": "10.10.0.0/16"},
            {"name": "corp-got", "site": RECOVERY_SITE, "subnet": "10.20.0.0/16"},
            {"name": "test-got", "site": RECOVERY_SITE, "subnet": "10.99.0.0/16", "test": True},
        ],
        "vms": vms,
    }
    if cmdlet_latency > 0:
        document["faults"] = [{"latency_ms": cmdlet_latency * 1000}]
    return document


def placeholder_urls(shape: Shape) -> dict[str, str]:
    """WinRM URLs for every host, for benchmarks that never connect (port 9, discard)."""
    names = [*VMM_HOSTS.values()] + [h for hs in hyperv_hosts(shape).values() for h in hs]
    return {name: "http://127.0.0.1:9/wsman" for name in names}


def fabric_document(
    shape: Shape, urls: dict[str, str], *, username: str = "LAB\\ferryman"
) -> dict[str, Any]:
    """The fabric: two sites on ``urls`` (host name -> WinRM URL), pairing ``gold``."""

    def endpoint(host: str) -> dict[str, Any]:
        return {"url": urls[host], "auth": "ntlm", "credential": CREDENTIAL}

    hosts = hyperv_hosts(shape)
    sites = {
        PRIMARY_SITE: {
            "vmm": {"name": VMM_HOSTS[PRIMARY_SITE], **endpoint(VMM_HOSTS[PRIMARY_SITE])},
            "hosts": {h: endpoint(h) for h in hosts[PRIMARY_SITE]},
            "networks": {"corp-sto": {"subnets": ["10.10.0.0/16"]}},
            "clouds": ["sto-gold"],
        },
        RECOVERY_SITE: {
            "vmm": {"name": VMM_HOSTS[RECOVERY_SITE], **endpoint(VMM_HOSTS[RECOVERY_SITE])},
            "hosts": {h: endpoint(h) for h in hosts[RECOVERY_SITE]},
            "networks": {
                "corp-got": {"subnets": ["10.20.0.0/16"]},
                "test-got": {"subnets": ["10.99.0.0/16"]},
            },
            "clouds": ["got-gold"],
        },
    }
    vms = {}
    for index in range(shape.vm_count):
        primary, replica = shape.host_pair(index)
        vms[shape.vm_name(index)] = {
            "primary_host": primary,
            "replica_host": replica,
            "networks": ["corp-sto"],
        }
    return {
        "credentials": {CREDENTIAL: {"username": username, "password": PASSWORD_REF}},
        "sites": sites,
        "pairings": {
            PAIRING: {
                "primary": {"site": PRIMARY_SITE, "cloud": "sto-gold"},
                "recovery": {"site": RECOVERY_SITE, "cloud": "got-gold"},
                "vms": vms,
            }
        },
        "network_mappings": [
            {
                "source": {"site": PRIMARY_SITE, "network": "corp-sto"},
                "target": {"site": RECOVERY_SITE, "network": "corp-got"},
                "test_network": "test-got",
            }
        ],
    }


def plan_document(shape: Shape, *, name: str = PLAN_NAME) -> dict[str, Any]:
    """A plan of ``shape.groups`` groups of ``shape.vms_per_group`` VMs, no actions, no DNS."""
    groups = [
        {"name": f"group-{g + 1:03d}", "vms": names}
        for g, names in enumerate(shape.groups_of_names())
    ]
    return {
        "pairing": PAIRING,
        "description": f"benchmark: {shape.groups} groups x {shape.vms_per_group} VMs",
        "on_group_failure": "stop",
        "test_network": "isolated",
        "groups": groups,
    }


def split_plans(shape: Shape, count: int) -> dict[str, dict[str, Any]]:
    """``count`` plans over disjoint VMs: plan ``bench-01`` takes the first groups, and so on.

    ``shape.groups`` must be a multiple of ``count``; every plan gets the same number of groups.
    """
    if shape.groups % count:
        raise ValueError(f"{shape.groups} groups do not split into {count} equal plans")
    per_plan = shape.groups // count
    groups = shape.groups_of_names()
    plans = {}
    for index in range(count):
        mine = groups[index * per_plan : (index + 1) * per_plan]
        plans[f"{PLAN_NAME}-{index + 1:02d}"] = {
            "pairing": PAIRING,
            "description": f"benchmark plan {index + 1} of {count}",
            "test_network": "isolated",
            "groups": [
                {"name": f"group-{g + 1:03d}", "vms": names} for g, names in enumerate(mine)
            ],
        }
    return plans


def write_bundle(
    directory: Path,
    shape: Shape,
    urls: dict[str, str],
    *,
    plans: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """Write ``fabric.yaml`` and ``plan.yaml`` to a folder; returns the plan file.

    The plan file includes the fabric file as the examples do and holds ``plans`` (default:
    one plan :data:`PLAN_NAME` over every VM).
    """
    directory.mkdir(parents=True, exist_ok=True)
    fabric_path = directory / "fabric.yaml"
    plan_path = directory / "plan.yaml"
    _dump(fabric_path, {"version": 1, "fabric": fabric_document(shape, urls)})
    if plans is None:
        plans = {PLAN_NAME: plan_document(shape)}
    _dump(plan_path, {"version": 1, "include": ["fabric.yaml"], "plans": plans})
    return plan_path


def write_topology(path: Path, document: dict[str, Any]) -> Path:
    """Write a topology document as YAML."""
    _dump(path, document)
    return path


def _dump(path: Path, document: dict[str, Any]) -> None:
    # CSafeDumper when available: a 5,000-VM fabric is a few MB of YAML.
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    path.write_text(yaml.dump(document, Dumper=dumper, sort_keys=False), encoding="utf-8")


DNS_ZONE = "corp.example"
TEST_DNS_ZONE = "test.corp.example"
GATE_EVERY = 10  # groups


def realistic_fabric_document(shape: Shape, urls: dict[str, str]) -> dict[str, Any]:
    """:func:`fabric_document` with the DNS zones a real plan updates (RFC 2136 with TSIG
    for the production zone, the recovery site's Windows DNS for the test zone)."""
    document = fabric_document(shape, urls)
    document["dns_zones"] = {
        DNS_ZONE: {
            "kind": "rfc2136",
            "primary": "127.0.0.1:9",
            "servers": ["127.0.0.1:9"],
            "tsig_key": "env:FERRYMAN_BENCH_TSIG_KEY",
            "algorithm": "hmac-sha256",
            "test_zone": TEST_DNS_ZONE,
        },
        TEST_DNS_ZONE: {"kind": "windows", "site": RECOVERY_SITE},
    }
    return document


def realistic_plan_document(shape: Shape) -> dict[str, Any]:
    """A plan shaped like a real one: a DNS record per VM, a script before and a health check
    after every group, and an operator's gate after every :data:`GATE_EVERY`-th group."""
    groups = []
    for g, names in enumerate(shape.groups_of_names()):
        post: list[dict[str, Any]] = [{"kind": "health_check", "name": f"group-{g + 1:03d}-up"}]
        if (g + 1) % GATE_EVERY == 0:
            post.append(
                {
                    "kind": "manual",
                    "name": f"approve-after-{g + 1:03d}",
                    "instructions": "Check the groups so far in the recovery site, then approve.",
                    "timeout": "1h",
                }
            )
        groups.append(
            {
                "name": f"group-{g + 1:03d}",
                "pre": [
                    {
                        "kind": "script",
                        "name": f"prepare-{g + 1:03d}",
                        "script": 'param([string]$Mode)\nWrite-Output "group set to $Mode"',
                        "parameters": {"Mode": "drain"},
                        "site": "recovery",
                        "timeout": "5m",
                    }
                ],
                "vms": [{"name": vm, "dns": [{"zone": DNS_ZONE, "name": vm}]} for vm in names],
                "post": post,
            }
        )
    return {
        "pairing": PAIRING,
        "description": f"benchmark: {shape.groups} groups x {shape.vms_per_group} VMs, realistic",
        "on_group_failure": "stop",
        "test_network": "isolated",
        "groups": groups,
    }


def write_realistic_bundle(directory: Path, shape: Shape, urls: dict[str, str]) -> Path:
    """Write the realistic fabric and plan (:data:`PLAN_NAME`) to a folder; the plan file."""
    directory.mkdir(parents=True, exist_ok=True)
    _dump(
        directory / "fabric.yaml", {"version": 1, "fabric": realistic_fabric_document(shape, urls)}
    )
    plan_path = directory / "plan.yaml"
    plans = {PLAN_NAME: realistic_plan_document(shape)}
    _dump(plan_path, {"version": 1, "include": ["fabric.yaml"], "plans": plans})
    return plan_path
