"""``ferryman lab serve`` as a deployment runs it: listen address, port base, NTLM by default
(as the example fabric logs in), a fixed password from a file, and a busy port named."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pypsrp.exceptions import AuthenticationError
from pypsrp.powershell import RunspacePool
from pypsrp.wsman import WSMan

from lab.server.service import Endpoint
from lab.testing import pypsrp_options
from tests.lab.clients import run
from tests.support.lab_process import serving
from workers.hyperv.connection import new_wsman

ROOT = Path(__file__).resolve().parents[2]
HOSTS = 6  # the example topology's hosts; the admin API takes the next port


def free_base(count: int = HOSTS + 1) -> int:
    """A port with ``count`` free ports from it on 127.0.0.1 (checked by binding them)."""
    for _ in range(200):
        base = random.randrange(20000, 60000)
        sockets = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free range of ports")


def connect(endpoint: Endpoint, address: str = "127.0.0.1", **override: Any) -> WSMan:
    options = pypsrp_options(endpoint)
    options["connection_timeout"] = 5
    options.update(override)
    return new_wsman(address, **options)


def test_port_base_fixed_password_and_ntlm_by_default(tmp_path: Path) -> None:
    secret = tmp_path / "lab-password"
    secret.write_text("Corr3ct-Horse-Battery\n", encoding="utf-8")
    base = free_base()
    with serving("--port-base", str(base), "--password-file", str(secret)) as (endpoints, admin):
        ports = sorted(endpoint.port for endpoint in endpoints.values())
        assert ports == list(range(base, base + HOSTS))
        assert admin == f"http://127.0.0.1:{base + HOSTS}"
        assert {endpoint.auth for endpoint in endpoints.values()} == {"ntlm"}
        assert {endpoint.password for endpoint in endpoints.values()} == {"Corr3ct-Horse-Battery"}
        host = endpoints["hv-sto-1"]
        with RunspacePool(connect(host)) as pool:
            listed = run(pool, "Get-VM")
            assert not listed.had_errors and listed.output
        with pytest.raises(AuthenticationError), RunspacePool(connect(host, password="wrong")):
            pass


def test_listen_on_every_address(tmp_path: Path) -> None:
    # 127.0.0.2 is loopback too: only a lab listening beyond 127.0.0.1 answers there
    with serving("--ephemeral-ports", "--listen", "0.0.0.0", "--advertise", "lab") as (
        endpoints,
        admin,
    ):
        vmm = endpoints["vmm-sto"]
        assert vmm.url.startswith("http://lab:") and admin.startswith("http://lab:")
        with socket.create_connection(("127.0.0.2", vmm.port), timeout=5):
            pass
    with serving("--ephemeral-ports") as (endpoints, _admin):
        vmm = endpoints["vmm-sto"]
        assert vmm.url.startswith("http://127.0.0.1:")
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.2", vmm.port), timeout=5).close()


def test_a_busy_port_is_named() -> None:
    base = free_base()
    busy = socket.socket()
    busy.bind(("127.0.0.1", base + 2))
    busy.listen()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "lab.cli", "serve", "--port-base", str(base)],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        busy.close()
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"port {base + 2} on 127.0.0.1 (host hv-sto-1) is already in use" in lines[0]


def test_an_empty_password_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "lab.cli", "serve", "--password-file", str(empty)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "holds no password" in done.stderr
