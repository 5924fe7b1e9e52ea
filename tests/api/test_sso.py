"""Single sign-on by a trusted reverse proxy's header: believed only from the proxy's
addresses, users mapped to roles, refused cross-site like the console's cookie, off unless
configured, and a misconfiguration named by its variable."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from plans.errors import ConfigurationError
from tests.api.conftest import settings_for
from workers.embedded import Runtime
from workflows.api.app import create_app
from workflows.api.services import Services
from workflows.api.sso import TrustedHeader

CONFIG = {
    "FERRYMAN_API_TRUSTED_HEADER": "X-Remote-User",
    "FERRYMAN_API_TRUSTED_PROXIES": "127.0.0.1, 10.9.0.0/24",
    "FERRYMAN_API_TRUSTED_ROLES": "alice=administrator, carol=approver, *=viewer",
}
HOOK = {
    "name": "sso-hook",
    "url": "http://127.0.0.1:9/hook",
    "secret": "env:SSO_KEY",
    "events": ["run_failed"],
}


def _services(runtime: Runtime, trusted: TrustedHeader | None) -> Services:
    services = Services(runtime.engine, settings_for(runtime.engine.settings.database_url))
    services.trusted = trusted
    return services


@pytest.fixture
def proxied(runtime: Runtime) -> Iterator[TestClient]:
    """The app as the proxy on 127.0.0.1 reaches it."""
    app = create_app(_services(runtime, TrustedHeader.from_env(CONFIG)))
    with TestClient(app, client=("127.0.0.1", 40000)) as client:
        yield client


def test_the_proxy_signs_users_on_with_their_roles(proxied: TestClient) -> None:
    alice = {"X-Remote-User": "alice"}
    assert proxied.get("/api/v1/runs", headers=alice).status_code == 200
    bob = {"X-Remote-User": "bob"}  # no pair of his own: "*" makes him a viewer
    assert proxied.get("/api/v1/runs", headers=bob).status_code == 200
    refused = proxied.get("/api/v1/webhooks", headers=bob)
    assert refused.status_code == 403 and "bob has role viewer" in refused.json()["detail"]

    # a state-changing request must come from the console's own origin
    origin = {"Origin": "http://testserver"}
    forged = proxied.post("/api/v1/webhooks", json=HOOK, headers=alice)
    assert forged.status_code == 403 and "cross-site" in forged.json()["detail"]
    made = proxied.post("/api/v1/webhooks", json=HOOK, headers={**alice, **origin})
    assert made.status_code == 201, made.text
    assert made.json()["created_by"] == "alice (administrator via sign-on)"

    # the console signs on by the header too
    page = proxied.get("/", headers={"X-Remote-User": "carol"})
    assert page.status_code == 200 and 'id="principal">carol<' in page.text

    denials = proxied.get("/api/v1/audit", params={"event": "access_denied"}, headers=alice).json()
    assert any(d["actor"] == "bob (viewer via sign-on)" for d in denials)
    assert proxied.get("/api/v1/runs", headers={"X-Remote-User": "bad name"}).status_code == 403


def test_the_header_is_believed_only_from_the_proxy(runtime: Runtime) -> None:
    app = create_app(_services(runtime, TrustedHeader.from_env(CONFIG)))
    with TestClient(app, client=("192.0.2.7", 40000)) as elsewhere:
        refused = elsewhere.get("/api/v1/runs", headers={"X-Remote-User": "alice"})
        assert refused.status_code == 401
        assert "believed only from the proxy" in refused.json()["detail"]


def test_without_a_default_role_an_unmapped_user_is_refused(runtime: Runtime) -> None:
    config = {**CONFIG, "FERRYMAN_API_TRUSTED_ROLES": "alice=administrator"}
    app = create_app(_services(runtime, TrustedHeader.from_env(config)))
    with TestClient(app, client=("10.9.0.20", 40000)) as client:
        assert client.get("/api/v1/runs", headers={"X-Remote-User": "alice"}).status_code == 200
        refused = client.get("/api/v1/runs", headers={"X-Remote-User": "mallory"})
        assert refused.status_code == 403 and "mallory has no role" in refused.json()["detail"]


def test_off_unless_configured(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CONFIG:
        monkeypatch.delenv(name, raising=False)
    assert TrustedHeader.from_env({}) is None
    app = create_app(_services(runtime, None))
    with TestClient(app, client=("127.0.0.1", 40000)) as client:
        assert client.get("/api/v1/runs", headers={"X-Remote-User": "alice"}).status_code == 401


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"FERRYMAN_API_TRUSTED_PROXIES": ""}, "FERRYMAN_API_TRUSTED_PROXIES is not"),
        ({"FERRYMAN_API_TRUSTED_PROXIES": "proxy.local"}, "'proxy.local' is not an address"),
        ({"FERRYMAN_API_TRUSTED_ROLES": ""}, "FERRYMAN_API_TRUSTED_ROLES is not"),
        ({"FERRYMAN_API_TRUSTED_ROLES": "alice=root"}, "role 'root' is not one of viewer"),
        ({"FERRYMAN_API_TRUSTED_ROLES": "alice"}, "'alice' is not USER=ROLE"),
        ({"FERRYMAN_API_TRUSTED_HEADER": "Authorization"}, "choose a header of its own"),
        ({"FERRYMAN_API_TRUSTED_HEADER": "X Remote"}, "give a header name"),
    ],
)
def test_a_misconfiguration_names_its_variable(change: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        TrustedHeader.from_env({**CONFIG, **change})
    assert says in str(refused.value)
