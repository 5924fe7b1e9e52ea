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
