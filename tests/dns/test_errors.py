"""Server refusals map to permanent errors that name zone, server and key file; never the secret."""

from __future__ import annotations

import base64
import dataclasses
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from plans.errors import PermanentError, TransientError
from tests.support.bind import BindServers
from workers.dns import (
    DnsBadKey,
    DnsConflict,
    DnsNotApplied,
    DnsNotAuth,
    DnsNotZone,
    DnsRefused,
    DnsTarget,
    DnsTimeout,
    capture,
    load_key_file,
    switch,
)
from workers.dns.rfc2136 import new_update, send_update
from workers.dns.target import Server
from workers.errors import RemotePermanentError, RemoteTransientError

pytestmark = pytest.mark.integration


OTHER_SECRET = base64.b64encode(b"not the secret the server holds!").decode()


def write_key(path: Path, name: str, algorithm: str = "hmac-sha256") -> Path:
    path.write_text(f'key "{name}" {{\n\talgorithm {algorithm};\n\tsecret "{OTHER_SECRET}";\n}};\n')
    return path


def assert_named(error: Exception, servers: BindServers, key_file: Path) -> None:
    text = str(error)
    assert "corp.example" in text
    assert servers.primary.hostport in text
    assert str(key_file) in text
    assert OTHER_SECRET not in text
    key = load_key_file(servers.key_file)
    assert key.secret not in text


def assert_untouched(target: DnsTarget) -> None:
    assert capture(target, ["sql-01"]).addresses("sql-01") == ["10.10.1.11"]


def test_wrong_secret_is_badsig_and_permanent(
    target: DnsTarget, bind_servers: BindServers, tmp_path: Path
) -> None:
    wrong = write_key(tmp_path / "wrong.key", "ferryman-key")
    with pytest.raises(DnsBadKey, match="BADSIG") as caught:
        switch(dataclasses.replace(target, key_file=str(wrong)), "sql-01", ["10.20.1.11"])
    assert isinstance(caught.value, RemotePermanentError)
    assert_named(caught.value, bind_servers, wrong)
    assert_untouched(target)


def test_unknown_key_is_badkey_and_permanent(
    target: DnsTarget, bind_servers: BindServers, tmp_path: Path
) -> None:
    unknown = write_key(tmp_path / "unknown.key", "nobody-key")
    with pytest.raises(DnsBadKey, match="BADKEY") as caught:
        switch(dataclasses.replace(target, key_file=str(unknown)), "sql-01", ["10.20.1.11"])
    assert caught.value.key_ref == str(unknown)
    assert caught.value.server == bind_servers.primary.hostport
    assert_named(caught.value, bind_servers, unknown)


def test_wrong_algorithm_is_rejected(
    target: DnsTarget, bind_servers: BindServers, tmp_path: Path
) -> None:
    text = bind_servers.key_file.read_text().replace("hmac-sha256", "hmac-sha512")
    (tmp_path / "alg.key").write_text(text)
    with pytest.raises(DnsBadKey):
        switch(
            dataclasses.replace(target, key_file=str(tmp_path / "alg.key")),
            "sql-01",
            ["10.20.1.11"],
        )


def test_a_sha512_key_that_is_granted_works(target: DnsTarget, bind_servers: BindServers) -> None:
    sha512 = dataclasses.replace(target, key_file=str(bind_servers.sha512_key_file))
    assert switch(sha512, "sql-01", ["10.20.1.11"]).changed


def test_a_key_without_update_rights_is_refused(
    target: DnsTarget, bind_servers: BindServers
) -> None:
    readonly = dataclasses.replace(target, key_file=str(bind_servers.readonly_key_file))
    with pytest.raises(DnsRefused, match="readonly-key") as caught:
        switch(readonly, "sql-01", ["10.20.1.11"])
    assert isinstance(caught.value, PermanentError)
    assert caught.value.zone == "corp.example"
    assert_named(caught.value, bind_servers, bind_servers.readonly_key_file)
    assert_untouched(target)


def test_a_zone_the_server_does_not_serve_is_notauth(bind_servers: BindServers) -> None:
    key = load_key_file(bind_servers.key_file)
    update = new_update("other.example", key)
    update.add("x.other.example.", 60, "A", "10.1.1.1")
    with pytest.raises(DnsNotAuth) as caught:
        send_update(
            Server.parse(bind_servers.primary.hostport),
            update,
            zone="other.example",
            key=key,
            timeout=2,
        )
    assert "other.example" in str(caught.value)


def test_a_name_outside_the_zone_is_notzone(target: DnsTarget) -> None:
    test_zone = dataclasses.replace(target, zone="test.corp.example")
    with pytest.raises(DnsNotZone, match=re.escape("test.corp.example")):
        switch(test_zone, "sql-01.corp.example.", ["10.99.1.11"])


def test_updates_sent_to_the_secondary_are_refused(
    target: DnsTarget, bind_servers: BindServers
) -> None:
    at_secondary = dataclasses.replace(target, primary=bind_servers.secondary.hostport)
    with pytest.raises(DnsRefused, match=re.escape(bind_servers.secondary.hostport)):
        switch(at_secondary, "sql-01", ["10.20.1.11"])


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP port that accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def test_a_server_that_never_answers_is_a_transient_timeout(silent_server: str) -> None:
    target = DnsTarget("corp.example", primary=silent_server, timeout=0.3)
    with pytest.raises(DnsTimeout) as caught:
        capture(target, ["sql-01"])
    assert isinstance(caught.value, RemoteTransientError)
    assert silent_server in str(caught.value)


def test_a_closed_port_is_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when the block ends: nothing listens
    target = DnsTarget("corp.example", primary=f"127.0.0.1:{port}", timeout=0.5)
    with pytest.raises(TransientError):
        capture(target, ["sql-01"])


def test_a_stale_prerequisite_is_a_transient_conflict(bind_servers: BindServers) -> None:
    key = load_key_file(bind_servers.key_file)
    update = new_update("corp.example", key)
    update.present("sql-01.corp.example.", "A", "10.10.1.99")  # not what the zone holds
    update.replace("sql-01.corp.example.", 300, "A", "10.20.1.11")
    primary = Server.parse(bind_servers.primary.hostport)
    with pytest.raises(DnsConflict) as caught:
        send_update(primary, update, zone="corp.example", key=key, timeout=2)
    assert isinstance(caught.value, RemoteTransientError)


def test_an_update_the_server_silently_skips_is_not_reported_as_done(
    target: DnsTarget, bind_servers: BindServers
) -> None:
    key = load_key_file(bind_servers.key_file)
    update = new_update("corp.example", key)
    update.add("alias.corp.example.", 300, "CNAME", "sql-01.corp.example.")
    primary = Server.parse(bind_servers.primary.hostport)
    send_update(primary, update, zone="corp.example", key=key, timeout=2)
    with pytest.raises(DnsNotApplied, match="CNAME"):
        switch(target, "alias", ["10.20.1.11"])


def test_the_key_may_come_from_an_environment_variable(
    target: DnsTarget, bind_servers: BindServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DNS_UPDATE_KEY", bind_servers.key_file.read_text())
    by_env = dataclasses.replace(target, key_file="env:DNS_UPDATE_KEY")
    assert switch(by_env, "sql-02", ["10.20.1.12"]).changed
    unset = dataclasses.replace(target, key_file="env:NO_SUCH_VARIABLE")
    with pytest.raises(PermanentError, match="NO_SUCH_VARIABLE"):
        switch(unset, "sql-02", ["10.20.1.13"])
