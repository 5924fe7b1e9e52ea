"""Protection fixtures: the engine with an in-process worker (real executors over pypsrp) and,
per test, a fresh lab (NTLM, like the example fabric) with the example fabric pointed at it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from plans import Bundle, load_bundle
from workers.embedded import Runtime, embedded
from workers.executors.protection import HostProtectionReader
from workers.tasks import default_executor
from workflows.compiler import CompiledRun, _all_hosts
from workflows.demo import PASSWORD_VARIABLE, lab_topology, point_at_lab
from workflows.progress import wait_for
from workflows.protection import VmReport, assess, desired_protection, observe
from workflows.settings import Settings
from workflows.statuses import TERMINAL_RUN
from workflows.store import Run

ROOT = Path(__file__).resolve().parents[2]
FABRIC = ROOT / "plans" / "examples" / "fabric.yaml"
# Real seconds per lab second: crm-01's 60 GB initial replication (51.5 lab s) takes 0.26 s.
TIME_SCALE = 0.005

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """The engine and a worker thread for both sites, on the in-memory broker."""
    settings = Settings(database_url=f"sqlite:///{tmp_path_factory.mktemp('protect')}/f.db")
    executor = default_executor(poll_interval=0.05)
    with embedded(settings, ["stockholm", "gothenburg"], executor=executor) as rt:
        yield rt


@dataclass
class Sites:
    """One test's lab and the example fabric pointed at it."""

    lab: Any
    bundle: Bundle
    runtime: Runtime

    def reports(self, bundle: Bundle | None = None) -> list[VmReport]:
        """What ``ferryman protect status`` reads and compares."""
        fabric = (bundle or self.bundle).fabric
        hosts = _all_hosts(fabric, list(fabric.sites))
        ctx = default_executor(poll_interval=0.05).context("t", "protect", "failover", hosts, {})
        reader = HostProtectionReader(ctx)
        observed = observe(fabric, reader)
        present = [
            d.vm
            for d in desired_protection(fabric).values()
            if d.vm not in observed and reader.has_vm(d.primary_host, d.vm)
        ]
        return assess(fabric, observed, datetime.now(UTC), present=present)

    def by_vm(self, bundle: Bundle | None = None) -> dict[str, VmReport]:
        return {r.vm: r for r in self.reports(bundle)}

    def run(self, compiled: CompiledRun, bundle: Bundle | None = None) -> Run:
        """Start a protection run and wait until it settles."""
        engine = self.runtime.engine
        run = engine.start_compiled(bundle or self.bundle, compiled, requested_by="test")
        return wait_for(self.runtime.db, run.id, TERMINAL_RUN, timeout=120, interval=0.05)

    def state(self) -> dict[str, dict[str, Any]]:
        """GET /state as {"name@host": record}."""
        status, body = self.lab.admin("GET", "/state")
        assert status == 200
        return {f"{vm['name']}@{vm['host']}": vm for vm in body["vms"]}

    def audit(self, cmdlet: str) -> list[dict[str, Any]]:
        """Successful audit entries of one cmdlet."""
        status, body = self.lab.admin("GET", f"/audit?cmdlet={cmdlet}")
        assert status == 200
        return [e for e in body["entries"] if e["outcome"] == "ok"]

    def variant(self, edit: Any) -> Bundle:
        """The bundle with its snapshot changed by ``edit(snapshot)``."""
        snapshot = self.bundle.snapshot()
        edit(snapshot)
        return Bundle.from_snapshot(snapshot)


@pytest.fixture
def sites(runtime: Runtime) -> Iterator[Sites]:
    """A fresh lab, its clock at TIME_SCALE, and the example fabric pointed at it."""
    with open_sites(runtime, TIME_SCALE) as opened:
        yield opened


@pytest.fixture
def frozen_sites(runtime: Runtime) -> Iterator[Sites]:
    """Like ``sites``, on a frozen lab clock: time moves only through POST /time/advance."""
    with open_sites(runtime, 0) as opened:
        yield opened


@contextmanager
def open_sites(runtime: Runtime, time_scale: float) -> Iterator[Sites]:
    """A fresh lab at ``time_scale`` and the example fabric pointed at it."""
    from lab.testing import running_lab
    from workers.hyperv.psrp import shared_cache

    with running_lab(lab_topology(), auth="ntlm", time_scale=time_scale) as lab:
        previous = os.environ.get(PASSWORD_VARIABLE)
        os.environ[PASSWORD_VARIABLE] = lab.password
        try:
            urls = {name: endpoint.url for name, endpoint in lab.endpoints.items()}
            yield Sites(lab, point_at_lab(load_bundle([FABRIC]), urls), runtime)
        finally:
            shared_cache().close()
            if previous is None:
                os.environ.pop(PASSWORD_VARIABLE, None)
            else:
                os.environ[PASSWORD_VARIABLE] = previous
