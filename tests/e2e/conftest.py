"""End-to-end fixtures: a private Redis, the lab over real pypsrp, BIND9, and a site worker.

Redis is started on a free loopback port (``--save '' --appendonly no``) for the session; the
worker runs in this process on the Redis broker and result backend with the real executors.
Each test gets a fresh lab and BIND pair and a bundle whose endpoints and DNS zone point at
them; runs carry their endpoints, so one worker serves every test.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Imported now, not by its pytest plugin's end-of-session hook: that late import parses
# source while garbage collection may run result finalisers (see workers/compat.py).
import hypothesis  # noqa: F401
import pytest

from plans import Bundle, load_bundle
from tests.support.bind import BindServers
from tests.support.servers import bind_pair, redis_server
from workers.embedded import Runtime, build_runtime, worker
from workers.tasks import default_executor
from workflows.demo import PASSWORD_VARIABLE, lab_topology, point_at_lab
from workflows.migrations import upgrade
from workflows.progress import wait_for
from workflows.settings import RetryPolicy, Settings
from workflows.statuses import TERMINAL_RUN, RunStatus
from workflows.store import Run

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "plans" / "examples" / "three-tier.yaml"
SETTLED = [*TERMINAL_RUN, RunStatus.WAITING]

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A throwaway redis-server on a free loopback port."""
    with redis_server() as server:
        yield server.url(0)


@pytest.fixture(scope="session")
def e2e_runtime(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """The engine and one worker (sites + engine queues) on Redis, real executors."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path_factory.mktemp('e2e')}/ferryman.db",
        broker_url=redis_url,
        result_backend=redis_url,
        retry=RetryPolicy(max_retries=4, base_delay=0.1, max_delay=1.0),
        advance_poll=0.1,
        visibility_timeout=600,
    )
    upgrade(settings.database_url)  # as a deployment does before its workers start
    runtime = build_runtime(settings, default_executor(poll_interval=0.1))
    # results Celery still tracks at interpreter exit try to reach Redis once, not for minutes
    options = dict(runtime.app.conf.result_backend_transport_options or {})
    options["retry_policy"] = {"max_retries": 1, "interval_start": 0, "interval_step": 0.1}
    runtime.app.conf.result_backend_transport_options = options
    with worker(runtime, ["stockholm", "gothenburg"], concurrency=12, gate_interval=0.5):
        yield runtime
    runtime.db.dispose()
    gc.collect()  # result finalisers talk to Redis: run them while it is still there


@dataclass
class World:
    """One test's lab, DNS servers and the example bundle pointed at both."""

    lab: Any
    dns: BindServers
    bundle: Bundle
    runtime: Runtime

    def state(self) -> dict[str, dict[str, Any]]:
        """GET /state as {(name, site): record}."""
        status, body = self.lab.admin("GET", "/state")
        assert status == 200
        return {f"{vm['name']}@{vm['site']}": vm for vm in body["vms"]}

    def audit(self, **query: str) -> list[dict[str, Any]]:
        """GET /audit entries that succeeded (outcome ok), optionally filtered."""
        path = "/audit" + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")
        status, body = self.lab.admin("GET", path)
        assert status == 200
        return [e for e in body["entries"] if e["outcome"] == "ok"]

    def settle(self, run_id: str, statuses: list[RunStatus] | None = None) -> Run:
        return wait_for(self.runtime.db, run_id, statuses or SETTLED, timeout=90, interval=0.05)


def _with_dns(bundle: Bundle, dns: BindServers) -> Bundle:
    snapshot = bundle.snapshot()
    zone = snapshot["fabric"]["dns_zones"]["corp.example"]
    zone.update(
        primary=dns.primary.hostport,
        servers=dns.servers,
        tsig_key=f"file:{dns.key_file}",
        verify_timeout=10,
    )
    return Bundle.from_snapshot(snapshot)


@pytest.fixture
def world(e2e_runtime: Runtime) -> Iterator[World]:
    """A fresh lab (NTLM, like the example fabric) and BIND pair for one test."""
    from sqlmodel import delete

    from lab.testing import running_lab
    from workers.hyperv.psrp import shared_cache
    from workflows.store.tables import VmLock

    # a fresh lab: VMs the last test's runs hold (a test awaiting cleanup) are not this lab's
    with e2e_runtime.db.session() as session:
        session.exec(delete(VmLock))
    with running_lab(lab_topology(), auth="ntlm") as lab, bind_pair() as dns:
        previous = os.environ.get(PASSWORD_VARIABLE)
        os.environ[PASSWORD_VARIABLE] = lab.password
        try:
            urls = {name: endpoint.url for name, endpoint in lab.endpoints.items()}
            bundle = _with_dns(point_at_lab(load_bundle([EXAMPLE]), urls), dns)
            yield World(lab, dns, bundle, e2e_runtime)
        finally:
            shared_cache().close()  # sessions to this lab end with it
            if previous is None:
                os.environ.pop(PASSWORD_VARIABLE, None)
            else:
                os.environ[PASSWORD_VARIABLE] = previous
