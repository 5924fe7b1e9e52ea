"""Every failure pypsrp/requests can raise maps to a transient or permanent Ferryman error."""

from __future__ import annotations

import pytest
import requests
from pypsrp import exceptions as ps_exc

from plans.credentials import SecretRef
from plans.errors import TransientError
from workers.errors import AuthenticationError, RemotePermanentError, RemoteTransientError
from workers.hyperv.connection import AuthMethod, PsrpEndpoint
from workers.hyperv.faults import classify

EP = PsrpEndpoint(
    "hv-got-1",
    "http://127.0.0.1:5985/wsman",
    AuthMethod.NTLM,
    "LAB\\ferryman",
    SecretRef.parse("env:FERRYMAN_LAB_PASSWORD"),
)


def refused() -> requests.exceptions.ConnectionError:
    try:
        raise ConnectionRefusedError(111, "Connection refused")
    except ConnectionRefusedError as inner:
        try:
            raise requests.exceptions.ConnectionError("HTTPConnectionPool: Max retries") from inner
        except requests.exceptions.ConnectionError as outer:
            return outer


@pytest.mark.parametrize(
    "exc",
    [
        refused(),
        requests.exceptions.ConnectionError("Connection aborted. RemoteDisconnected"),
        requests.exceptions.ReadTimeout("read timed out"),
        requests.exceptions.ConnectTimeout("connect timed out"),
        ps_exc.WinRMTransportError("http", 500, "Internal Server Error"),
        ps_exc.WinRMTransportError("http", 503, ""),
        ps_exc.WSManFaultError(
            2150858793,
            None,
            "The WS-Management service cannot complete the operation within the time specified",
            None,
            None,
            None,
        ),
        ps_exc.WSManFaultError(2150858843, None, "shell not found", None, None, None),
    ],
)
def test_transient(exc: Exception) -> None:
    err = classify(exc, EP, "Get-VM")
    assert isinstance(err, RemoteTransientError) and isinstance(err, TransientError)
    assert "hv-got-1" in str(err) and "Get-VM" in str(err)


def test_refused_says_so() -> None:
    assert "Connection refused" in str(classify(refused(), EP, "Get-VM"))


@pytest.mark.parametrize(
    "exc",
    [
        ps_exc.AuthenticationError("Failed to authenticate the user LAB\\ferryman with ntlm"),
        ps_exc.WinRMTransportError("http", 401, ""),
        ps_exc.WSManFaultError(5, None, "Access is denied.", None, None, None),
    ],
)
def test_authentication_names_the_reference_not_a_value(exc: Exception) -> None:
    err = classify(exc, EP, "opening a PowerShell session")
    assert isinstance(err, AuthenticationError)
    assert not isinstance(err, TransientError)
    assert "env:FERRYMAN_LAB_PASSWORD" in str(err) and "hv-got-1" in str(err)


def test_client_errors_and_bad_data_are_permanent() -> None:
    assert isinstance(
        classify(ps_exc.WinRMTransportError("http", 404, ""), EP, "Get-VM"), RemotePermanentError
    )
    assert isinstance(
        classify(ps_exc.SerializationError("bad"), EP, "Get-VM"), RemotePermanentError
    )
    tls = classify(requests.exceptions.SSLError("certificate verify failed"), EP, "Get-VM")
    assert isinstance(tls, RemotePermanentError) and "ca_bundle" in str(tls)


def test_ferryman_errors_pass_through() -> None:
    original = RemoteTransientError("already classified")
    assert classify(original, EP, "Get-VM") is original
