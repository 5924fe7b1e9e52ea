"""Protection rules of plan validation: mappings join the two sites of a pairing."""

from __future__ import annotations

from pathlib import Path

import pytest

from plans import validate

FABRIC = Path(__file__).resolve().parents[2] / "plans" / "examples" / "fabric.yaml"
MAPPING = "target: {site: gothenburg, network: corp-got}"


def _problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "fabric.yaml"
    path.write_text(text)
    return [str(p) for p in validate([path]).problems if p.is_error]


def test_the_example_mappings_join_the_pairings_sites(tmp_path: Path) -> None:
    assert _problems(tmp_path, FABRIC.read_text()) == []


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("target: {site: stockholm, network: mgmt-sto}", "stays inside site 'stockholm'"),
        (
            "target: {site: oslo, network: corp-osl}",
            "no pairing joins sites 'stockholm' and 'oslo'",
        ),
    ],
)
def test_a_mapping_outside_a_pairing_is_refused_at_its_place(
    tmp_path: Path, target: str, message: str
) -> None:
    text = FABRIC.read_text()
    assert MAPPING in text
    if "oslo" in target:
        # a third site that no pairing joins to stockholm
        text = text.replace(
            "\n  pairings:",
            "\n    oslo:\n"
            '      vmm: {name: vmm-osl, url: "http://127.0.0.1:15991/wsman", auth: ntlm,'
            " credential: lab-admin}\n"
            '      hosts: {hv-osl-1: {url: "http://127.0.0.1:15992/wsman", auth: ntlm,'
            " credential: lab-admin}}\n"
            "      networks: {corp-osl: {subnets: [10.30.0.0/16]}}\n"
            "\n  pairings:",
            1,
        )
    lines = text.replace(MAPPING, target).splitlines()
    row = next(i for i, line in enumerate(lines, 1) if target in line)
    problems = _problems(tmp_path, "\n".join(lines))
    mine = [p for p in problems if message in p]
    assert len(mine) == 1, problems
    assert mine[0].startswith(f"{tmp_path / 'fabric.yaml'}:{row}:")


def test_a_protection_run_holds_a_vm_by_the_same_key_as_its_failovers() -> None:
    from plans import load_bundle
    from workflows.store.repository import vm_lock_keys

    plan = FABRIC.parent / "three-tier.yaml"
    snapshot = load_bundle([plan]).snapshot()
    failover = vm_lock_keys(snapshot, "three-tier", ["sql-01"])
    protection = vm_lock_keys(snapshot, "protection", ["sql-01", "crm-01", "stray-01"])
    assert protection["sql-01"] == failover["sql-01"] == "stockholm/sto-gold/sql-01"
    assert protection["crm-01"] == "stockholm/sto-gold/crm-01"
    assert protection["stray-01"] == "stray-01"
