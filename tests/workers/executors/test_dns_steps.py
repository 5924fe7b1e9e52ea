"""UPDATE_DNS / RESTORE_DNS: with a recording fake, and against real BIND9 (RFC 2136 + TSIG)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from plans.errors import ConfigurationError
from workers.dns.errors import DnsRefused
from workers.executors import StepParamsError, compensate, run_step
from workers.executors.dnsops import WindowsZone, default_dns_ops
from workflows.inputs import RestoreDns
from workflows.steps import StepKind

from .conftest import MakeContext
from .helpers import spec

K = StepKind
ZONES = {"corp.example": {"kind": "rfc2136", "primary": "127.0.0.1:1"}}
RECORDS = [{"zone": "corp.example", "name": "sql-01", "ttl": 60}]
PRIOR = {"wait_ip": {"addresses": ["10.20.1.11"]}}


@dataclass
class FakeZone:
    """Records per name; remembers switches, verifications and restores."""

    zone: str
    records: dict[str, list[str]]
    log: list[tuple[str, str]] = field(default_factory=list)
    refuse: bool = False

    def switch(
        self, name: str, addresses: list[str], *, ttl: int | None, ptr: bool
    ) -> tuple[dict[str, Any], bool]:
        if self.refuse:
            raise DnsRefused(f"REFUSED for {name}", zone=self.zone)
        old = {"name": name, "values": list(self.records.get(name, []))}
        if sorted(self.records.get(name, [])) == sorted(addresses):
            return old, False
        self.records[name] = list(addresses)
        self.log.append(("switch", name))
        return old, True

    def verify(self, name: str, addresses: list[str]) -> dict[str, Any]:
        self.log.append(("verify", name))
        return {"answers": [{"server": "ns1"}, {"server": "ns2"}]}

    def restore(self, snapshot: Mapping[str, Any]) -> bool:
        name = snapshot["name"]
        if self.records.get(name) == snapshot["values"]:
            return False
        self.records[name] = list(snapshot["values"])
        self.log.append(("restore", name))
        return True


def test_update_dns_switches_verifies_and_keeps_the_old_records(make_ctx: MakeContext) -> None:
    zone = FakeZone("corp.example", {"sql-01": ["10.10.1.11"]})
    ctx = make_ctx(prior=PRIOR, dns=lambda params: zone)
    step = spec(K.UPDATE_DNS, "hv-got-1", records=RECORDS, zones=ZONES)
    out = run_step(ctx, step)
    assert zone.records["sql-01"] == ["10.20.1.11"]
    assert zone.log == [("switch", "sql-01"), ("verify", "sql-01")]
    assert out.result["records"][0]["servers"] == ["ns1", "ns2"]
    assert isinstance(out.undo, RestoreDns)
    [saved] = out.undo.snapshots
    assert saved.snapshot == {"name": "sql-01", "values": ["10.10.1.11"]}
    assert saved.target.zone == "corp.example"

    again = run_step(ctx, step)
    assert again.changed is False and again.undo is None
    assert [entry for entry in zone.log if entry[0] == "switch"] == [("switch", "sql-01")]

    compensate(ctx, out.undo)
    compensate(ctx, out.undo)
    assert zone.records["sql-01"] == ["10.10.1.11"]
    assert [entry for entry in zone.log if entry[0] == "restore"] == [("restore", "sql-01")]


def test_update_dns_without_an_address_says_wait_ip_must_run_first(
    make_ctx: MakeContext,
) -> None:
    ctx = make_ctx(dns=lambda params: FakeZone("corp.example", {}))
    with pytest.raises(StepParamsError, match="wait_ip"):
        run_step(ctx, spec(K.UPDATE_DNS, "hv-got-1", records=RECORDS, zones=ZONES))


def test_update_dns_for_a_zone_without_target_is_a_params_error(make_ctx: MakeContext) -> None:
    ctx = make_ctx(prior=PRIOR, dns=lambda params: FakeZone("corp.example", {}))
    with pytest.raises(StepParamsError, match=r"other\.example"):
        records = [{"zone": "other.example", "name": "x"}]
        run_step(ctx, spec(K.UPDATE_DNS, "hv-got-1", records=records, zones=ZONES))


def test_a_failure_after_a_switch_carries_the_partial_undo(make_ctx: MakeContext) -> None:
    good = FakeZone("corp.example", {"sql-01": ["10.10.1.11"]})
    bad = FakeZone("test.corp.example", {}, refuse=True)
    zones = {**ZONES, "test.corp.example": {"kind": "rfc2136"}}
    ctx = make_ctx(prior=PRIOR, dns=lambda p: good if p.zone == "corp.example" else bad)
    records = [*RECORDS, {"zone": "test.corp.example", "name": "sql-01"}]
    with pytest.raises(DnsRefused) as err:
        run_step(ctx, spec(K.UPDATE_DNS, "hv-got-1", records=records, zones=zones))
    undo = err.value.undo  # type: ignore[attr-defined]
    assert isinstance(undo, RestoreDns)
    assert [s.target.zone for s in undo.snapshots] == ["corp.example"]


def test_default_ops_want_a_file_key_reference_and_a_vmm_for_windows() -> None:
    def no_runner(host: str) -> Any:
        raise AssertionError("no runner is needed")

    with pytest.raises(ConfigurationError, match="file: reference"):
        default_dns_ops({"zone": "corp.example", "tsig_key": "env:KEY"}, no_runner)
    with pytest.raises(ConfigurationError, match="site"):
        default_dns_ops({"zone": "corp.example", "kind": "windows"}, no_runner)
    with pytest.raises(ConfigurationError, match="bind9"):
        default_dns_ops({"zone": "corp.example", "kind": "bind9"}, no_runner)
    asked: list[str] = []

    def runner_for(host: str) -> Any:
        asked.append(host)
        return object()

    windows = default_dns_ops(
        {"zone": "test.corp.example", "kind": "windows", "vmm": "vmm-got"}, runner_for
    )
    assert asked == ["vmm-got"]
    assert isinstance(windows, WindowsZone) and windows.host == "vmm-got"


@pytest.mark.integration
def test_update_and_restore_against_bind(bind_servers: Any, make_ctx: MakeContext) -> None:
    zones = {
        "corp.example": {
            "kind": "rfc2136",
            "primary": bind_servers.primary.hostport,
            "servers": bind_servers.servers,
            "tsig_key": f"file:{bind_servers.key_file}",
            "algorithm": "hmac-sha256",
            "timeout": 2,
            "verify_timeout": 20,
        }
    }
    records = [
        {"zone": "corp.example", "name": "web-01", "ttl": 60},
        {"zone": "corp.example", "name": "www", "ttl": 60},
    ]
    ctx = make_ctx(prior={"wait_ip": {"addresses": ["10.20.3.31"]}})
    step = spec(K.UPDATE_DNS, "hv-got-1", vm="web-01", records=records, zones=zones)
    out = run_step(ctx, step)
    for server in (bind_servers.primary, bind_servers.secondary):
        assert server.addresses("web-01") == {"10.20.3.31"}
        assert server.addresses("www") == {"10.20.3.31"}
    serial = bind_servers.primary.serial()

    again = run_step(ctx, step)
    assert again.changed is False
    assert bind_servers.primary.serial() == serial  # nothing was sent

    assert isinstance(out.undo, RestoreDns)
    restore = spec(K.RESTORE_DNS, "hv-got-1", vm="web-01", snapshots=out.undo.snapshots)
    back = run_step(ctx, restore)
    assert back.changed is True
    www = {"10.10.3.31", "10.10.3.32", "10.10.3.33", "10.10.3.34"}
    for server in (bind_servers.primary, bind_servers.secondary):
        assert server.addresses("web-01") == {"10.10.3.31"}
        assert server.addresses("www") == www
    assert run_step(ctx, restore).changed is False


@pytest.mark.integration
def test_update_with_ptr_and_restore_against_bind(bind_servers: Any, make_ctx: MakeContext) -> None:
    zones = {
        "corp.example": {
            "kind": "rfc2136",
            "primary": bind_servers.primary.hostport,
            "servers": bind_servers.servers,
            "tsig_key": f"file:{bind_servers.key_file}",
            "verify_timeout": 20,
        }
    }
    records = [{"zone": "corp.example", "name": "sql-01", "ttl": 60, "ptr": True}]
    ctx = make_ctx(prior=PRIOR)
    out = run_step(ctx, spec(K.UPDATE_DNS, "hv-got-1", records=records, zones=zones))
    primary = bind_servers.primary

    def ptr(address: str) -> set[str]:
        name = ".".join(reversed(address.split("."))) + ".in-addr.arpa."
        return {rr.to_text() for rrset in primary.query(name, "PTR").answer for rr in rrset}

    assert ptr("10.20.1.11") == {"sql-01.corp.example."}
    assert ptr("10.10.1.11") == set()  # the old address no longer points at the name
    assert isinstance(out.undo, RestoreDns)
    run_step(ctx, spec(K.RESTORE_DNS, "hv-got-1", snapshots=out.undo.snapshots))
    assert ptr("10.10.1.11") == {"sql-01.corp.example."}
    assert ptr("10.20.1.11") == set()
    assert primary.addresses("sql-01") == {"10.10.1.11"}
