"""Transport behaviour: authentication, hosts going down, injected faults, concurrency, TLS."""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
import traceback
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
import requests
from pypsrp.exceptions import AuthenticationError, WinRMTransportError
from pypsrp.powershell import RunspacePool

from lab.server.auth import Account
from lab.server.service import LabServer
from tests.lab.clients import props, run, wsman_for
from tests.lab.fake_backend import FakeBackend


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes; return whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def admin(server: LabServer, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(server.admin_url + path, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_wrong_password_is_401_and_pypsrp_authentication_error(fake_server: LabServer) -> None:
    endpoint = fake_server.endpoints["hv-sto-1"]
    with pytest.raises(AuthenticationError):
        RunspacePool(wsman_for(endpoint, password="not-the-password")).open()


def test_host_down_refuses_connections_and_up_serves_again(
    fake_server: LabServer, fake_backend: FakeBackend
) -> None:
    endpoint = fake_server.endpoints["hv-got-1"]
    status, _ = admin(fake_server, "POST", "/hosts/hv-got-1/down")
    assert status == 200
    with pytest.raises(requests.exceptions.ConnectionError) as caught:
        RunspacePool(wsman_for(endpoint)).open()
    assert "refused" in str(caught.value).lower()
    # The other host is unaffected.
    with RunspacePool(wsman_for(fake_server.endpoints["hv-sto-1"])) as pool:
        assert run(pool, "Get-VM").output
    fake_backend.down.discard("hv-got-1")  # straight in the domain: the watcher notices
    assert wait_until(lambda: fake_server._hosts["hv-got-1"].listening)
    with RunspacePool(wsman_for(endpoint)) as pool:
        assert props(run(pool, "Get-VM", Name="sql-01").output[0])["ComputerName"] == "hv-got-1"


def test_host_going_down_breaks_an_open_pool(
    fake_server: LabServer, fake_backend: FakeBackend
) -> None:
    endpoint = fake_server.endpoints["hv-sto-1"]
    pool = RunspacePool(wsman_for(endpoint))
    pool.open()
    admin(fake_server, "POST", "/hosts/hv-sto-1/down")
    with pytest.raises(requests.exceptions.ConnectionError):
        run(pool, "Get-VM")


def test_injected_http500_and_reset(fake_server: LabServer, fake_backend: FakeBackend) -> None:
    endpoint = fake_server.endpoints["hv-sto-1"]
    fake_backend.faults["hv-sto-1"] = ["http500", "reset"]
    with RunspacePool(wsman_for(endpoint)) as pool:
        with pytest.raises(WinRMTransportError) as caught:
            run(pool, "Get-VM")
        assert caught.value.code == 500
    # No ``with``: after a reset the NTLM session of this client is gone, as with WinRM.
    pool = RunspacePool(wsman_for(endpoint))
    pool.open()
    with pytest.raises(requests.exceptions.ConnectionError):
        run(pool, "Get-VM")
    # Faults are used up: the next call works.
    with RunspacePool(wsman_for(endpoint)) as pool:
        assert run(pool, "Get-VM").output


def test_fifty_concurrent_pipelines_on_one_host(
    fake_server: LabServer, fake_backend: FakeBackend
) -> None:
    endpoint = fake_server.endpoints["hv-sto-1"]
    results: list[Any] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def client() -> None:
        try:
            with RunspacePool(wsman_for(endpoint)) as pool:
                ps = run(pool, "Wait-Release")
            with lock:
                results.append(ps.output)
        except BaseException as exc:  # reported below
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(50)]
    for t in threads:
        t.start()
    # All fifty are inside the domain at the same time before any is let go.
    all_running = wait_until(lambda: fake_backend.waiting == 50, timeout=60)
    fake_backend.release.set()
    for t in threads:
        t.join(timeout=60)
    # first: a client that failed is why fewer ran at once; say where it failed
    assert errors == [], "".join(traceback.format_exception(errors[0]))
    assert all_running, f"only {fake_backend.most_waiting} pipelines ran at once"
    assert results == [["released", "hv-sto-1"]] * 50


def test_ntlm_logins_never_remove_an_environment_variable(
    fake_backend: FakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two NTLM labs in one process, logins at once on both, while another thread reads the
    whole environment in a loop (as requests does on every call). The lab points
    NTLM_USER_FILE at its own file for each login and never removes it: a removal during that
    thread's pass raised KeyError there, and a client of the lab in the same process failed."""
    removed: list[str] = []
    real_unsetenv = os.unsetenv

    def unsetenv(key: str | bytes) -> None:
        removed.append(os.fsdecode(key))
        real_unsetenv(key)

    monkeypatch.setattr(os, "unsetenv", unsetenv)
    reader_errors: list[BaseException] = []
    stop = threading.Event()

    def read_environment() -> None:
        while not stop.is_set():
            try:
                for _ in os.environ.items():
                    pass
            except KeyError as exc:
                reader_errors.append(exc)

    reader = threading.Thread(target=read_environment)
    reader.start()
    outputs: list[Any] = []
    client_errors: list[BaseException] = []
    lock = threading.Lock()
    try:
        servers = [
            LabServer(fake_backend, Account("ferryman", secrets.token_urlsafe(12)), auth="ntlm")
            for _ in range(2)
        ]
        for server in servers:
            server.start()

        def client(server: LabServer) -> None:
            try:
                with RunspacePool(wsman_for(server.endpoints["hv-sto-1"])) as pool:
                    output = run(pool, "Get-VM", Name="file-01").output
                with lock:
                    outputs.append(output)
            except BaseException as exc:  # reported below
                with lock:
                    client_errors.append(exc)

        threads = [threading.Thread(target=client, args=(servers[i % 2],)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        for server in servers:
            server.stop()
    finally:
        stop.set()
        reader.join(timeout=10)
    assert client_errors == []
    assert len(outputs) == 20 and all(outputs)
    assert "NTLM_USER_FILE" not in removed
    assert reader_errors == []


def test_admin_api_passes_calls_to_the_domain(fake_server: LabServer) -> None:
    status, hosts = admin(fake_server, "GET", "/hosts")
    assert status == 200
    assert {h["host"] for h in hosts} == {"hv-sto-1", "hv-got-1"}
    status, answer = admin(fake_server, "GET", "/nothing")
    assert status == 404
    assert "no such admin call" in answer["error"]


@pytest.fixture
def https_server(fake_backend: FakeBackend) -> Any:
    account = Account("ferryman", secrets.token_urlsafe(12))
    with LabServer(fake_backend, account, auth="https") as server:
        yield server


def test_https_with_validation_off(https_server: LabServer) -> None:
    endpoint = https_server.endpoints["hv-sto-1"]
    assert endpoint.url.startswith("https://127.0.0.1:")
    with RunspacePool(wsman_for(endpoint, verify=False)) as pool:
        assert props(run(pool, "Get-VM", Name="file-01").output[0])["Name"] == "file-01"


def test_https_with_the_generated_ca_bundle(https_server: LabServer) -> None:
    endpoint = https_server.endpoints["hv-got-1"]
    assert endpoint.ca_bundle is not None
    with RunspacePool(wsman_for(endpoint)) as pool:
        assert props(run(pool, "Get-VM").output[0])["ComputerName"] == "hv-got-1"
    # Without the lab CA the system trust store rejects the certificate.
    with pytest.raises(requests.exceptions.SSLError):
        RunspacePool(wsman_for(endpoint, verify=True, cert_validation=True)).open()


def test_https_wrong_password(https_server: LabServer) -> None:
    endpoint = https_server.endpoints["hv-sto-1"]
    with pytest.raises(AuthenticationError):
        RunspacePool(wsman_for(endpoint, password="wrong")).open()


def test_stop_removes_the_ntlm_user_file_and_closes_ports(fake_backend: FakeBackend) -> None:
    import socket

    account = Account("ferryman", secrets.token_urlsafe(12))
    server = LabServer(fake_backend, account, auth="ntlm").start()
    path = server._user_file.path if server._user_file else ""
    assert os.stat(path).st_mode & 0o777 == 0o600
    port = server.endpoints["hv-sto-1"].port
    server.stop()
    assert not os.path.exists(path)
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 2):
        pass


def test_https_with_ntlm_instead_of_basic(https_server: LabServer) -> None:
    endpoint = https_server.endpoints["hv-sto-1"]
    with RunspacePool(wsman_for(endpoint, auth="ntlm", username="LAB\\ferryman")) as pool:
        assert props(run(pool, "Get-VM", Name="web-02").output[0])["Name"] == "web-02"
