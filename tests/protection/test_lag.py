"""Replication lag measured on the host's own clock (``Get-Date -Format o`` read with the
relationships), not on the caller's: right against a host in another zone, with a skewed
clock, or the lab's scaled clock, which runs 200 times as fast as this machine's here."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from plans import load_bundle
from tests.protection.conftest import FABRIC, Sites
from workflows.protection import Observed, ReplicationSettings, VmReport, assess
from workflows.waiting import wait_until

SETTINGS = ReplicationSettings(300, 4, 2, True, "Kerberos", 8083)


@pytest.mark.integration
def test_lag_is_measured_on_the_hosts_scaled_clock(sites: Sites) -> None:
    # Replication of sql-01 stops (its health forced Critical, the lab misses its cycles);
    # web-01 keeps replicating every 300 lab seconds.
    assert sites.lab.admin("POST", "/vms/sql-01/health", {"health": "Critical"})[0] == 200

    def lagging() -> dict[str, VmReport] | None:
        found = sites.by_vm()
        lag = found["sql-01"].lag_seconds
        return found if lag is not None and lag >= 900 else None

    reports = wait_until(lagging, timeout=120, interval=0.2)
    assert reports is not None, "sql-01's lag never reached three copy intervals"
    sql, web = reports["sql-01"], reports["web-01"]
    assert sql.observed is not None and web.observed is not None
    host_now, last = sql.observed.host_now, sql.observed.last_replication
    assert host_now is not None and last is not None
    # The lab's clock is well ahead of this machine's: measured with the wall clock, sql-01's
    # lag would be the few real seconds since it stopped, within its RPO.
    wall = datetime.now(UTC)
    assert host_now - wall > timedelta(seconds=600)
    assert (wall - last).total_seconds() < 2 * 300
    assert sql.lag_seconds == pytest.approx((host_now - last).total_seconds())
    assert sql.rpo_at_risk and sql.to_json()["host_time"] == host_now.isoformat()
    # A VM that replicates lags less than two copy intervals on the same clock, and is fine.
    assert web.lag_seconds is not None and web.lag_seconds < 600 and not web.rpo_at_risk


def _observed(last: datetime, host_now: datetime | None) -> Observed:
    return Observed(
        vm="sql-01",
        host="hv-sto-1",
        replica_host="hv-got-1",
        state="Replicating",
        mode="Primary",
        health="Normal",
        settings=SETTINGS,
        last_replication=last,
        host_now=host_now,
    )


def test_lag_uses_the_hosts_clock_whatever_its_zone_or_skew() -> None:
    fabric = load_bundle([FABRIC]).fabric
    here = datetime(2026, 12, 6, 22, 0, tzinfo=UTC)
    # A host in UTC+5 whose clock is an hour behind ours, reporting its time in its zone.
    zone = timezone(timedelta(hours=5))
    last = (here - timedelta(hours=1, seconds=700)).astimezone(zone)
    host_now = (here - timedelta(hours=1)).astimezone(zone)
    sql = _report(assess(fabric, {"sql-01": _observed(last, host_now)}, here))
    assert sql.lag_seconds == pytest.approx(700.0) and sql.rpo_at_risk
    # Without the host's clock, the caller's is all there is.
    sql = _report(assess(fabric, {"sql-01": _observed(last, None)}, here))
    assert sql.lag_seconds == pytest.approx(3600.0 + 700.0)


def _report(reports: list[VmReport]) -> VmReport:
    (found,) = [r for r in reports if r.vm == "sql-01"]
    return found
