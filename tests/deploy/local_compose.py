"""docker-compose.yml's services as local processes: the stand-in for ``docker compose up``
on a machine without a container runtime.

Each service gets a loopback address of its own (127.R.S.2, .3, ... with R and S random), so
it listens on the ports the compose file gives it, as in its container, without meeting the
machine's own servers. What a container would provide is made from the compose file:

- **names**: a service's name in a URL (``redis://redis:6379``, ``@postgres/``, ``"dns:53"``,
  ``http://lab:15985``) and an argument equal to a service's ``hostname:`` become its
  address; inside a container ``0.0.0.0`` / ``any`` (every interface) and ``127.0.0.1`` (its
  own loopback) are the service's address here;
- **files**: ``secrets:`` appear at ``/run/secrets/NAME``, ``volumes:`` at their container
  paths and a private ``/tmp``, as folders of the stand-in's; every container path in a
  command, an environment value or a mounted text file is replaced by the folder that stands
  in for it;
- **environment**: ``env_file:`` then ``environment:``, over the image's own (``PATH`` with
  the project's venv first, where the image has ``ferryman``, ``celery`` and ``python``), and
  ``FERRYMAN_SECRET_ROOTS`` naming the folder that is /run/secrets here (a default secret
  folder in a container);
- **images**: ``ferryman:*`` runs its Dockerfile ENTRYPOINT from the venv with the command;
  ``redis:*`` runs the command as given; ``postgres:*`` does what the image's entrypoint does
  (initdb with ``POSTGRES_USER`` and the password file, scram-sha-256 for TCP, creates
  ``POSTGRES_DB``, then runs the server as user postgres); ``internetsystemsconsortium/bind9``
  runs its ``entrypoint:``, with named's process files and control channel, private in a
  container, kept in the stand-in's folder;
- **order**: ``depends_on`` conditions as Compose applies them (``service_healthy`` waits for
  the healthcheck, ``service_completed_successfully`` for exit status 0);
- **healthchecks**: run with the service's environment; ``CMD-SHELL`` through ``sh -c`` after
  Compose's ``$$`` escape. Tools that reach the container's loopback by default (redis-cli,
  pg_isready) are pointed at the service's address.

Every wait is bounded and :meth:`LocalCompose.down` stops every process it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from plans.files import SECRET_ROOTS_VARIABLE
from tests.support.servers import LOOPBACK, free_port

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# ports the compose file's services listen on in their containers, checked free on each address
PORTS = (53, 5432, 5555, 6379, 8080, *range(15985, 16000))
HEALTH_TIMEOUT = 120.0  # seconds a service gets to become healthy (Compose: retries x interval)
STOP_TIMEOUT = 20.0


class ComposeError(RuntimeError):
    """The stack did not come up as the compose file says it should."""


@dataclass
class Service:
    """One service of the compose file and the process standing in for its container."""

    name: str
    spec: dict[str, Any]
    address: str
    home: Path
    mounts: dict[str, Path] = field(default_factory=dict)  # container path -> local path
    ports: dict[int, int] = field(default_factory=dict)  # container port -> local port
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.home / "service.log"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


class LocalCompose:
    """Starts, checks and stops the compose file's services as local processes."""

    def __init__(self, compose_file: Path, root: Path, *, profiles: tuple[str, ...] = ()) -> None:
        self.file = compose_file
        self.project = compose_file.parent
        self.root = root
        self.data: dict[str, Any] = yaml.safe_load(compose_file.read_text(encoding="utf-8"))
        self.profiles = set(profiles)
        self.services: dict[str, Service] = {}
        self.order: list[str] = []
        self.hostnames: dict[str, str] = {}  # service names and hostname: -> address
        self.declared: dict[str, str] = {}  # hostname: -> address (bare arguments)
        self.spare = ""  # an address of the services' range where nothing listens

    # -- setting up what the containers would see

    def prepare(self) -> None:
        """Addresses, secrets, volumes and environments of the services to run."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)  # postgres and bind users reach their folders through it
        chosen = {
            n: s
            for n, s in self.data["services"].items()
            if not s.get("profiles") or self.profiles & set(s["profiles"])
        }
        base = self._free_base(len(chosen))
        self.spare = f"{base}1"
        for index, name in enumerate(chosen):
            home = self.root / "services" / name
            home.mkdir(parents=True)
            service = Service(name, chosen[name], f"{base}{index + 2}", home)
            if "bind9" in str(service.spec.get("image", "")):
                # named listens only on addresses an interface has: 127.0.0.1, a free port
                service.address = LOOPBACK
                service.ports = {53: free_port()}
            self.services[name] = service
        self.declared = {
            s.spec["hostname"]: s.address for s in self.services.values() if "hostname" in s.spec
        }
        self.hostnames = {**{n: s.address for n, s in self.services.items()}, **self.declared}
        secrets = self._secrets()
        volumes = self.root / "volumes"
        for service in self.services.values():
            for name in service.spec.get("secrets", []):
                service.mounts[f"/run/secrets/{name}"] = secrets / name
            for index, volume in enumerate(service.spec.get("volumes", [])):
                source, target = volume.split(":")[:2]
                if source.startswith((".", "/")):
                    local = service.home / "mounts" / str(index)
                    self._copy(self.project / source, local)
                else:  # a named volume, shared by the services that mount it
                    local = volumes / source
                    local.mkdir(parents=True, exist_ok=True)
                service.mounts[target] = local
            # a container's /tmp is its own
            service.mounts["/tmp"] = service.home / "tmp"
            service.mounts["/tmp"].mkdir()
            # text mounted from the project may name other mounts: translate it again
            for local in service.mounts.values():
                if local.is_relative_to(service.home / "mounts"):
                    self._translate_tree(local, service)
            service.env = self._environment(service)
        self.order = self._start_order()

    def _free_base(self, count: int) -> str:
        rng = random.SystemRandom()
        for _ in range(50):
            base = f"127.{rng.randrange(1, 255)}.{rng.randrange(0, 255)}."
            # .1 stays free: an address where no service answers
            if all(_free(f"{base}{i + 1}", port) for i in range(count + 1) for port in PORTS):
                return base
        raise ComposeError("found no free 127.x.y.0/24 for the services' addresses")

    def _secrets(self) -> Path:
        """deploy/compose/make-secrets run in a copy of deploy/compose; the files as
        /run/secrets shows them, the service names in them translated (the database URL)."""
        made = self.root / "project"
        shutil.copytree(
            self.project / "deploy" / "compose",
            made / "deploy" / "compose",
            ignore=shutil.ignore_patterns("secrets"),
        )
        subprocess.run(
            ["bash", str(made / "deploy" / "compose" / "make-secrets")],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        secrets = self.root / "run-secrets"
        secrets.mkdir()
        os.chmod(secrets, 0o755)
        for name, secret in self.data.get("secrets", {}).items():
            source = made / secret["file"]
            target = secrets / name
            target.write_text(self.hosts(source.read_text()))
            os.chmod(target, 0o644)
        return secrets

    def _copy(self, source: Path, target: Path) -> None:
        if source.is_dir():
            shutil.copytree(source, target, symlinks=False)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)
        for path in [target, *target.rglob("*")] if target.is_dir() else [target]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)

    def _translate_tree(self, local: Path, service: Service) -> None:
        for path in [local, *local.rglob("*")] if local.is_dir() else [local]:
            if path.is_file():
                try:
                    text = path.read_text(encoding="utf-8")
                except UnicodeDecodeError:
                    continue
                path.write_text(self.translate(text, service), encoding="utf-8")

    def hosts(self, text: str) -> str:
        """``text`` with each service name in a URL or host:port replaced by its address."""
        for service in self.services.values():
            for inside, port in service.ports.items():
                text = re.sub(
                    rf"""(?:(?<=//)|(?<=@)|(?<=["'\s\[])){re.escape(service.name)}:{inside}\b""",
                    f"{service.address}:{port}",
                    text,
                )
        for name in sorted(self.hostnames, key=len, reverse=True):
            pattern = rf"""(?:(?<=//)|(?<=@)|(?<=["'\s\[])){re.escape(name)}(?=:\d|/)"""
            text = re.sub(pattern, self.hostnames[name], text)
        return text

    def translate(self, text: str, service: Service) -> str:
        """``text`` as the service's process sees it here: its mounts' container paths
        replaced by their folders, service names by their addresses, every interface by the
        service's own address."""
        if service.mounts:
            # one pass, longest path first, so a folder put in is never translated again
            paths = "|".join(re.escape(t) for t in sorted(service.mounts, key=len, reverse=True))
            text = re.sub(
                rf"(?<![\w./-])({paths})(?![\w.-])",
                lambda found: str(service.mounts[found.group(1)]),
                text,
            )
        text = self.hosts(text)
        return text.replace("0.0.0.0", service.address)

    def _argument(self, arg: str, service: Service, *, after: str = "") -> str:
        """A command's argument; a host name declared by a service is its address when it is
        an option's value (``--advertise lab``), not when it is a command (``lab serve``)."""
        if after.startswith("-") and arg in self.declared:
            return self.declared[arg]
        return self.translate(arg, service)

    def _environment(self, service: Service) -> dict[str, str]:
        env = {
            "PATH": f"{VENV_BIN}:{SYSTEM_PATH}",
            "HOME": str(service.home),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            # the default secret folders, /run/secrets among them, as this process sees them
            SECRET_ROOTS_VARIABLE: str(self.root / "run-secrets"),
        }
        env_files = service.spec.get("env_file", [])
        for env_file in [env_files] if isinstance(env_files, str) else env_files:
            path = self.project / env_file
            if not path.exists():
                # the README's set-up step: cp deploy/config/ferryman.env.example ...
                path = path.with_name(path.name + ".example")
            for line in path.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    key, _, value = line.partition("=")
                    env[key.strip()] = self.translate(value.strip(), service)
        environment = service.spec.get("environment", {})
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) for item in environment)
        for key, value in environment.items():
            env[key] = self.translate(str(value), service)
        return env

    def _start_order(self) -> list[str]:
        order: list[str] = []

        def visit(name: str, path: tuple[str, ...]) -> None:
            if name in order:
                return
            if name in path:
                raise ComposeError(f"depends_on cycle: {' -> '.join([*path, name])}")
            for dependency in self.services[name].spec.get("depends_on", {}):
                visit(dependency, (*path, name))
            order.append(name)

        for name in self.services:
            visit(name, ())
        return order

    # -- running

    def up(self) -> None:
        """Start every service in dependency order, each after what it depends on is
        healthy or completed, as Compose does; then wait for every healthcheck to pass."""
        for name in self.order:
            service = self.services[name]
            for dependency, wanted in service.spec.get("depends_on", {}).items():
                self._wait_condition(self.services[dependency], wanted["condition"])
            self._start(service)
        for service in self.services.values():
            if "healthcheck" in service.spec and self._long_running(service):
                self.wait_healthy(service)

    def _long_running(self, service: Service) -> bool:
        return service.spec.get("restart") != "no"

    def _wait_condition(self, service: Service, condition: str) -> None:
        if condition == "service_healthy":
            self.wait_healthy(service)
        elif condition == "service_completed_successfully":
            assert service.process is not None
            try:
                code = service.process.wait(timeout=HEALTH_TIMEOUT)
            except subprocess.TimeoutExpired:
                raise ComposeError(f"{service.name} did not complete:\n{service.log()}") from None
            if code != 0:
                raise ComposeError(f"{service.name} exited {code}:\n{service.log()}")
        elif condition != "service_started":
            raise ComposeError(f"unknown depends_on condition {condition!r}")

    def wait_healthy(self, service: Service) -> None:
        deadline = time.monotonic() + HEALTH_TIMEOUT
        last: subprocess.CompletedProcess[str] | None = None
        while time.monotonic() < deadline:
            if service.process is not None and service.process.poll() is not None:
                raise ComposeError(
                    f"{service.name} exited {service.process.returncode} before it was "
                    f"healthy:\n{service.log()[-4000:]}"
                )
            last = self.healthcheck(service)
            if last.returncode == 0:
                return
            time.sleep(0.5)
        detail = "" if last is None else f"{last.stdout}{last.stderr}"
        raise ComposeError(
            f"{service.name}'s healthcheck did not pass in {HEALTH_TIMEOUT:.0f} s: {detail}\n"
            f"{service.log()[-4000:]}"
        )

    def healthcheck(self, service: Service) -> subprocess.CompletedProcess[str]:
        """The service's healthcheck, run once as Docker runs it in the container."""
        test = service.spec["healthcheck"]["test"]
        timeout = _seconds(service.spec["healthcheck"].get("timeout", "30s"))
        env = dict(service.env)
        if test[0] == "CMD":
            argv = [a.replace("127.0.0.1", service.address) for a in test[1:]]
            argv = [self.translate(a, service) for a in argv]
            if argv[0] == "redis-cli" and "-h" not in argv:
                argv[1:1] = ["-h", service.address]
            if argv[0] == "dig" and 53 in service.ports:
                argv[1:1] = ["-p", str(service.ports[53])]
            if argv[0] == "pg_isready":
                env["PGHOST"] = service.address
        elif test[0] == "CMD-SHELL":
            command = test[1].replace("$$", "$").replace("127.0.0.1", service.address)
            argv = ["sh", "-c", self.translate(command, service)]
        else:
            raise ComposeError(f"{service.name}: healthcheck test {test[0]!r} is not run here")
        try:
            return subprocess.run(
                argv, env=env, cwd=service.home, capture_output=True, text=True,
                timeout=timeout + 5,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(argv, 124, "", f"timed out after {timeout} s")

    def _start(self, service: Service) -> None:
        image = str(service.spec.get("image", ""))
        if image.startswith("ferryman"):
            command = list(service.spec.get("command", []))
            argv = [
                self._argument(arg, service, after=command[i - 1] if i else "")
                for i, arg in enumerate(command)
            ]
            self._spawn(service, [*self._entrypoint(), *argv])
        elif image.startswith("redis"):
            data = service.mounts.get("/data", service.home)
            command = list(service.spec["command"])
            argv = [
                self._argument(arg, service, after=command[i - 1] if i else "")
                for i, arg in enumerate(command)
            ]
            self._spawn(service, [*argv, "--bind", service.address], cwd=data)
        elif image.startswith("postgres"):
            self._start_postgres(service)
        elif "bind9" in image:
            self._start_bind(service)
        else:
            raise ComposeError(f"{service.name}: no local stand-in for image {image!r}")

    def _entrypoint(self) -> list[str]:
        dockerfile = (self.project / "deploy" / "Dockerfile").read_text(encoding="utf-8")
        found = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", dockerfile, re.MULTILINE)
        if found is None:
            raise ComposeError("deploy/Dockerfile has no ENTRYPOINT in exec form")
        entrypoint: list[str] = json.loads(found.group(1))
        return [str(VENV_BIN / entrypoint[0]), *entrypoint[1:]]

    def _spawn(
        self,
        service: Service,
        argv: list[str],
        *,
        cwd: Path | None = None,
        user: str | None = None,
    ) -> None:
        with service.log_path.open("ab") as log:
            service.process = subprocess.Popen(
                argv,
                env=service.env,
                cwd=cwd or service.home,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, stopped as one
                user=user,
                group=user,
            )

    def _start_postgres(self, service: Service) -> None:
        """What the postgres image's entrypoint does on an empty volume, then the server."""
        from tests.support.servers import postgres_bin

        env = service.env
        user = "postgres" if os.geteuid() == 0 else None
        data = service.mounts["/var/lib/postgresql/data"]
        sockets = service.home / "sockets"
        sockets.mkdir()
        password = service.home / "pwfile"
        shutil.copy(env["POSTGRES_PASSWORD_FILE"], password)
        for path in (data, sockets, password, service.home):
            if user is not None:
                shutil.chown(path, user, user)
        os.chmod(data, 0o700)

        def as_postgres(*argv: str) -> None:
            done = subprocess.run(
                list(argv), env=service.env, cwd=service.home, capture_output=True, text=True,
                timeout=120, user=user, group=user,
            )  # fmt: skip
            if done.returncode != 0:
                raise ComposeError(f"{service.name}: {argv[0]} failed: {done.stdout}{done.stderr}")

        as_postgres(
            postgres_bin("initdb"), "-D", str(data), f"--username={env['POSTGRES_USER']}",
            f"--pwfile={password}", "--auth-local=trust", "--auth-host=scram-sha-256",
            "--no-sync",
        )  # fmt: skip
        with (data / "pg_hba.conf").open("a") as hba:
            hba.write("host all all all scram-sha-256\n")  # as the image appends
        # first a server on its socket only, as the image's entrypoint does, to make the database
        local = f"-c listen_addresses='' -k {sockets}"
        as_postgres(
            postgres_bin("pg_ctl"), "-D", str(data), "-o", local, "-l",
            str(service.home / "init.log"), "-w", "start",
        )  # fmt: skip
        try:
            as_postgres(
                postgres_bin("createdb"), "-h", str(sockets), "-U", env["POSTGRES_USER"],
                env["POSTGRES_DB"],
            )  # fmt: skip
        finally:
            as_postgres(postgres_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        self._spawn(
            service,
            [postgres_bin("postgres"), "-D", str(data), "-c", f"listen_addresses={service.address}",
             "-k", str(sockets)],
            user=user,
        )  # fmt: skip

    def _start_bind(self, service: Service) -> None:
        """The service's entrypoint; named.conf as mounted, with named's process files and
        control channel (private to a container) in the stand-in's folder and ``any`` (every
        interface of the container) as the service's address."""
        files = service.home / "named"
        files.mkdir()
        if os.geteuid() == 0:
            shutil.chown(files, "bind", "bind")
            shutil.chown(service.mounts["/var/lib/bind"], "bind", "bind")
        conf = service.mounts["/etc/bind/named.conf"]
        port = service.ports.get(53, 53)
        text = conf.read_text(encoding="utf-8").replace(
            "listen-on { any; }", f"listen-on port {port} {{ {service.address}; }}"
        )
        text = text.replace(
            "options {",
            f'options {{\n  pid-file "{files}/named.pid";\n'
            f'  session-keyfile "{files}/session.key";',
            1,
        )
        conf.write_text(text + "controls { };\n")
        entrypoint = [self.translate(a, service) for a in service.spec["entrypoint"]]
        if os.geteuid() != 0:  # named -u needs root; run as this user instead
            entrypoint = [a.replace(" -u bind", "") for a in entrypoint]
        self._spawn(service, entrypoint)

    def running(self) -> dict[str, bool]:
        return {
            n: s.process is not None and s.process.poll() is None for n, s in self.services.items()
        }

    def down(self) -> None:
        """Stop every process started, in reverse order (SIGTERM, then SIGKILL)."""
        for name in reversed(self.order):
            process = self.services[name].process
            if process is None or process.poll() is not None:
                continue
            _signal_group(process, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait(timeout=STOP_TIMEOUT)


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def _free(address: str, port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((address, port))
            except OSError:
                return False
    return True


def _seconds(value: str | int | float) -> float:
    if isinstance(value, int | float):
        return float(value)
    total = 0.0
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", value):
        total += float(amount) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total
