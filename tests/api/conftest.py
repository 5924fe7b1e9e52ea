"""API fixtures: the lab over real pypsrp, plan files pointed at it, a worker, tokens per role.

The engine and its worker live for the module (starting a worker is the slow part); each test
gets a fresh lab, plan files naming its endpoints and an app over the same store.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from workers.embedded import Runtime, build_runtime, worker
from workers.tasks import default_executor
from workflows.api.app import create_app
from workflows.api.services import Services
from workflows.demo import PASSWORD_VARIABLE, lab_topology
from workflows.progress import wait_for
from workflows.settings import RetryPolicy, Settings
from workflows.statuses import RunStatus
from workflows.store import Run
from workflows.tokens import Role, create_token

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "plans" / "examples"
SITES = ["stockholm", "gothenburg"]


def write_plans(folder: Path, urls: dict[str, str]) -> Path:
    """The example fabric and three-tier plan in ``folder``, endpoints pointed at ``urls``."""
    folder.mkdir(parents=True, exist_ok=True)
    fabric = yaml.safe_load((EXAMPLES / "fabric.yaml").read_text(encoding="utf-8"))
    for site in fabric["fabric"]["sites"].values():
        site["vmm"]["url"] = urls[site["vmm"]["name"]]
        for name, endpoint in site["hosts"].items():
            endpoint["url"] = urls[name]
    (folder / "fabric.yaml").write_text(yaml.safe_dump(fabric), encoding="utf-8")
    (folder / "three-tier.yaml").write_text(
        (EXAMPLES / "three-tier.yaml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    return folder / "three-tier.yaml"


def settings_for(database_url: str, **overrides: Any) -> Settings:
    """Settings with quick retries for tests."""
    return Settings(
        database_url=database_url,
        retry=RetryPolicy(max_retries=4, base_delay=0.1, max_delay=1.0),
        advance_poll=0.1,
        **overrides,
    )


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """The engine with an in-process worker on the memory broker, real executors."""
    folder = tmp_path_factory.mktemp("api")
    built = build_runtime(
        settings_for(f"sqlite:///{folder}/ferryman.db"), default_executor(poll_interval=0.1)
    )
    with worker(built, SITES, concurrency=12, gate_interval=0.5):
        yield built
    built.db.dispose()


@dataclass
class Stack:
    """One test's lab, plan files, app client and a token per role."""

    lab: Any
    runtime: Runtime
    services: Services
    client: TestClient
    tokens: dict[Role, str]
    plan_file: Path

    def as_(self, role: Role) -> dict[str, str]:
        """The Authorization header of ``role``'s token."""
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def settle(self, run_id: str, *statuses: RunStatus) -> Run:
        """Wait (bounded) until the run reaches one of ``statuses``."""
        return wait_for(self.runtime.db, run_id, statuses, timeout=90, interval=0.05)

    def test_vms(self) -> list[str]:
        """Test VMs the lab holds now."""
        status, state = self.lab.admin("GET", "/state")
        assert status == 200
        return sorted(vm["name"] for vm in state["vms"] if vm.get("test_of"))


def make_tokens(runtime: Runtime, suffix: str) -> dict[Role, str]:
    """One token per role, named after the role."""
    made: dict[Role, str] = {}
    with runtime.db.session() as session:
        for role in Role:
            _row, token = create_token(
                session, name=f"{role.value}-{suffix}", role=role, created_by="tests"
            )
            made[role] = token
    return made


@pytest.fixture
def stack(runtime: Runtime, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """A fresh lab (NTLM like the example fabric) and the app over the module's engine."""
    from lab.testing import running_lab
    from workers.hyperv.psrp import shared_cache

    with running_lab(lab_topology(), auth="ntlm") as lab:
        os.environ[PASSWORD_VARIABLE] = lab.password
        try:
            urls = {name: endpoint.url for name, endpoint in lab.endpoints.items()}
            plan_file = write_plans(tmp_path / "plans", urls)
            settings = settings_for(
                runtime.engine.settings.database_url, plan_paths=[str(plan_file.parent)]
            )
            services = Services(runtime.engine, settings, app=runtime.app)
            with TestClient(create_app(services)) as client:
                yield Stack(
                    lab,
                    runtime,
                    services,
                    client,
                    make_tokens(runtime, request.node.name[:40].replace("[", "-").rstrip("]")),
                    plan_file,
                )
        finally:
            shared_cache().close()
            os.environ.pop(PASSWORD_VARIABLE, None)


@dataclass
class Receiver:
    """A loopback HTTP server that records each request; the first ``fail_first`` get 503."""

    fail_first: int = 1
    requests: list[dict[str, Any]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def received(self, event: str) -> list[dict[str, Any]]:
        """Requests answered 200 for ``event``."""
        return [r for r in self.requests if r["event"] == event and r["answer"] == 200]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    record = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            answer = 503 if len(record.requests) < record.fail_first else 200
            record.requests.append(
                {
                    "event": self.headers["X-Ferryman-Event"],
                    "timestamp": self.headers["X-Ferryman-Timestamp"],
                    "signature": self.headers["X-Ferryman-Signature"],
                    "body": body,
                    "answer": answer,
                }
            )
            self.send_response(answer)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            return

    record.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=record.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield record
    finally:
        record.server.shutdown()
        record.server.server_close()
