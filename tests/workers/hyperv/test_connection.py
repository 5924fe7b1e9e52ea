"""Endpoints check their shape and read the password only when a connection is built."""

from __future__ import annotations

import pytest

from plans.credentials import SecretRef
from plans.errors import ConfigurationError
from workers.hyperv.connection import AuthMethod, PsrpEndpoint
from workflows.steps import HostRef

REF = SecretRef.parse("env:TEST_HV_PASSWORD")


def endpoint(
    url: str = "http://127.0.0.1:5985/wsman", auth: AuthMethod = AuthMethod.BASIC, **kw: object
) -> PsrpEndpoint:
    return PsrpEndpoint("hv-got-1", url, auth, "ferryman", REF, **kw)  # type: ignore[arg-type]


def test_basic_over_plain_http_only_on_loopback() -> None:
    endpoint("http://127.0.0.1:5985/wsman")
    endpoint("http://localhost:5985/wsman")
    endpoint("https://hv-got-1.corp.example:5986/wsman")
    with pytest.raises(ConfigurationError, match="clear text"):
        endpoint("http://hv-got-1.corp.example:5985/wsman")
    endpoint("http://hv-got-1.corp.example:5985/wsman", AuthMethod.NTLM)


def test_bad_url_and_timeouts_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="must look like"):
        endpoint("ftp://x/wsman")
    with pytest.raises(ConfigurationError, match="read_timeout"):
        endpoint(operation_timeout=30, read_timeout=30)


def test_password_is_resolved_only_when_connecting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_HV_PASSWORD", raising=False)
    ep = endpoint()  # no password needed to describe the endpoint
    with pytest.raises(ConfigurationError, match="env:TEST_HV_PASSWORD"):
        ep.open_wsman()
    monkeypatch.setenv("TEST_HV_PASSWORD", "s3cret-value")
    wsman = ep.open_wsman()
    assert wsman.transport.password == "s3cret-value"
    assert wsman.transport.endpoint == "http://127.0.0.1:5985/wsman"
    assert "s3cret-value" not in repr(ep) and "s3cret-value" not in str(ep)
    assert "TEST_HV_PASSWORD" in repr(ep)


def test_https_uses_ca_bundle_and_ntlm_seals_plain_http(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_HV_PASSWORD", "pw")
    tls = endpoint("https://hv.corp.example:5986/wsman", AuthMethod.NTLM, ca_bundle="/etc/ca.pem")
    assert tls.open_wsman().transport.cert_validation == "/etc/ca.pem"
    plain = endpoint("http://127.0.0.1:5985/wsman", AuthMethod.NTLM).open_wsman()
    assert plain.transport.wrap_required is True
    basic = endpoint().open_wsman()
    assert basic.transport.wrap_required is False


def test_from_host_ref() -> None:
    ref = HostRef(
        "hv-got-1",
        "gothenburg",
        "http://127.0.0.1:5985/wsman",
        "ntlm",
        "LAB\\ferryman",
        "env:FERRYMAN_LAB_PASSWORD",
        operation_timeout=15,
    )
    ep = PsrpEndpoint.from_ref(ref)
    assert ep.auth is AuthMethod.NTLM
    assert str(ep.password_ref) == "env:FERRYMAN_LAB_PASSWORD"
    assert ep.operation_timeout == 15 and ep.read_timeout > 15


def test_sessions_opened_together_build_their_transports_one_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pypsrp's WSMan() re-registers its XML namespace prefixes in ElementTree's process-wide
    map (a pass over the map, then delete and add). Here that registration is slowed down, as
    a busy machine can, while twelve threads open sessions at once: built under the lock, every
    transport is made, and the map ends as pypsrp left it."""
    import threading
    import time
    import xml.etree.ElementTree as ET

    from pypsrp.wsman import NAMESPACES

    real_register = ET.register_namespace
    inside: list[int] = []
    overlaps: list[int] = []

    def slow_register(prefix: str, uri: str) -> None:
        inside.append(1)
        if len(inside) > 1:
            overlaps.append(len(inside))
        time.sleep(0.001)  # between the pass over the map and its change
        try:
            real_register(prefix, uri)
        finally:
            inside.pop()

    monkeypatch.setattr(ET, "register_namespace", slow_register)
    monkeypatch.setenv("TEST_HV_PASSWORD", "not-used")
    errors: list[BaseException] = []
    built: list[object] = []

    def open_one() -> None:
        try:
            built.append(endpoint().open_wsman())
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert len(built) == 12
    assert overlaps == []  # no two registrations ever ran at the same time
    namespaces = real_register._namespace_map  # type: ignore[attr-defined]
    assert all(namespaces.get(uri) == prefix for prefix, uri in NAMESPACES.items())
