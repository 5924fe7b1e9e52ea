"""Names carrying PowerShell metacharacters reach the lab as literal parameter values.

A small world whose VM and network names hold quotes, ``;``, ``$()``, backticks and
non-Latin text runs a test failover against the lab over real pypsrp. The lab's audit log must
show each name exactly as written in the plan, as the value of its parameter, and nothing else
happened: no other VM touched, no cmdlet the plan does not call. DNS names keep to RFC 1123,
so metacharacters there are refused before anything runs.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from lab.hyperv.wildcard import unescape
from lab.testing import running_lab
from plans import load_bundle, validate
from tests.reliability.drill import drive, topology
from workers.embedded import embedded
from workers.tasks import default_executor
from workflows.demo import point_at_lab
from workflows.settings import RetryPolicy, Settings
from workflows.statuses import RunStatus

VMS = {
    "sql'; Remove-VM -Name x -Force; '": ("10.10.1.11", "10.20.1.11"),
    'app"$(Stop-Computer -Force)"': ("10.10.2.21", "10.20.2.21"),
    "web $env:COMPUTERNAME Ж中😀 & | > x @{a=1}": ("10.10.3.31", "10.20.3.31"),
}
# PowerShell wildcard characters: Hyper-V's -Name/-VMName parameters read them as patterns.
WILDCARD_VMS = {
    "web`01": ("10.10.3.32", "10.20.3.32"),
    "app[1]": ("10.10.2.22", "10.20.2.22"),
}
DECOY = ("app1", ("10.10.2.23", "10.20.2.23"))  # what "app[1]" matches as a pattern
SOURCE_NET = "corp'; $(Get-Date)"
TARGET_NET = 'dr"net;`whoami`'
TEST_NET = "test$(Remove-Item C:\\ -Recurse)"
ZONE = "corp-evil.example"
TEST_ZONE = "test-evil.example"
RECORD = "_rec-01"  # legal, if unusual: an underscore label
HOSTILE_TEST_ZONE = "test'$(x);.example"
HOSTILE_RECORD = "rec'$(whoami)"


def hostile_topology(vms: dict[str, tuple[str, str]]) -> dict[str, Any]:
    data = topology()
    data["networks"] = [
        {"name": SOURCE_NET, "site": "stockholm", "subnet": "10.10.0.0/16"},
        {"name": TARGET_NET, "site": "gothenburg", "subnet": "10.20.0.0/16"},
        {"name": TEST_NET, "site": "gothenburg", "subnet": "10.99.0.0/16", "test": True},
    ]
    data["vms"] = [
        {
            "name": name,
            "primary": "hv-sto-1",
            "replica": "hv-got-1",
            "networks": [SOURCE_NET],
            "ips": {SOURCE_NET: source, TARGET_NET: target},
            "boot_seconds": 30,
            "replication": {"frequency": 300, "recovery_history": 0, "auth": "kerberos"},
        }
        for name, (source, target) in vms.items()
    ]
    data["dns"] = {
        "zones": [
            {"name": ZONE, "servers": ["vmm-got"], "records": []},
            {"name": TEST_ZONE, "servers": ["vmm-got"], "records": []},
        ]
    }
    return data


def hostile_files(
    directory: Path,
    vms: dict[str, tuple[str, str]],
    test_zone: str = TEST_ZONE,
    record: str = RECORD,
) -> Path:
    """Fabric + plan for the hostile world (endpoints are pointed at the lab later)."""
    fabric = yaml.safe_load((Path("plans/examples/fabric.yaml")).read_text(encoding="utf-8"))
    sites = fabric["fabric"]["sites"]
    sites["stockholm"]["networks"] = {SOURCE_NET: {"subnets": ["10.10.0.0/16"]}}
    sites["gothenburg"]["networks"] = {
        TARGET_NET: {"subnets": ["10.20.0.0/16"]},
        TEST_NET: {"subnets": ["10.99.0.0/16"]},
    }
    pairing = fabric["fabric"]["pairings"]["gold"]
    pairing["vms"] = {
        name: {"primary_host": "hv-sto-1", "replica_host": "hv-got-1", "networks": [SOURCE_NET]}
        for name in vms
    }
    fabric["fabric"]["network_mappings"] = [
        {
            "source": {"site": "stockholm", "network": SOURCE_NET},
            "target": {"site": "gothenburg", "network": TARGET_NET},
            "test_network": TEST_NET,
        }
    ]
    fabric["fabric"]["dns_zones"] = {
        ZONE: {"kind": "windows", "site": "gothenburg", "test_zone": test_zone},
        test_zone: {"kind": "windows", "site": "gothenburg"},
    }
    plan = {
        "version": 1,
        "include": ["fabric.yaml"],
        "plans": {
            "hostile": {
                "pairing": "gold",
                "test_network": "isolated",
                "groups": [
                    {
                        "name": "all",
                        "vms": [
                            {"name": name, "dns": [{"zone": ZONE, "name": record}]}
                            if index == 0
                            else {"name": name}
                            for index, name in enumerate(vms)
                        ],
                    }
                ],
            }
        },
    }
    (directory / "fabric.yaml").write_text(yaml.safe_dump(fabric, allow_unicode=True))
    path = directory / "hostile.yaml"
    path.write_text(yaml.safe_dump(plan, allow_unicode=True))
    return path


def run_test_failover(
    vms: dict[str, tuple[str, str]], plan_vms: dict[str, tuple[str, str]]
) -> tuple[Any, list[dict[str, Any]], dict[str, Any]]:
    """A test failover of ``plan_vms`` in a lab holding ``vms``: (run, audit, lab state)."""
    with (
        tempfile.TemporaryDirectory(prefix="ferryman-hostile-") as tmp,
        running_lab(hostile_topology(vms), auth="ntlm") as lab,
    ):
        urls = {name: endpoint.url for name, endpoint in lab.endpoints.items()}
        bundle = point_at_lab(load_bundle([hostile_files(Path(tmp), plan_vms)]), urls)
        settings = Settings(
            database_url=f"sqlite:///{tmp}/ferryman.db",
            retry=RetryPolicy(max_retries=2, base_delay=0.1, max_delay=0.5),
        )
        executor = default_executor(poll_interval=0.1)
        with embedded(settings, list(bundle.fabric.sites), executor=executor) as runtime:
            run = runtime.engine.start(bundle, "hostile", "test", requested_by="reliability")
            final = drive(runtime, run.id, timeout=120)
        _status, audit = lab.admin("GET", "/audit")
        _status, state = lab.admin("GET", "/state")
    return final, audit["entries"], state


def check_literal(
    final: Any, entries: list[dict[str, Any]], state: dict[str, Any], vms: list[str]
) -> None:
    """Exactly the plan's VMs were failed over, by their literal names, and nothing else."""
    assert final.status == RunStatus.SUCCEEDED, final.error
    by_cmdlet = Counter(e["cmdlet"] for e in entries)
    assert set(by_cmdlet) <= {
        "Start-VMFailover", "Connect-VMNetworkAdapter", "Start-VM", "Add-DnsServerResourceRecordA",
        "Remove-DnsServerResourceRecord", "Add-DnsServerResourceRecord",
    }, by_cmdlet  # fmt: skip
    failovers = [e for e in entries if e["cmdlet"] == "Start-VMFailover"]
    assert sorted(e["vm"] for e in failovers) == sorted(vms)
    # -VMName takes a wildcard pattern: what Hyper-V reads is the pattern with its escapes removed
    sent = [unescape(name) for e in failovers for name in e["parameters"]["VMName"]]
    assert sorted(sent) == sorted(vms)
    connects = [e for e in entries if e["cmdlet"] == "Connect-VMNetworkAdapter"]
    assert {e["parameters"]["SwitchName"] for e in connects} == {TEST_NET}
    assert sorted(e["vm"] for e in connects) == sorted(f"{vm} - Test" for vm in vms)
    test_vms = sorted(vm["name"] for vm in state["vms"] if vm.get("test_of"))
    assert test_vms == sorted(f"{vm} - Test" for vm in vms)


def test_metacharacters_reach_the_lab_as_literal_values(lab_password: str) -> None:
    final, entries, state = run_test_failover(VMS, VMS)
    check_literal(final, entries, state, list(VMS))
    dns = [e for e in entries if "Dns" in e["cmdlet"]]
    assert dns, "the hostile DNS record was not written"
    assert all(e["parameters"].get("ZoneName") == TEST_ZONE for e in dns), dns


def test_dns_record_names_reach_windows_dns_literally(lab_password: str) -> None:
    final, entries, _state = run_test_failover(VMS, VMS)
    assert final.status == RunStatus.SUCCEEDED, final.error
    names = [e["parameters"].get("Name") for e in entries if "Dns" in e["cmdlet"]]
    assert names in ([RECORD], [f"{RECORD}.{TEST_ZONE}."]), names


def test_wildcard_characters_in_vm_names_are_literal(lab_password: str) -> None:
    decoy_name, decoy_ips = DECOY
    final, entries, state = run_test_failover({**WILDCARD_VMS, decoy_name: decoy_ips}, WILDCARD_VMS)
    assert all(e["vm"] != decoy_name for e in entries), "the decoy VM was touched"
    check_literal(final, entries, state, list(WILDCARD_VMS))


def test_metacharacters_in_dns_names_are_refused_before_any_run(tmp_path: Path) -> None:
    path = hostile_files(tmp_path, VMS, test_zone=HOSTILE_TEST_ZONE, record=HOSTILE_RECORD)
    report = validate([path])
    assert report.bundle is None
    problems = sorted((Path(p.file).name, p.message.split(" has ")[0]) for p in report.errors)
    assert problems == [
        ("fabric.yaml", f"test zone {HOSTILE_TEST_ZONE!r}"),
        ("fabric.yaml", f"zone {HOSTILE_TEST_ZONE!r}"),
        ("hostile.yaml", f"record name {HOSTILE_RECORD!r}"),
    ]
    assert all(p.line > 0 for p in report.errors)
