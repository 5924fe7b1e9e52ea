"""Rules on hostile input: DNS names, and the secret and CA files a fabric names.

Kept apart from :mod:`plans.rules` (references and Hyper-V Replica's own rules): these judge
whether a value is safe to hand to a DNS server or to read from disk at all. Names, URLs and
numbers are judged by the model's types (:mod:`plans.names`, :mod:`plans.model`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from plans.credentials import SecretRef
from plans.files import (
    MAX_TEXT_BYTES,
    PSEUDO_ROOTS,
    FileRefused,
    check_regular,
    resolve_secret,
    within,
)
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


def ca_bundles_are_files(
    fabric: Fabric, plans: dict[str, RecoveryPlan], context: RuleContext
) -> Iterator[Finding]:
    """A ``ca_bundle`` is a regular file of at most 1 MiB, never a device or a kernel view.

    The bundle is read on the workers' hosts, so a path missing here is not an error.
    """
    for site_name, site in fabric.sites.items():
        endpoints = [(("vmm",), site.vmm), *((("hosts", h), e) for h, e in site.hosts.items())]
        for where, endpoint in endpoints:
            if endpoint.ca_bundle is None:
                continue
            path: DocPath = ("fabric", "sites", site_name, *where, "ca_bundle")
            real = os.path.realpath(endpoint.ca_bundle)
            if within(real, PSEUDO_ROOTS):
                yield Finding(
                    path,
                    f"ca_bundle {endpoint.ca_bundle!r} is in a kernel pseudo-filesystem "
                    f"({', '.join(PSEUDO_ROOTS)}); point at a PEM file",
                )
            elif os.path.lexists(endpoint.ca_bundle):
                try:
                    check_regular(endpoint.ca_bundle, limit=MAX_TEXT_BYTES, what="ca_bundle")
                except FileRefused as exc:
                    yield Finding(path, str(exc))


INPUT_RULES: tuple[Rule, ...] = (
    dns_names_are_valid,
    secret_files_are_allowed,
    ca_bundles_are_files,
)
