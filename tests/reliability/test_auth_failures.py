"""Authentication failures fail once, clearly, with no retry storm.

A wrong WinRM password (the lab counts the logins it rejects) and a wrong TSIG key (BIND
logs every update it refuses) each fail their first step with a message naming what to fix,
and the step is not retried: authentication errors are permanent.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from lab.server.auth import AuthFailed
from lab.testing import LabHandle, running_lab
from tests.reliability.drill import PASSWORD_VARIABLE, PLAN, drive, example_bundle, topology
from tests.support.bind import TSIG_KEYGEN, BindServers
from workers.embedded import Runtime, embedded
from workers.tasks import default_executor
from workflows.settings import RetryPolicy, Settings
from workflows.statuses import RunStatus
from workflows.store import repository

# Retries on: a permanent error must not use them, a transient one would (5 attempts).
RETRY = RetryPolicy(max_retries=4, base_delay=0.1, max_delay=0.5)


class RejectCounter:
    """Counts the logins the lab refuses (the last 401 of a failed NTLM handshake)."""

    def __init__(self, lab: LabHandle) -> None:
        self.count = 0
        self._lock = threading.Lock()
        authenticator = next(iter(lab.server._hosts.values())).service.auth  # one for all hosts
        accept = authenticator.accept

        def counting(*args: Any, **kwargs: Any) -> Any:
            try:
                return accept(*args, **kwargs)
            except AuthFailed as exc:
                if exc.reply.headers == [("WWW-Authenticate", "Negotiate")]:
                    with self._lock:
                        self.count += 1
                raise

        authenticator.accept = counting  # type: ignore[method-assign]


@contextmanager
def engine(tmp: str, sites: list[str]) -> Iterator[Runtime]:
    settings = Settings(database_url=f"sqlite:///{tmp}/ferryman.db", retry=RETRY)
    executor = default_executor(poll_interval=0.1)
    with embedded(settings, sites, executor=executor) as runtime:
        yield runtime


def events(runtime: Runtime, run_id: str, kind: str) -> list[str]:
    with runtime.db.session() as session:
        return [e.message for e in repository.events_of(session, run_id=run_id) if e.event == kind]


def test_wrong_winrm_password_fails_once(
    lab_password: str, bind: BindServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_lab(topology(), auth="ntlm") as lab, tempfile.TemporaryDirectory() as tmp:
        rejects = RejectCounter(lab)
        bundle = example_bundle({n: e.url for n, e in lab.endpoints.items()}, bind)
        monkeypatch.setenv(PASSWORD_VARIABLE, lab_password + "-wrong")
        with engine(tmp, list(bundle.fabric.sites)) as runtime:
            run = runtime.engine.start(bundle, PLAN, "test", requested_by="reliability")
            final = drive(runtime, run.id, timeout=60)
            retries = events(runtime, run.id, "step_retry")
        audit = lab.lab.audit.entries()
    # a failed test run is compensated automatically (nothing to undo here)
    assert final.status in (RunStatus.FAILED, RunStatus.COMPENSATED)
    assert re.search(r"authenticat|credential|password", final.error, re.IGNORECASE), final.error
    assert "-wrong" not in final.error and lab_password not in final.error
    assert retries == [], retries
    assert audit == [], "a call got through with a wrong password"
    # stage 0 of the test failover has two VMs on two hosts: one refused login each, and as
    # many again when the failed test run is compensated automatically (4 measured); with
    # retries it would be 5 per VM and phase (20)
    assert 1 <= rejects.count <= 6, rejects.count
    print(f"\nwrong WinRM password: {rejects.count} refused logins, 0 retries")


def wrong_key(directory: Path) -> Path:
    """A key file with the right name and algorithm and a different secret."""
    path = directory / "wrong.key"
    text = subprocess.run(
        [TSIG_KEYGEN, "-a", "hmac-sha256", "ferryman-key"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    path.write_text(text)
    return path


def test_wrong_tsig_key_fails_once(lab_password: str, bind: BindServers) -> None:
    with running_lab(topology(), auth="ntlm") as lab, tempfile.TemporaryDirectory() as tmp:
        bundle = example_bundle({n: e.url for n, e in lab.endpoints.items()}, bind)
        snapshot = bundle.snapshot()
        snapshot["fabric"]["dns_zones"]["corp.example"]["tsig_key"] = f"file:{wrong_key(Path(tmp))}"
        from plans import Bundle

        bundle = Bundle.from_snapshot(snapshot)
        refused_before = bind.primary.log().count("request has invalid signature")
        with engine(tmp, list(bundle.fabric.sites)) as runtime:
            run = runtime.engine.start(bundle, PLAN, "planned", requested_by="reliability")
            final = drive(runtime, run.id, timeout=90)
            retries = events(runtime, run.id, "step_retry")
        refused = bind.primary.log().count("request has invalid signature") - refused_before
    assert final.status == RunStatus.FAILED
    assert "update_dns" in final.error
    assert re.search(r"tsig|key|signature|NOTAUTH", final.error, re.IGNORECASE), final.error
    assert [r for r in retries if "update_dns" in r] == []
    # group 1 has two VMs with one record each: one refused update per VM, never five
    assert 1 <= refused <= 2, refused
    print(f"\nwrong TSIG key: {refused} refused updates, 0 retries")
