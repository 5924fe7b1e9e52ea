"""A recovery plan as a text tree: groups in order, their actions and VMs.

Plain text (box-drawing characters), so it reads the same in a terminal, a log and a test.
"""

from __future__ import annotations

from plans.model import (
    ALL_DIRECTIONS,
    ALL_TYPES,
    Action,
    Fabric,
    HealthCheckAction,
    ManualAction,
    PlanVM,
    RecoveryPlan,
    ScriptAction,
    WaitForIpAction,
)


def render_plan(name: str, plan: RecoveryPlan, fabric: Fabric) -> str:
    """The plan as a tree: plan -> groups -> pre actions, VMs (with DNS), post actions."""
    pairing = fabric.pairings.get(plan.pairing)
    if pairing is not None:
        route = (
            f"{pairing.primary.site}/{pairing.primary.cloud} -> "
            f"{pairing.recovery.site}/{pairing.recovery.cloud}"
        )
        head = f"plan {name} (pairing {plan.pairing}: {route})"
    else:
        head = f"plan {name} (pairing {plan.pairing})"
    facts = [f"on group failure: {plan.on_group_failure}", f"test network: {plan.test_network}"]
    if plan.rto is not None:
        facts.insert(0, f"rto {duration(plan.rto)}")
    lines = [head]
    if plan.description:
        lines.append(f"│ {plan.description}")
    lines.append(f"│ {' · '.join(facts)}")
    for index, group in enumerate(plan.groups):
        children = [f"pre  {_action(a)}" for a in group.pre]
        children += [_vm(vm, plan, fabric) for vm in group.vms]
        children += [f"post {_action(a)}" for a in group.post]
        last_group = index == len(plan.groups) - 1
        lines.append(f"{'└' if last_group else '├'}── group {index + 1}: {group.name}")
        stem = "    " if last_group else "│   "
        if not children:
            lines.append(f"{stem}└── (empty)")
        for position, child in enumerate(children):
            branch = "└──" if position == len(children) - 1 else "├──"
            lines.append(f"{stem}{branch} {child}")
    return "\n".join(lines)


def _vm(vm: PlanVM, plan: RecoveryPlan, fabric: Fabric) -> str:
    text = f"vm   {vm.name}"
    pairing = fabric.pairings.get(plan.pairing)
    protected = pairing.vms.get(vm.name) if pairing is not None else None
    if protected is not None:
        text += f"  {protected.primary_host} -> {protected.replica_host}"
    if vm.dns:
        records = []
        for record in vm.dns:
            record_text = f"{record.name}.{record.zone}"
            if record.ttl is not None:
                record_text += f" (ttl {record.ttl})"
            records.append(record_text)
        text += f"  dns: {', '.join(records)}"
    extras = []
    if vm.start_delay:
        extras.append(f"start delay {duration(vm.start_delay)}")
    if not vm.wait_for_ip:
        extras.append("no wait for ip")
    if vm.ip_source != "hyperv":
        extras.append(f"ip from {vm.ip_source}")
    if extras:
        text += f"  [{', '.join(extras)}]"
    return text


def _action(action: Action) -> str:
    details: list[str] = []
    if isinstance(action, ScriptAction):
        where = action.host or f"{action.site} site"
        details.append(f"on {where}")
        details.append(f"file {action.file}" if action.file else "inline")
        details.append(f"timeout {duration(action.timeout)}")
        if action.on_error is not None:
            details.append(f"on error {action.on_error}")
    elif isinstance(action, ManualAction):
        if action.timeout is not None:
            details.append(f"timeout {duration(action.timeout)}, then {action.on_timeout}")
        else:
            details.append("waits for an operator")
    elif isinstance(action, WaitForIpAction | HealthCheckAction):
        details.append(f"timeout {duration(action.timeout)}")
    details.append(applies_to(action))
    return f"{action.name} [{action.kind}] ({'; '.join(details)})"


def applies_to(action: Action) -> str:
    """The failover types and directions an action runs in, in words."""
    kinds = "all types" if set(action.types) == set(ALL_TYPES) else "/".join(action.types)
    if set(action.directions) == set(ALL_DIRECTIONS):
        ways = "both directions"
    else:
        ways = "/".join(action.directions) + " only"
    return f"{kinds or 'no type'}, {ways if action.directions else 'no direction'}"


def duration(seconds: float) -> str:
    """Seconds as the shortest exact unit: ``90s``, ``5m``, ``1h``, ``2d``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
