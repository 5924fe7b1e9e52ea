"""Property-based requests from /openapi.json (schemathesis): no server error on any read."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings

from workflows.api.app import create_app
from workflows.api.services import Services
from workflows.runtime import build_runtime
from workflows.settings import Settings
from workflows.tokens import Role, create_token

ROOT = Path(__file__).resolve().parents[2]
_state: dict[str, Any] = {}


def _app() -> Any:
    folder = Path(tempfile.mkdtemp(prefix="ferryman-schema-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    config = Settings(
        database_url=f"sqlite:///{folder}/ferryman.db",
        plan_paths=[str(ROOT / "plans" / "examples" / "three-tier.yaml")],
    )
    runtime = build_runtime(config, client=True)
    with runtime.db.session() as session:
        _row, token = create_token(session, name="schema", role=Role.VIEWER, created_by="tests")
    _state["token"] = token
    return create_app(Services(runtime.engine, config, app=runtime.app))


schema = schemathesis.openapi.from_asgi("/openapi.json", _app()).include(method="GET").exclude(
    path_regex=r"/check$|/follow$"
)


@schema.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
def test_reads_never_fail_with_a_server_error(case: Any) -> None:
    headers = {"Authorization": f"Bearer {_state['token']}"}
    response = case.call(headers=headers)
    assert response.status_code < 500, (case.path, response.status_code, response.text)
    if case.path.startswith("/api/v1") and response.status_code == 200:
        # what a token may read, no request without one may
        assert case.call().status_code == 401
