"""Rules on hostile input: DNS names and the secret files a fabric names.

Kept apart from :mod:`plans.rules` (references and Hyper-V Replica's own rules): these judge
whether a value is safe to hand to a DNS server or to read from disk at all. Names, URLs and
numbers are judged by the model's types (:mod:`plans.names`, :mod:`plans.model`).
"""

from __future__ import annotations

from collections.abc import Iterator

from plans.credentials import SecretRef
from plans.files import FileRefused, resolve_secret
from plans.model import Fabric, RecoveryPlan
from plans.names import absolute, dns_name_problem, in_zone
from plans.problems import DocPath
from plans.rules import Finding, Rule, RuleContext


def dns_names_are_valid(
    fabric: Fabric, plans: dict[str, RecoveryPlan], context: RuleContext
) -> Iterator[Finding]:
    """Zones and records keep to RFC 1035/1123, and every record lies inside its zone."""
    for zone_name, zone in fabric.dns_zones.items():
        base: DocPath = ("fabric", "dns_zones", zone_name)
        problem = dns_name_problem(zone_name, what="zone")
        if problem:
            yield Finding(base, problem, at_key=True)
        if zone.test_zone is not None:
            problem = dns_name_problem(zone.test_zone, what="test zone")
            if problem:
                yield Finding((*base, "test_zone"), problem)
    for plan_name, plan in plans.items():
        for g, group in enumerate(plan.groups):
            for v, vm in enumerate(group.vms):
                for d, record in enumerate(vm.dns):
                    path: DocPath = ("plans", plan_name, "groups", g, "vms", v, "dns", d, "name")
                    problem = dns_name_problem(record.name, what="record name")
                    if problem is None and dns_name_problem(record.zone) is None:
                        full = absolute(record.name, record.zone)
                        if not in_zone(record.name, record.zone):
                            problem = (
                                f"record {record.name!r} is outside its zone {record.zone!r}; "
                                "write a name relative to the zone (e.g. sql-01) or one ending "
                                f"in .{record.zone.rstrip('.')}."
                            )
                        elif len(full.rstrip(".")) > 253:
                            problem = (
                                f"record {record.name!r} in zone {record.zone!r} is longer than "
                                "253 characters"
                            )
                    if problem:
                        yield Finding(path, problem)


def secret_files_are_allowed(
    fabric: Fabric, plans: dict[str, RecoveryPlan], context: RuleContext
) -> Iterator[Finding]:
    """``file:`` references point where secrets may be read (nothing is read here)."""
    refs: list[tuple[DocPath, str]] = [
        (("fabric", "credentials", name, "password"), credential.password)
        for name, credential in fabric.credentials.items()
    ]
    refs += [
        (("fabric", "dns_zones", name, "tsig_key"), zone.tsig_key)
        for name, zone in fabric.dns_zones.items()
        if zone.tsig_key is not None
    ]
    for path, text in refs:
        if not SecretRef.looks_like_reference(text):
            continue  # a literal value is reported by credentials_are_references
        ref = SecretRef.parse(text)
        if ref.scheme != "file":
            continue
        try:
            resolve_secret(ref.target, what="secret file")
        except FileRefused as exc:
            yield Finding(path, str(exc))


INPUT_RULES: tuple[Rule, ...] = (dns_names_are_valid, secret_files_are_allowed)
