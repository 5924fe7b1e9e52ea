"""``docker compose --profile lab up`` as local processes (tests/deploy/local_compose.py): the
services' own commands with their own environment, secrets and mounts, in the compose file's
order; every healthcheck the file declares passes; a test failover triggered on the queue, as
a monitoring system would, runs through the workers, its gate is approved and its cleanup
started by operator commands signed with the ``commands_key`` secret on ``ferryman.commands``
(the ``commands`` service carries them out), followed over the API with a token made as an
operator would (``docker compose exec api ferryman tokens create``); a planned failover
started over the API, its gate approved over the API, moves the records on the compose BIND;
and Flower answers only with its login.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kombu import Connection

from tests.deploy.local_compose import ROOT, LocalCompose, Service
from workflows.commands import COMMANDS_QUEUE, SIGNATURE_HEADER, sign
from workflows.commands import queues as command_queues
from workflows.triggers import queues

COMPOSE = ROOT / "docker-compose.yml"
RUN_TIMEOUT = 240.0  # seconds for the test failover and its cleanup, bounded
NEEDED = ("redis-server", "redis-cli", "pg_isready", "named", "dig")

pytestmark = pytest.mark.skipif(
    any(shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None for tool in NEEDED),
    reason=f"the stand-in needs {', '.join(NEEDED)} (deploy/test installs them)",
)


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalCompose]:
    root = Path(tempfile.mkdtemp(prefix="ferryman-compose-"))
    compose = LocalCompose(COMPOSE, root, profiles=("lab",))
    try:
        compose.prepare()
        compose.up()
        yield compose
    finally:
        compose.down()
        shutil.rmtree(root, ignore_errors=True)


def test_every_service_runs_and_every_healthcheck_passes(stack: LocalCompose) -> None:
    services = stack.data["services"]
    assert set(stack.services) == set(services)  # the lab profile's services too
    running = stack.running()
    for name, service in stack.services.items():
        if service.spec.get("restart") == "no":  # the one-shot migration: done, exit 0
            assert service.process is not None and service.process.returncode == 0, name
            continue
        assert running[name], f"{name} stopped:\n{service.log()[-3000:]}"
        check = stack.healthcheck(service)
        assert check.returncode == 0, (name, check.stdout, check.stderr)
    checked = {n for n, s in stack.services.items() if "healthcheck" in s.spec}
    assert {"api", "flower", "dns", "lab", "triggers", "commands", "redis", "postgres"} <= checked


def test_a_healthcheck_fails_when_its_service_does_not_answer(stack: LocalCompose) -> None:
    # the checks run against each service's own address: another address fails them
    for name in ("api", "flower", "dns", "redis"):
        service = stack.services[name]
        elsewhere = Service(
            name, service.spec, stack.spare, service.home, env=service.env, ports=service.ports
        )
        assert stack.healthcheck(elsewhere).returncode != 0, name


def test_a_test_failover_and_its_cleanup_through_the_stack(stack: LocalCompose) -> None:
    api = stack.services["api"]
    token = _token(stack)
    base = f"http://{api.address}:8080/api/v1"
    key = f"compose-{uuid.uuid4().hex[:8]}"
    # the trigger, as a monitoring system sends it (the README's kombu producer)
    runs, _dead = queues()
    broker = stack.services["triggers"].env["FERRYMAN_BROKER_URL"]
    with Connection(broker) as conn, conn.Producer() as producer:
        producer.publish(
            {"plan": "three-tier", "type": "test", "requested_by": "compose-test",
             "idempotency_key": key},
            exchange=runs.exchange, routing_key=runs.routing_key, declare=[runs],
            serializer="json",
        )  # fmt: skip
    command_key = (stack.root / "run-secrets" / "commands_key").read_bytes().strip()
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as client:
        run = _wait_for_run(client, key)

        def approve(run_id: str, gate: str) -> None:
            _command(broker, command_key, {
                "command": "approve", "run": run_id, "gate": gate, "comment": "checked",
                "principal": "alice", "role": "approver",
                "idempotency_key": f"{key}-approve-{gate}",
            })  # fmt: skip

        final = _drive(client, run, approve=approve)
        assert final["run"]["status"] == "succeeded", final["run"]["error"]
        assert final["run"]["operation"] == "test"
        assert {s["status"] for s in final["steps"]} == {"succeeded"}
        decided = {a["decided_by"] for a in final["approvals"]}
        assert decided == {"alice (approver via signed command)"}, decided
        _command(broker, command_key, {
            "command": "cleanup", "run": run, "notes": "compose stand-in",
            "principal": "bob", "role": "operator", "idempotency_key": f"{key}-cleanup",
        })  # fmt: skip
        cleanup = _wait_for_follow_up(client, run, "cleanup")
        done = _drive(client, cleanup)
        assert done["run"]["status"] == "succeeded", done["run"]["error"]
        assert done["run"]["operation"] == "cleanup"
    # the lab's VMs as they were: no test VM is left behind
    lab = stack.services["lab"]
    state = httpx.get(f"http://{lab.address}:15999/state", timeout=10).json()
    assert "test" not in str(_vm_names(state)).lower()


def test_a_planned_failover_moves_the_records_on_the_compose_dns(stack: LocalCompose) -> None:
    # after the test failover: a planned one started over the API, its DNS updates signed with
    # the corp_example_key secret and sent to the dns service the fabric names ("dns:53")
    api, dns = stack.services["api"], stack.services["dns"]
    assert _lookup(dns, "sql-01") == ["10.10.1.11"]  # as deploy/compose/bind's zone has it
    with httpx.Client(
        base_url=f"http://{api.address}:8080/api/v1",
        headers={"Authorization": f"Bearer {_token(stack, 'compose-planned')}"},
    ) as client:
        started = client.post(
            "/runs", json={"plan": "three-tier", "type": "planned", "idempotency_key": "planned-1"}
        )
        assert started.status_code == 201, started.text
        final = _drive(client, started.json()["id"])
    assert final["run"]["status"] == "succeeded", final["run"]["error"]
    moved = _lookup(dns, "sql-01")
    assert len(moved) == 1 and moved[0].startswith("10.20."), moved  # corp-got's subnet


def _lookup(dns: Service, name: str) -> list[str]:
    port = dns.ports.get(53, 53)
    done = subprocess.run(
        ["dig", "+short", "-p", str(port), f"@{dns.address}", f"{name}.corp.example", "A"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return done.stdout.split()


def test_flower_answers_only_with_its_login(stack: LocalCompose) -> None:
    flower = stack.services["flower"]
    login = Path(flower.env["FERRYMAN_FLOWER_BASIC_AUTH_FILE"]).read_text().strip()
    user, _, password = login.partition(":")
    url = f"http://{flower.address}:5555/api/workers"
    assert httpx.get(url, timeout=10).status_code == 401
    assert httpx.get(url, auth=(user, "wrong"), timeout=10).status_code == 401

    def workers() -> set[str]:
        answer = httpx.get(url, auth=(user, password), params={"refresh": "1"}, timeout=30)
        assert answer.status_code == 200, answer.text
        return {name.split("@")[0] for name in answer.json()}

    deadline = time.monotonic() + 60
    seen = workers()
    while {"ferryman-stockholm", "ferryman-gothenburg"} - seen and time.monotonic() < deadline:
        time.sleep(1)
        seen = workers()
    assert {"ferryman-stockholm", "ferryman-gothenburg"} <= seen


def _token(stack: LocalCompose, name: str = "compose-test") -> str:
    """``docker compose exec api ferryman tokens create ...``: the api's environment."""
    api = stack.services["api"]
    done = subprocess.run(
        ["ferryman", "tokens", "create", "--name", name, "--role", "administrator"],
        env=api.env, cwd=api.home, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip()


def _wait_for_run(client: httpx.Client, key: str) -> str:
    """The run the trigger with idempotency key ``key`` started."""
    return _wait_for_listed(
        client, "test", lambda run: run["idempotency_key"] == key,
        f"no run for trigger {key} in 60 s (is the trigger consumer up?)",
    )  # fmt: skip


def _wait_for_listed(
    client: httpx.Client, operation: str, matches: Callable[[dict[str, Any]], bool], what: str
) -> str:
    """The id of the plan's first listed run of ``operation`` that ``matches``, within 60 s."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        listed = client.get("/runs", params={"plan": "three-tier", "operation": operation})
        assert listed.status_code == 200, listed.text
        for run in listed.json():
            if matches(client.get(f"/runs/{run['id']}").json()["run"]):
                return str(run["id"])
        time.sleep(0.5)
    raise AssertionError(what)


def _command(broker: str, key: bytes, body: dict[str, Any]) -> None:
    """An operator command as a chat bot or ticket system sends it: JSON signed with the key."""
    raw = json.dumps(body).encode("utf-8")
    with Connection(broker) as conn, conn.Producer() as producer:
        producer.publish(
            raw, exchange=COMMANDS_QUEUE, routing_key=COMMANDS_QUEUE,
            content_type="application/json", content_encoding="utf-8",
            headers={SIGNATURE_HEADER: sign(key, raw)}, declare=[command_queues()[0]],
        )  # fmt: skip


def _wait_for_follow_up(client: httpx.Client, run_id: str, operation: str) -> str:
    """The ``operation`` run started from ``run_id`` (by a command)."""
    return _wait_for_listed(
        client, operation, lambda run: run["parent"] == run_id,
        f"no {operation} of {run_id} in 60 s (is the commands consumer up?)",
    )  # fmt: skip


def _drive(
    client: httpx.Client, run_id: str, approve: Callable[[str, str], None] | None = None
) -> dict[str, Any]:
    """Follow the run to its end, approving each gate it waits at (over the API unless
    ``approve`` is given)."""
    sent: set[str] = set()
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        report: dict[str, Any] = client.get(f"/runs/{run_id}").json()
        status = report["run"]["status"]
        if status in ("succeeded", "failed", "cancelled"):
            return report
        if status == "waiting":
            for gate in report["approvals"]:
                if gate["status"] == "pending" and approve is not None:
                    if gate["name"] not in sent:  # once: the command is carried out once
                        sent.add(gate["name"])
                        approve(run_id, gate["name"])
                elif gate["status"] == "pending":
                    answer = client.post(
                        f"/runs/{run_id}/gates/{gate['name']}/approve",
                        json={"comment": "checked"},
                    )
                    assert answer.status_code == 200, answer.text
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} did not finish in {RUN_TIMEOUT:.0f} s")


def _vm_names(state: Any) -> list[str]:
    names: list[str] = []
    if isinstance(state, dict):
        for key, value in state.items():
            if key == "name" and isinstance(value, str):
                names.append(value)
            names.extend(_vm_names(value))
    elif isinstance(state, list):
        for item in state:
            names.extend(_vm_names(item))
    return names
