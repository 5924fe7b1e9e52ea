"""Rules on protection: mappings join the two sites of a pairing.

A network or storage mapping says where a VM of the primary site lands on the recovery site,
so its source and target must be the two sites of one pairing (either way round: a failback
maps the recovery site's networks back). A mapping inside one site, or between sites no
pairing joins, would send a failed-over VM to a switch its new host does not have.
"""

from __future__ import annotations

from collections.abc import Iterator

from plans.model import Fabric, RecoveryPlan
from plans.problems import DocPath
from plans.rules import Finding, Rule, RuleContext


def _paired(fabric: Fabric) -> set[tuple[str, str]]:
    """(source site, target site) of every pairing, both ways round."""
    pairs: set[tuple[str, str]] = set()
    for pairing in fabric.pairings.values():
        pairs.add((pairing.primary.site, pairing.recovery.site))
        pairs.add((pairing.recovery.site, pairing.primary.site))
    return pairs


def _problem(kind: str, source: str, target: str, fabric: Fabric) -> str | None:
    if source not in fabric.sites or target not in fabric.sites:
        return None  # an unknown site is reported by the mapping rules already
    if source == target:
        return (
            f"this {kind} mapping stays inside site {source!r}; map a network of a pairing's "
            "primary site to one of its recovery site"
        )
    broken = any(
        ref.site not in fabric.sites
        for pairing in fabric.pairings.values()
        for ref in (pairing.primary, pairing.recovery)
    )
    if broken:
        return None  # a pairing naming an unknown site is reported already; judge it then
    if (source, target) not in _paired(fabric):
        pairs = sorted(f"{p.primary.site} -> {p.recovery.site}" for p in fabric.pairings.values())
        return (
            f"no pairing joins sites {source!r} and {target!r}, so this {kind} mapping is never "
            f"used; map between the sites of a pairing ({', '.join(pairs) or 'none defined'})"
        )
    return None


def mappings_follow_pairings(
    fabric: Fabric, plans: dict[str, RecoveryPlan], context: RuleContext
) -> Iterator[Finding]:
    """Every network and storage mapping joins the two sites of one pairing."""
    for index, mapping in enumerate(fabric.network_mappings):
        base: DocPath = ("fabric", "network_mappings", index, "target", "site")
        problem = _problem("network", mapping.source.site, mapping.target.site, fabric)
        if problem:
            yield Finding(base, problem)
    for index, storage in enumerate(fabric.storage_mappings):
        base = ("fabric", "storage_mappings", index, "target", "site")
        problem = _problem("storage", storage.source.site, storage.target.site, fabric)
        if problem:
            yield Finding(base, problem)


PROTECTION_RULES: tuple[Rule, ...] = (mappings_follow_pairings,)
