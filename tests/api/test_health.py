"""``/readyz`` says which dependency is down; ``/healthz`` only that the process answers."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from tests.support.servers import free_port
from workflows.api.app import create_app
from workflows.api.services import Services
from workflows.migrations import upgrade
from workflows.runtime import build_runtime
from workflows.settings import Settings


def test_readyz_is_503_naming_the_broker_that_refuses(tmp_path: Path) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/ferryman.db", broker_url=closed, result_backend=closed
    )
    upgrade(settings.database_url)  # as a deployment does before its services start
    runtime = build_runtime(settings, client=True)
    try:
        client = TestClient(create_app(Services(runtime.engine, settings, app=runtime.app)))
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 503
        checks = ready.json()["checks"]
        assert checks["database"] == "ok"
        assert checks["broker"].startswith("unavailable: ")
        assert "Connection refused" in checks["broker"] or "111" in checks["broker"]
    finally:
        runtime.db.dispose()
