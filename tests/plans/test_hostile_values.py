"""Numbers, names, DNS names and URLs: what validates can neither overflow nor mislead."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from plans.model import (
    INT64_MAX,
    INT64_MIN,
    MAX_SECONDS,
    Endpoint,
    ManualAction,
    PlanVM,
    ScriptAction,
)
from plans.names import dns_name_problem, host_port_problem, in_zone, name_problem, url_problem
from tests.plans.conftest import World


def problems_of(world: World) -> list[tuple[str, str]]:
    return [(p.path_text, p.message) for p in world.validate().errors]


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("groups", 1, "post", 0, "timeout"), 10**20, "must be at most 86400"),
        (("groups", 0, "vms", 0), {"name": "sql-01", "start_delay": 10**20}, "at most 86400"),
        (("groups", 0, "post", 0, "timeout"), "31d", "must be at most 2592000"),
        (("groups", 0, "pre", 0, "timeout"), 1e300, "must be at most 604800"),
        (("rto",), float("inf"), "must be a finite number"),
    ],
)
def test_durations_have_upper_bounds(
    world: World, path: tuple[Any, ...], value: Any, message: str
) -> None:
    world.set(("plans", "three-tier", *path), value)
    found = problems_of(world)
    assert len(found) == 1 and message in found[0][1], found


def test_every_duration_that_validates_fits_a_timedelta() -> None:
    assert timedelta(seconds=MAX_SECONDS)  # the format's largest duration cannot overflow
    action = ManualAction.model_validate(
        {"kind": "manual", "name": "m", "instructions": "x", "timeout": "30d"}
    )
    assert action.timeout == MAX_SECONDS


@pytest.mark.parametrize("value", [2**80, -(2**63) - 1, 2**63, float("inf"), float("nan")])
def test_script_parameters_fit_powershell(value: Any) -> None:
    with pytest.raises(ValueError, match=r"Int64|finite"):
        ScriptAction(kind="script", name="s", script="x", parameters={"N": value})


def test_script_parameters_at_the_int64_bounds_are_kept() -> None:
    action = ScriptAction(
        kind="script", name="s", script="x", parameters={"Low": INT64_MIN, "High": INT64_MAX}
    )
    assert action.parameters == {"Low": INT64_MIN, "High": INT64_MAX}


def test_script_parameter_names_are_identifiers() -> None:
    with pytest.raises(ValueError):
        ScriptAction(kind="script", name="s", script="x", parameters={"a; rm": 1})


@pytest.mark.parametrize(
    "name",
    ["a\0b", "esc\x1b[2Jx", "del\x7f", "c1\x9b", "\u202egnp.exe", "sql-01\u200b", "x\ufeff", " x"],
)
def test_names_refuse_control_bidi_and_invisible_characters(name: str) -> None:
    assert name_problem(name)
    with pytest.raises(ValueError, match="name"):
        PlanVM(name=name)


@pytest.mark.parametrize("name", ["sql-01", "web 01", "Tést-VM", "[/]", ":smile:", "x[/bold]"])
def test_printable_names_stay_allowed(name: str) -> None:
    assert name_problem(name) is None
    assert PlanVM(name=name).name == name


def test_hostile_vm_name_is_reported_at_its_line(world: World) -> None:
    world.set(("plans", "three-tier", "groups", 0, "vms", 0), "sql-01\x1b[2J")
    found = world.validate().errors
    assert len(found) == 1
    assert "U+001B" in found[0].message and "\x1b" not in str(found[0])


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("a..b", "empty label"),
        ("a" * 64, "longer than 63"),
        (".".join(["a" * 60] * 5), "longer than 253"),
        ("-x", "do not start or end with a hyphen"),
        ("x_y.z", None),
        ("sql-01", None),
        ("@", None),
    ],
)
def test_dns_names_keep_to_rfc_1035(name: str, fragment: str | None) -> None:
    problem = dns_name_problem(name)
    if fragment is None:
        assert problem is None
    else:
        assert problem is not None and fragment in problem


def test_records_lie_inside_their_zone(world: World) -> None:
    assert in_zone("sql-01", "corp.example") and in_zone("a.corp.example.", "corp.example")
    assert not in_zone("outside.example.", "corp.example")
    assert not in_zone("evilcorp.example.", "corp.example")
    record = {"zone": "corp.example", "name": "outside.example."}
    world.set(("plans", "three-tier", "groups", 0, "vms", 0, "dns"), [record])
    assert problems_of(world) == [
        (
            "plans.three-tier.groups[0].vms[0].dns[0].name",
            "record 'outside.example.' is outside its zone 'corp.example'; write a name "
            "relative to the zone (e.g. sql-01) or one ending in .corp.example.",
        )
    ]


def test_zone_primaries_parse(world: World) -> None:
    world.set(("fabric", "dns_zones", "corp.example", "primary"), "[::1")
    found = problems_of(world)
    assert len(found) == 1 and "opens '['" in found[0][1]


@pytest.mark.parametrize(
    ("address", "ok"),
    [
        ("127.0.0.1", True),
        ("127.0.0.1:53", True),
        ("[::1]:53", True),
        ("::1", True),
        ("ns1.example", True),
        ("[::1", False),
        ("[]:53", False),
        (":53", False),
        ("host:0", False),
        ("host:", False),
        ("[::1]x", False),
    ],
)
def test_host_port(address: str, ok: bool) -> None:
    assert (host_port_problem(address) is None) is ok


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1/wsman",
        "http://[]:5985/wsman",
        "http://:5985/wsman",
        "http://127.0.0.1:0/wsman",
        "http://127.0.0.1:99999/wsman",
        "http://ferryman:Secret@127.0.0.1:15987/wsman",
        "http://bad..host/wsman",
    ],
)
def test_bad_urls_are_refused_without_a_traceback(world: World, url: str) -> None:
    assert url_problem(url)
    world.set(("fabric", "sites", "stockholm", "hosts", "hv-sto-1", "url"), url)
    found = problems_of(world)
    assert len(found) == 1 and found[0][0].endswith("hv-sto-1.url"), found
    assert "Secret" not in found[0][1]


def test_good_urls_pass() -> None:
    for url in ("https://hv-1.example:5986/wsman", "http://[::1]:5985/wsman", "http://h/wsman"):
        assert Endpoint(url=url, credential="c").url == url
