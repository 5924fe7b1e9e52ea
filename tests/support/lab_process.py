"""``python -m lab.cli serve --json`` in a child process, for tests of the lab as a command.

The lab prints one JSON object per endpoint, then one with its admin API's URL; the helper
reads them, yields the endpoints by host and the admin URL, and on exit stops the lab with
SIGTERM (which ``lab serve`` answers by shutting down and exiting 0); a lab that has not exited
within ``stop_timeout`` is killed and the test fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lab.server.service import Endpoint

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def serving(
    *args: str,
    cwd: Path | None = None,
    check_exit: bool = False,
    stop_timeout: float = 30.0,
) -> Iterator[tuple[dict[str, Endpoint], str]]:
    """Run ``lab serve --json --time-scale 0.001 ARGS`` (the example topology unless ARGS name
    one) with no FERRYMAN_* variable of the test's environment; yield (endpoints, admin URL).

    ``check_exit``: after the stop signal, the lab must exit with status 0.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRYMAN_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab.cli", "serve", "--json", "--time-scale", "0.001", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        endpoints: dict[str, Endpoint] = {}
        admin = ""
        for line in proc.stdout:
            data: dict[str, Any] = json.loads(line)
            if "admin" in data:
                admin = data["admin"]
                break
            endpoints[data["host"]] = Endpoint(**data)
        assert admin, proc.stderr.read() if proc.stderr else "no output"
        yield endpoints, admin
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=stop_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"lab serve did not stop within {stop_timeout:g} s") from None
        if check_exit:
            assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
