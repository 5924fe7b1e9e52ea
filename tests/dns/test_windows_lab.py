"""Windows DNS switching end to end: the real pypsrp client against the lab's DNS cmdlets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.testing import LabHandle, running_lab
from plans.credentials import SecretRef
from workers.dns import Snapshot, WindowsDns
from workers.hyperv.connection import AuthMethod, PsrpEndpoint
from workers.hyperv.pool import RunspacePoolCache
from workers.hyperv.psrp import PsrpRunner

pytestmark = pytest.mark.integration

TOPOLOGY = Path(__file__).resolve().parents[2] / "deploy" / "lab" / "topology.yaml"
PASSWORD_ENV = "DNS_TEST_LAB_PASSWORD"


def _topology() -> dict[str, Any]:
    """The shared example topology on ephemeral ports."""
    topology: dict[str, Any] = yaml.safe_load(TOPOLOGY.read_text())
    topology.pop("admin_port", None)
    for host in topology["hosts"]:
        host.pop("port", None)
    return topology


@pytest.fixture
def lab(monkeypatch: pytest.MonkeyPatch) -> Iterator[LabHandle]:
    with running_lab(_topology(), auth="basic") as handle:
        monkeypatch.setenv(PASSWORD_ENV, handle.password)
        yield handle


@pytest.fixture
def vmm_sto(lab: LabHandle) -> Iterator[WindowsDns]:
    """corp.example on vmm-sto's DNS Server, reached over WinRM + PSRP."""
    endpoint = lab.endpoints["vmm-sto"]
    cache = RunspacePoolCache()
    runner = PsrpRunner(
        PsrpEndpoint(
            host="vmm-sto",
            url=endpoint.url,
            auth=AuthMethod.BASIC,
            username=endpoint.username,
            password_ref=SecretRef.parse(f"env:{PASSWORD_ENV}"),
        ),
        cache=cache,
    )
    yield WindowsDns(runner, "corp.example", timeout=30)
    cache.close()


def _mutations(lab: LabHandle) -> list[str]:
    status, body = lab.admin("GET", "/audit")
    assert status == 200
    return [
        str(e.get("cmdlet"))
        for e in body["entries"]
        if "DnsServerResourceRecord" in str(e.get("cmdlet"))
        and not str(e.get("cmdlet")).startswith("Get-")
    ]


def test_switch_and_restore_through_the_lab(vmm_sto: WindowsDns, lab: LabHandle) -> None:
    before = vmm_sto.capture(["sql-01", "www"])
    sql = before.get("sql-01", "A")
    assert sql is not None and (sql.values, sql.ttl) == (("10.10.1.11",), 300)

    result = vmm_sto.switch("sql-01", ["10.20.1.11"], ttl=60)
    assert result.changed
    now = vmm_sto.capture(["sql-01"]).get("sql-01", "A")
    assert now is not None and (now.values, now.ttl) == (("10.20.1.11",), 60)
    assert _mutations(lab) == ["Add-DnsServerResourceRecordA", "Remove-DnsServerResourceRecord"]

    vmm_sto.switch("www", ["10.20.3.31", "10.20.3.32"])
    assert vmm_sto.capture(["www"]).addresses("www") == ["10.20.3.31", "10.20.3.32"]

    vmm_sto.restore(Snapshot.from_dict(before.to_dict()))
    after = vmm_sto.capture(["sql-01", "www"])
    assert [r.to_dict() for r in after.records] == [r.to_dict() for r in before.records]


def test_a_repeated_switch_sends_no_change(vmm_sto: WindowsDns, lab: LabHandle) -> None:
    vmm_sto.switch("app-01", ["10.20.2.21"])
    count = len(_mutations(lab))
    again = vmm_sto.switch("app-01", ["10.20.2.21"])
    assert not again.changed
    assert len(_mutations(lab)) == count
