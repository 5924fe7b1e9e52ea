"""docker-compose.yml as shipped: valid against the Compose specification, every service with
its restart policy and the healthchecks it needs, secrets only as files that make-secrets
makes, BIND's configuration accepted by BIND, and the healthchecks that can run on this
machine run against real servers.

``compose-spec.json`` is the Compose specification's schema, vendored from
https://github.com/compose-spec/compose-spec (schema/compose-spec.json at commit
170098ba07d9f53c383a41bfd4c5166b0a4529a6, Apache-2.0).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.support.servers import wait_for
from workflows.migrations import upgrade

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = Path(__file__).with_name("compose-spec.json")
SITES = ("stockholm", "gothenburg")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return data


def test_valid_against_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose), key=str)
    assert errors == [], [f"{list(e.absolute_path)}: {e.message}" for e in errors]


def test_the_stack_as_the_issue_names_it(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {f"worker-{site}" for site in SITES} <= set(services)
    assert {"redis", "postgres", "migrate", "triggers", "commands", "api", "flower"} <= set(
        services
    )
    # the operator-command consumer reads its signing key from a secret, never from the file
    commands = services["commands"]
    assert commands["command"] == ["commands", "--key", "file:/run/secrets/commands_key"]
    assert "commands_key" in commands["secrets"]
    assert services["redis"]["command"][:3] == ["redis-server", "--appendonly", "yes"]
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"])
    assert any(v.endswith(":/var/lib/postgresql/data") for v in services["postgres"]["volumes"])
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"].startswith("/run/secrets/")
    assert services["migrate"]["command"] == ["db", "upgrade"]
    for name, service in services.items():
        if name == "migrate":
            assert service["restart"] == "no"
            continue
        assert service["restart"] == "unless-stopped", name
        assert service["healthcheck"]["test"], name
        if service.get("image", "").startswith("ferryman") and name != "lab":
            # every Ferryman service waits for the migration and finds the URL in a secret
            assert service["depends_on"]["migrate"]["condition"] == (
                "service_completed_successfully"
            )
            assert service["environment"]["FERRYMAN_DATABASE_URL_FILE"] == (
                "/run/secrets/database_url"
            )
    for site in SITES:
        worker = services[f"worker-{site}"]
        assert worker["command"] == ["worker", "--site", site]
        assert worker["environment"]["FERRYMAN_SITE"] == site
    flower = services["flower"]
    assert "FERRYMAN_FLOWER_BASIC_AUTH_FILE" in flower["environment"]
    assert all(port.startswith("127.0.0.1:") for port in flower["ports"])
    assert {"lab", "dns"} == {n for n, s in services.items() if s.get("profiles") == ["lab"]}


def test_no_secret_in_the_file_or_the_env_example(compose: dict[str, Any]) -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    env = (ROOT / "deploy" / "config" / "ferryman.env.example").read_text(encoding="utf-8")
    for line in [*text.splitlines(), *env.splitlines()]:
        assert "PASSWORD=" not in line.replace("PASSWORD_FILE", "")
        assert re.search(r"://[^/\s\"']*:[^/\s\"']*@", line) is None, line  # user:pass@
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("./deploy/compose/secrets/")


def test_make_secrets_makes_every_secret_once(compose: dict[str, Any], tmp_path: Path) -> None:
    copy = tmp_path / "compose"
    shutil.copytree(ROOT / "deploy" / "compose", copy, ignore=shutil.ignore_patterns("secrets"))
    subprocess.run(["bash", str(copy / "make-secrets")], check=True, capture_output=True)
    made = {p.name: p.read_text() for p in (copy / "secrets").iterdir()}
    wanted = {Path(s["file"]).name for s in compose["secrets"].values()}
    assert wanted == set(made)
    assert all(made[name] for name in wanted)
    url = made["database_url"]
    assert url == f"postgresql+psycopg://ferryman:{made['postgres_password']}@postgres/ferryman"
    again = subprocess.run(
        ["bash", str(copy / "make-secrets")], check=True, capture_output=True, text=True
    )
    assert "made" not in again.stdout
    assert {p.name: p.read_text() for p in (copy / "secrets").iterdir()} == made


@pytest.mark.skipif(shutil.which("named-checkconf") is None, reason="BIND is not installed")
def test_bind_accepts_the_configuration_and_zone(tmp_path: Path) -> None:
    bind = ROOT / "deploy" / "compose" / "bind"
    key = tmp_path / "corp_example_key"
    key.write_text('key "ferryman-key" {\n\talgorithm hmac-sha256;\n\tsecret "c2VjcmV0";\n};\n')
    conf = (bind / "named.conf").read_text().replace("/run/secrets/corp_example_key", str(key))
    (tmp_path / "named.conf").write_text(conf)
    check = subprocess.run(
        ["named-checkconf", str(tmp_path / "named.conf")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    zone = subprocess.run(
        ["named-checkzone", "corp.example", str(bind / "corp.example.zone")],
        capture_output=True,
        text=True,
    )
    assert zone.returncode == 0, zone.stdout + zone.stderr


def test_the_compose_fabric_validates() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "workflows.cli", "plan", "validate",
         str(ROOT / "deploy" / "compose" / "plans" / "three-tier.yaml")],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def healthcheck(compose: dict[str, Any], service: str) -> list[str]:
    test: list[str] = compose["services"][service]["healthcheck"]["test"]
    assert test[0] == "CMD"
    return test[1:]


def test_redis_and_postgres_healthchecks_run(compose: dict[str, Any]) -> None:
    # the machine's Redis and PostgreSQL listen where the containers' own would
    for service in ("redis", "postgres"):
        command = healthcheck(compose, service)
        if shutil.which(command[0]) is None:
            pytest.fail(f"{command[0]} is not installed")
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, (service, done.stdout, done.stderr)


def test_the_triggers_healthcheck_runs(compose: dict[str, Any], tmp_path: Path) -> None:
    command = healthcheck(compose, "triggers")
    assert command[0] == "ferryman"
    ferryman = [sys.executable, "-m", "workflows.cli", *command[1:]]
    url = f"sqlite:///{tmp_path}/ferryman.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRYMAN_")}
    env.update(FERRYMAN_DATABASE_URL=url, PYTHONPATH=str(ROOT))
    unhealthy = subprocess.run(ferryman, env=env, capture_output=True, text=True, timeout=60)
    assert unhealthy.returncode == 1  # no schema yet
    upgrade(url)
    healthy = subprocess.run(ferryman, env=env, capture_output=True, text=True, timeout=60)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr


def shell_healthcheck(compose: dict[str, Any], service: str) -> str:
    """A CMD-SHELL healthcheck as the container's shell gets it ($$ is Compose's escape)."""
    test: list[str] = compose["services"][service]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    return test[1].replace("$$", "$")


def test_the_worker_healthcheck_runs(
    compose: dict[str, Any], environment: dict[str, str], worker: str, tmp_path: Path
) -> None:
    # the worker fixture runs `ferryman worker --site gothenburg`, as worker-gothenburg does
    command = shell_healthcheck(compose, "worker-gothenburg")
    bin_dir = str(Path(sys.executable).parent)  # where `celery` is installed
    env = {**environment, "FERRYMAN_SITE": "gothenburg", "PATH": f"{bin_dir}:{os.environ['PATH']}"}

    def healthy() -> bool:
        done = subprocess.run(
            ["sh", "-c", command], env=env, cwd=tmp_path, capture_output=True, timeout=60
        )
        return done.returncode == 0

    wait_for(healthy, timeout=90, interval=1, what="the worker healthcheck to pass")
    # the same check for another site's worker finds no such node
    other = {**env, "FERRYMAN_SITE": "stockholm"}
    done = subprocess.run(["sh", "-c", command], env=other, cwd=tmp_path, capture_output=True)
    assert done.returncode != 0


def test_the_lab_healthcheck_runs(compose: dict[str, Any]) -> None:
    command = healthcheck(compose, "lab")
    lab = compose["services"]["lab"]["command"]
    # the compose lab with the topology's own ports (admin API on 15999), on loopback here
    argv = [sys.executable, "-m", "lab.cli", "serve", "--time-scale", "0.001"]
    argv += [arg for arg in lab[2:] if arg not in ("--listen", "0.0.0.0")]
    argv = [a for a in argv if not a.startswith("/run/secrets")]
    argv = [a for a in argv if a != "--password-file"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    before = subprocess.run(command, capture_output=True, timeout=30)
    if before.returncode == 0:
        pytest.fail("something already answers on the lab's admin port 15999")
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(
            lambda: subprocess.run(command, capture_output=True, timeout=30).returncode == 0,
            timeout=60,
            interval=0.5,
            what="the lab healthcheck to pass",
        )
    finally:
        process.terminate()
        process.wait(timeout=30)
