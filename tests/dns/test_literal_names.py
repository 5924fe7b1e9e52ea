"""Record names with DNS presentation metacharacters reach each server as the plan wrote them.

dnspython's ``to_text()`` escapes ``$ ( ) ; " @ \\``, which is right for RFC 2136 (the
escapes become the literal bytes on the wire) and wrong for the Windows DNS Server cmdlets,
which take plain text: they must see ``rec'$(whoami)``, not ``rec'\\$\\(whoami\\)``.
"""

from __future__ import annotations

import json

import dns.message
import dns.name
import dns.update
import pytest

from tests.dns.fake_windows import FakeWindowsDnsServer
from workers.dns import DnsConfigurationError, RecordSet, Snapshot, WindowsDns
from workers.dns.records import absolute_name, literal_labels
from workers.dns.switch import _replace

ZONE = "test'$(x);.example"
RECORD = "rec'$(whoami)"


@pytest.fixture
def server() -> FakeWindowsDnsServer:
    fake = FakeWindowsDnsServer()
    fake.zones[ZONE] = []
    return fake


def names_sent(server: FakeWindowsDnsServer) -> set[str]:
    return {str(c.parameters["Name"]) for c in server.calls if "Name" in c.parameters}


def test_windows_switch_and_restore_use_the_literal_record_name(
    server: FakeWindowsDnsServer,
) -> None:
    dns_zone = WindowsDns(server, ZONE)
    result = dns_zone.switch(RECORD, ["10.20.1.11"], ttl=60)
    assert result.changed
    assert server.values(ZONE, RECORD, "A") == [("10.20.1.11", 60)]
    assert result.new.addresses(RECORD) == ["10.20.1.11"]
    # The stored snapshot survives JSON and still restores the name literally: absent again.
    old = Snapshot.from_dict(json.loads(json.dumps(result.old.to_dict())))
    dns_zone.restore(old)
    assert server.values(ZONE, RECORD, "A") == []
    assert names_sent(server) == {RECORD}
    assert "Remove-DnsServerResourceRecord" in server.mutations()


def test_an_absolute_name_and_the_apex_are_made_relative(server: FakeWindowsDnsServer) -> None:
    server.add(ZONE, "@", "A", "10.20.0.1")
    dns_zone = WindowsDns(server, ZONE)
    assert dns_zone.capture([f"{RECORD}.{ZONE}."]).records[0].values == ()
    assert dns_zone.capture(["@"]).addresses("@") == ["10.20.0.1"]
    assert names_sent(server) == {RECORD, "@"}


def test_unicode_labels_reach_windows_in_unicode(server: FakeWindowsDnsServer) -> None:
    WindowsDns(server, ZONE).switch("zürich", ["10.20.9.9"])
    assert server.values(ZONE, "zürich", "A") == [("10.20.9.9", 300)]
    assert names_sent(server) == {"zürich"}


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("x.other.example.", "not in zone"),
        ("a\\.b", "cannot be written as plain text"),
        ("\\@", "zone apex"),
    ],
)
def test_names_windows_cannot_take_literally_are_refused(
    server: FakeWindowsDnsServer, name: str, problem: str
) -> None:
    with pytest.raises(DnsConfigurationError, match=problem):
        WindowsDns(server, ZONE).switch(name, ["10.20.9.9"])
    assert server.mutations() == []


def test_literal_labels_undo_presentation_escapes() -> None:
    name = dns.name.from_text(absolute_name(RECORD, ZONE))
    assert "\\$" in name.to_text() and "\\$" in name.to_unicode()  # why neither will do
    assert literal_labels(name) == [RECORD, "test'$(x);", "example"]
    assert literal_labels(dns.name.from_text("xn--zrich-kva.example.")) == ["zürich", "example"]


def test_rfc2136_updates_carry_the_literal_bytes_on_the_wire() -> None:
    fqdn = absolute_name(RECORD, "corp.example")
    update = dns.update.UpdateMessage("corp.example")
    _replace(update, RecordSet(fqdn, "A", 0, (), "corp.example"), 300, ["10.20.1.11"])
    sent = dns.message.from_wire(update.to_wire())
    owners = {rrset.name.labels[0] for rrset in sent.sections[2]} | {
        rrset.name.labels[0] for rrset in sent.sections[1]
    }
    assert owners == {RECORD.encode()}
