"""A real BIND9 primary + secondary on loopback, for tests that need authoritative DNS.

Each :func:`bind_pair` starts two fresh ``named`` processes in a temporary directory: a
primary that accepts RFC 2136 updates signed with ``ferryman-key`` (made by ``tsig-keygen``)
and a secondary fed by zone transfer (AXFR, then IXFR after NOTIFY). A second key,
``readonly-key``, is known to both servers but granted nothing, so an update signed with it
is REFUSED. With ``notify=False`` the secondary only learns of changes when the test calls
:meth:`BindServers.sync_secondary` (an ``rndc refresh``), which is how tests make it lag.

Other test areas use it with ``from tests.support.bind import *`` in their conftest.py, then
ask for the ``bind_servers`` (or ``bind_servers_lagging``) fixture.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from tests.support.servers import LOOPBACK, free_port

__all__ = [
    "RECORDS",
    "REVERSE_ZONE",
    "REVERSE_ZONE6",
    "TEST_ZONE",
    "ZONE",
    "BindServer",
    "BindServers",
    "bind_pair",
    "bind_servers",
    "bind_servers_lagging",
    "free_port",
]

NAMED = "/usr/sbin/named"
TSIG_KEYGEN = "/usr/sbin/tsig-keygen"
RNDC = "/usr/sbin/rndc"

ZONE = "corp.example"
TEST_ZONE = "test.corp.example"
REVERSE_ZONE = "10.in-addr.arpa"
REVERSE_ZONE6 = "d.f.ip6.arpa"  # fd00::/8, for IPv6 PTR tests
UPDATE_KEY = "ferryman-key"
UPDATE_KEY_SHA512 = "ferryman-sha512"
READONLY_KEY = "readonly-key"
STARTUP_TIMEOUT = 15.0
INITIAL_TTL = 300

# The shared example world: one A record per VM at its stockholm address.
RECORDS: dict[str, str] = {
    "sql-01": "10.10.1.11",
    "sql-02": "10.10.1.12",
    "app-01": "10.10.2.21",
    "app-02": "10.10.2.22",
    "app-03": "10.10.2.23",
    "app-04": "10.10.2.24",
    "web-01": "10.10.3.31",
    "web-02": "10.10.3.32",
    "web-03": "10.10.3.33",
    "web-04": "10.10.3.34",
    "file-01": "10.10.4.41",
    "mon-01": "10.11.5.51",
}
WWW = [RECORDS[f"web-0{i}"] for i in range(1, 5)]


@dataclass
class BindServer:
    """One running ``named``: where it listens, its files, and its rndc channel."""

    role: str
    address: str
    port: int
    control_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def hostport(self) -> str:
        """``host:port`` as Ferryman's DNS targets and CLI take it."""
        return f"{self.address}:{self.port}"

    @property
    def log_path(self) -> Path:
        """named's stderr (it runs with ``-g``, so all logging goes there)."""
        return self.directory / "named.log"

    def log(self) -> str:
        """The server's log so far, for failure messages."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def rndc(self, *args: str) -> str:
        """Run ``rndc`` against this server's control channel; raise on failure."""
        cmd = [RNDC, "-c", str(self.directory / "rndc.conf"), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"rndc {' '.join(args)} failed: {done.stderr or done.stdout}")
        return done.stdout

    def query(self, name: str, rdtype: str, *, timeout: float = 1.0) -> dns.message.Message:
        """One non-recursive TCP query to this server."""
        msg = dns.message.make_query(name, rdtype)
        msg.flags &= ~dns.flags.RD
        return dns.query.tcp(msg, self.address, port=self.port, timeout=timeout)

    def serial(self, zone: str = ZONE) -> int | None:
        """The zone's SOA serial here, or None while the zone is not loaded."""
        try:
            resp = self.query(zone, "SOA", timeout=0.5)
        except (OSError, EOFError, dns.exception.DNSException):
            # a named still starting may accept a TCP connection and close it unanswered
            return None
        if resp.rcode() != dns.rcode.NOERROR or not resp.flags & dns.flags.AA:
            return None
        for rrset in resp.answer:
            if rrset.rdtype == dns.rdatatype.SOA:
                return int(rrset[0].serial)
        return None

    def addresses(self, name: str) -> set[str]:
        """The A and AAAA values this server answers for ``name`` (absolute or in ``ZONE``)."""
        fqdn = name if name.endswith(".") else f"{name}.{ZONE}."
        found: set[str] = set()
        for rdtype in ("A", "AAAA"):
            for rrset in self.query(fqdn, rdtype).answer:
                found.update(rr.to_text() for rr in rrset)
        return found

    def stop(self) -> None:
        """Stop named (SIGTERM, then SIGKILL if it does not exit)."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@dataclass
class BindServers:
    """A primary and a secondary serving ``corp.example``, its test zone and reverse zones."""

    primary: BindServer
    secondary: BindServer
    key_file: Path
    sha512_key_file: Path
    readonly_key_file: Path
    notify: bool
    zones: tuple[str, ...] = (ZONE, TEST_ZONE, REVERSE_ZONE, REVERSE_ZONE6)
    root: Path = field(default_factory=Path)

    @property
    def servers(self) -> list[str]:
        """Every authoritative server as ``host:port`` (primary first)."""
        return [self.primary.hostport, self.secondary.hostport]

    def sync_secondary(self, zone: str = ZONE, *, timeout: float = 10.0) -> None:
        """Make the secondary fetch the primary's changes now and wait until it has them."""
        want = self.primary.serial(zone)
        self.secondary.rndc("refresh", zone)
        self.wait_in_sync(zone, timeout=timeout, want=want)

    def wait_in_sync(
        self, zone: str = ZONE, *, timeout: float = 10.0, want: int | None = None
    ) -> None:
        """Wait until the secondary serves the primary's serial of ``zone``."""
        target = want if want is not None else self.primary.serial(zone)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.secondary.serial(zone) == target:
                return
            time.sleep(0.05)
        raise TimeoutError(
            f"secondary has serial {self.secondary.serial(zone)} of {zone}, primary {target}\n"
            + self.secondary.log()[-3000:]
        )

    def stop(self) -> None:
        """Stop both servers."""
        self.secondary.stop()
        self.primary.stop()


def _keygen(directory: Path, name: str, algorithm: str = "hmac-sha256") -> Path:
    path = directory / f"{name}.key"
    out = subprocess.run(
        [TSIG_KEYGEN, "-a", algorithm, name], capture_output=True, text=True, check=True
    )
    path.write_text(out.stdout)
    path.chmod(0o600)
    return path


def _soa(zone: str) -> str:
    return (
        f"$ORIGIN {zone}.\n$TTL {INITIAL_TTL}\n"
        f"@ IN SOA ns1.{ZONE}. hostmaster.{ZONE}. 2026010101 3600 600 86400 60\n"
        f"@ IN NS ns1.{ZONE}.\n@ IN NS ns2.{ZONE}.\n"
    )


def _zone_files(directory: Path, primary: str, secondary: str) -> None:
    corp = [_soa(ZONE), f"ns1 IN A {primary}\n", f"ns2 IN A {secondary}\n"]
    corp += [f"test IN NS ns{i}.{ZONE}.\n" for i in (1, 2)]
    corp += [f"{name} IN A {addr}\n" for name, addr in RECORDS.items()]
    corp += [f"www IN A {addr}\n" for addr in WWW]
    (directory / f"{ZONE}.db").write_text("".join(corp))
    (directory / f"{TEST_ZONE}.db").write_text(_soa(TEST_ZONE))
    rev = [_soa(REVERSE_ZONE)]
    for name, addr in RECORDS.items():
        octets = addr.split(".")
        rev.append(f"{'.'.join(reversed(octets[1:]))} IN PTR {name}.{ZONE}.\n")
    (directory / f"{REVERSE_ZONE}.db").write_text("".join(rev))
    (directory / f"{REVERSE_ZONE6}.db").write_text(_soa(REVERSE_ZONE6))


def _common_conf(server: BindServer, keys: list[Path], rndc_key: Path) -> str:
    includes = "".join(f'include "{k}";\n' for k in [*keys, rndc_key])
    d = server.directory
    return (
        includes + "options {\n"
        f'  directory "{d}";\n'
        f'  pid-file "{d}/named.pid";\n'
        f'  session-keyfile "{d}/session.key";\n'
        f'  managed-keys-directory "{d}";\n'
        f"  listen-on port {server.port} {{ {server.address}; }};\n"
        "  listen-on-v6 { none; };\n"
        "  recursion no;\n"
        "  dnssec-validation no;\n"
        "  minimal-responses yes;\n"
        "  transfers-per-ns 10;\n"
        "  serial-query-rate 1000;\n"
        f"  transfer-source {server.address};\n"
        f"  notify-source {server.address};\n"
        "};\n"
        f"controls {{ inet {server.address} port {server.control_port} "
        f'allow {{ {server.address}; }} keys {{ "rndc-key"; }}; }};\n'
    )


def _rndc_conf(server: BindServer, rndc_key: Path) -> None:
    (server.directory / "rndc.conf").write_text(
        f'include "{rndc_key}";\n'
        f'options {{ default-key "rndc-key"; default-server {server.address}; '
        f"default-port {server.control_port}; }};\n"
    )


def _primary_conf(p: BindServer, s: BindServer, keys: list[Path], rndc: Path, notify: bool) -> str:
    conf = _common_conf(p, keys, rndc)
    for zone in (ZONE, TEST_ZONE, REVERSE_ZONE, REVERSE_ZONE6):
        # Explicit notify to the secondary's real port: NS records can only name port 53.
        notify_conf = (
            f"notify explicit; notify-delay 0; also-notify {{ {s.address} port {s.port}; }};"
            if notify
            else "notify no;"
        )
        conf += (
            f'zone "{zone}" {{ type primary; file "{p.directory}/{zone}.db"; '
            f"allow-transfer {{ {s.address}; }}; {notify_conf} "
            f"update-policy {{ grant {UPDATE_KEY} zonesub ANY; "
            f"grant {UPDATE_KEY_SHA512} zonesub ANY; }}; }};\n"
        )
    return conf


def _secondary_conf(s: BindServer, p: BindServer, keys: list[Path], rndc: Path) -> str:
    conf = _common_conf(s, keys, rndc)
    for zone in (ZONE, TEST_ZONE, REVERSE_ZONE, REVERSE_ZONE6):
        conf += (
            f'zone "{zone}" {{ type secondary; file "{s.directory}/{zone}.db"; '
            f"primaries {{ {p.address} port {p.port}; }}; notify no; }};\n"
        )
    return conf


def _start(server: BindServer, conf: str) -> None:
    conf_path = server.directory / "named.conf"
    conf_path.write_text(conf)
    check = subprocess.run(
        ["named-checkconf", str(conf_path)], capture_output=True, text=True, check=False
    )
    if check.returncode != 0:
        raise RuntimeError(f"generated named.conf is invalid: {check.stdout}{check.stderr}")
    with server.log_path.open("wb") as log:
        # -g: foreground, log to stderr; -n 1: one worker thread is plenty on loopback.
        server.process = subprocess.Popen(
            [NAMED, "-g", "-4", "-n", "1", "-c", str(conf_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def _wait_ready(server: BindServer, zones: tuple[str, ...]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if server.process is not None and server.process.poll() is not None:
            raise RuntimeError(f"named ({server.role}) exited at start:\n{server.log()[-3000:]}")
        if all(server.serial(zone) is not None for zone in zones):
            return
        time.sleep(0.05)
    raise RuntimeError(f"named ({server.role}) not ready in time:\n{server.log()[-3000:]}")


def _launch(root: Path, notify: bool) -> BindServers:
    keys_dir = root / "keys"
    keys_dir.mkdir()
    key = _keygen(keys_dir, UPDATE_KEY)
    key512 = _keygen(keys_dir, UPDATE_KEY_SHA512, "hmac-sha512")
    readonly = _keygen(keys_dir, READONLY_KEY)
    rndc_key = _keygen(keys_dir, "rndc-key")
    keys = [key, key512, readonly]

    # named only listens on addresses configured on an interface, so both servers share
    # 127.0.0.1 and differ by port.
    primary = BindServer("primary", LOOPBACK, free_port(), free_port(), root / "primary")
    secondary = BindServer("secondary", LOOPBACK, free_port(), free_port(), root / "secondary")
    for server in (primary, secondary):
        server.directory.mkdir()
        _rndc_conf(server, rndc_key)
    _zone_files(primary.directory, primary.address, secondary.address)
    servers = BindServers(primary, secondary, key, key512, readonly, notify, root=root)
    try:
        _start(primary, _primary_conf(primary, secondary, keys, rndc_key, notify))
        _wait_ready(primary, servers.zones)
        _start(secondary, _secondary_conf(secondary, primary, keys, rndc_key))
        _wait_ready(secondary, servers.zones)
    except BaseException:
        servers.stop()
        raise
    return servers


@contextlib.contextmanager
def bind_pair(*, notify: bool = True, attempts: int = 3) -> Iterator[BindServers]:
    """Start a primary + secondary in a temp dir; stop both and remove the dir on exit.

    ``notify=False`` keeps the secondary on the old data until ``sync_secondary()``.
    """
    if shutil.which(NAMED) is None:
        raise RuntimeError("BIND9 is not installed: apt-get install bind9 bind9-utils")
    last: Exception | None = None
    for _ in range(attempts):
        root = Path(tempfile.mkdtemp(prefix="ferryman-bind-"))
        try:
            servers = _launch(root, notify)
        except RuntimeError as exc:
            # A port picked as free can be taken by a parallel test before named binds it.
            last = exc
            shutil.rmtree(root, ignore_errors=True)
            continue
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        try:
            yield servers
        finally:
            servers.stop()
            shutil.rmtree(root, ignore_errors=True)
        return
    raise RuntimeError(f"could not start BIND9 after {attempts} attempts: {last}")


@pytest.fixture
def bind_servers() -> Iterator[BindServers]:
    """A fresh BIND9 primary + secondary (NOTIFY on) for one test."""
    with bind_pair() as servers:
        yield servers


@pytest.fixture
def bind_servers_lagging() -> Iterator[BindServers]:
    """A fresh pair whose secondary lags: no NOTIFY, it updates only on ``sync_secondary()``."""
    with bind_pair(notify=False) as servers:
        yield servers
