"""Real pypsrp clients for a lab endpoint, configured the way each auth mode needs."""

from __future__ import annotations

from typing import Any

from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from lab.server.service import Endpoint
from lab.testing import pypsrp_options
from workers.hyperv.connection import new_wsman


def wsman_for(
    endpoint: Endpoint,
    *,
    password: str | None = None,
    verify: bool | str = True,
    **kwargs: Any,
) -> WSMan:
    """A ``pypsrp.wsman.WSMan`` for ``endpoint`` (Basic: unencrypted; NTLM: encrypted)."""
    return new_wsman(
        "127.0.0.1", **client_options(endpoint, password=password, verify=verify, **kwargs)
    )


def client_options(
    endpoint: Endpoint,
    *,
    password: str | None = None,
    verify: bool | str = True,
    **kwargs: Any,
) -> dict[str, Any]:
    """Keyword arguments for ``WSMan``/``pypsrp.client.Client`` that reach ``endpoint``."""
    options = pypsrp_options(endpoint)
    options["connection_timeout"] = 5
    if password is not None:
        options["password"] = password
    if endpoint.auth == "https" and verify is not True:
        options["cert_validation"] = verify
    options.update(kwargs)
    return options


def run(pool: RunspacePool, cmdlet: str, **params: Any) -> PowerShell:
    """Invoke one cmdlet with named parameters (``True`` for a switch); return the pipeline."""
    ps = PowerShell(pool)
    ps.add_cmdlet(cmdlet)
    for name, value in params.items():
        if value is True:
            ps.add_parameter(name)
        else:
            ps.add_parameter(name, value)
    ps.invoke()
    return ps


def props(obj: Any) -> dict[str, Any]:
    """An output object's adapted properties with enum values as their names."""
    out: dict[str, Any] = {}
    for key, value in obj.adapted_properties.items():
        out[key] = str(value) if hasattr(value, "to_string") and value.to_string else value
    return out
