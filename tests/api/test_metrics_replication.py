"""Replication lag, health and RPO risk per VM at ``/metrics``: the reading ``ferryman protect
status`` does, over real pypsrp against the lab, with lag on the primaries' own (scaled) clock
and one reading per 15 s whatever the scrapes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import settings_for, write_plans
from workers.embedded import Runtime
from workflows.api.app import create_app
from workflows.api.services import Services
from workflows.demo import PASSWORD_VARIABLE, lab_topology

pytestmark = pytest.mark.integration
TIME_SCALE = 0.005  # real seconds per lab second: the lab's clock runs 200 times as fast


@pytest.fixture
def scraped(runtime: Runtime, tmp_path: Path) -> Iterator[tuple[Any, TestClient]]:
    """A lab on a fast clock, the example plans pointed at it, and the app's client."""
    from lab.testing import running_lab
    from workers.hyperv.psrp import shared_cache

    with running_lab(lab_topology(), auth="ntlm", time_scale=TIME_SCALE) as lab:
        os.environ[PASSWORD_VARIABLE] = lab.password
        try:
            urls = {name: endpoint.url for name, endpoint in lab.endpoints.items()}
            plan_file = write_plans(tmp_path / "plans", urls)
            settings = settings_for(
                runtime.engine.settings.database_url, plan_paths=[str(plan_file.parent)]
            )
            with TestClient(create_app(Services(runtime.engine, settings))) as client:
                yield lab, client
        finally:
            shared_cache().close()
            os.environ.pop(PASSWORD_VARIABLE, None)


def samples(text: str, name: str) -> dict[str, tuple[dict[str, str], float]]:
    """The samples of one metric by their ``vm`` label (the first plan's, for a VM in two)."""
    found: dict[str, tuple[dict[str, str], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found.setdefault(sample.labels.get("vm", ""), (sample.labels, sample.value))
    return found


def test_metrics_export_lag_health_and_rpo_risk_per_vm(scraped: tuple[Any, TestClient]) -> None:
    lab, client = scraped
    # sql-01 stops replicating (health forced Critical: the lab misses its cycles), then
    # twenty minutes of lab time pass; the others keep replicating every 300 lab seconds.
    assert lab.admin("POST", "/vms/sql-01/health", {"health": "Critical"})[0] == 200
    assert lab.admin("POST", "/time/advance", {"seconds": 1200})[0] == 200

    text = client.get("/metrics").text
    lag = samples(text, "ferryman_replication_lag_seconds")
    health = samples(text, "ferryman_replication_health")
    risk = samples(text, "ferryman_replication_rpo_at_risk")
    assert samples(text, "ferryman_replication_read_ok")[""][1] == 1

    labels, seconds = lag["sql-01"]
    assert labels == {
        "plan": "three-tier",
        "pairing": "gold",
        "vm": "sql-01",
        "host": "hv-sto-1",
        "replica_host": "hv-got-1",
    }
    # On the host's clock: at least the 1200 s advanced (this machine's clock, far behind
    # the lab's, would say a few seconds).
    assert seconds >= 1200
    assert health["sql-01"] == ({**labels, "state": "Replicating"}, 2.0)
    assert risk["sql-01"][1] == 1
    web_labels, web_lag = lag["web-01"]
    assert web_labels["plan"] == "three-tier" and web_lag < 600
    assert health["web-01"][1] == 0 and risk["web-01"][1] == 0
    # A VM the fabric protects but no plan names, and one that does not replicate yet.
    assert health["mon-01"][0]["plan"] == ""
    assert health["crm-01"][0]["state"] == "Disabled" and health["crm-01"][1] == -1
    assert "crm-01" not in lag

    # A second scrape within 15 s reuses the reading: what changed on a host since is not
    # read (web-01 turned Critical, an hour of lab time passed).
    assert lab.admin("POST", "/vms/web-01/health", {"health": "Critical"})[0] == 200
    assert lab.admin("POST", "/time/advance", {"seconds": 3600})[0] == 200
    again = client.get("/metrics").text
    assert samples(again, "ferryman_replication_lag_seconds")["sql-01"] == (labels, seconds)
    assert samples(again, "ferryman_replication_health")["web-01"][1] == 0
