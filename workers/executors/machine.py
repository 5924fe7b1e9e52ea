"""Executors for a failed-over (or test) VM itself: network, power, address and health.

In a test run these act on the test VM ("<VM> - Test"); see :func:`base.target_vm`.
"""

from __future__ import annotations

import functools
import time

from workers.errors import CmdletFailed
from workers.executors.base import (
    act_checked,
    act_first,
    first_start,
    host_of,
    input_of,
    is_test_vm,
    target_vm,
    vm_of,
)
from workers.executors.context import StepContext
from workers.executors.errors import HealthCheckFailed, StepParamsError
from workers.executors.lookup import (
    describe,
    find_replication,
    find_vm,
    require_adapters,
    require_vm,
)
from workers.hyperv.hyperv import HyperVHost
from workers.hyperv.ip import HyperVIpSource, IpSource, VmmIpSource, wait_for_ip
from workers.hyperv.models import VMInfo
from workers.hyperv.states import ReplicationHealth, VMState
from workflows.inputs import (
    AdapterSwitch,
    ConnectNetworkInput,
    HealthCheckInput,
    RestoreNetwork,
    StartVmInput,
    StopVm,
    WaitIpInput,
)
from workflows.steps import StepOutcome, StepSpec
from workflows.waiting import wait_until

_RUN_IT_FIRST = "run the failover (or test failover) step first, or check the plan's replica host"


def connect_network(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """Connect every adapter to the input's ``switch``; None leaves the adapters as they are.

    With the input's ``adapters`` (a VM on several networks), each adapter goes to its own
    network's switch instead; see :func:`_connect_each`.
    """
    params = input_of(spec, ConnectNetworkInput)
    switch = params.switch
    host, name = host_of(spec), target_vm(ctx, spec)
    if params.adapters:
        return _connect_each(ctx, spec, host, name, params.adapters)
    if switch is not None and is_test_vm(name):
        # A test VM this run made, deleted by its cleanup: no previous switch to keep, so its
        # first start connects it without reading its adapters first.
        hv = ctx.hyperv(host)
        return act_first(
            ctx,
            lambda: hv.connect_network(name, switch),
            lambda _none: StepOutcome(result={"switch": switch}),
            lambda refused: _connect(ctx, spec, host, name, switch, undoable=True, refused=refused),
        )
    return _connect(ctx, spec, host, name, switch, undoable=True)


def _connect(
    ctx: StepContext,
    spec: StepSpec,
    host: str,
    name: str,
    switch: str | None,
    *,
    undoable: bool,
    refused: CmdletFailed | None = None,
) -> StepOutcome:
    hv = ctx.hyperv(host)
    # The adapters' read also says whether the VM exists (no Get-VM before it).
    adapters = require_adapters(hv, spec, name, _RUN_IT_FIRST)
    current = sorted({a.switch or "" for a in adapters})
    if switch is None:
        # An unmapped network: the VM stays disconnected (plan readiness warned about it).
        return StepOutcome(result={"switch": None, "connected": current}, changed=False)
    if not adapters:
        warning = f"VM {name!r} on {host} has no network adapter; nothing to connect"
        return StepOutcome(result={"switch": switch, "warning": warning}, changed=False)
    if all(a.switch == switch for a in adapters):
        return StepOutcome(result={"switch": switch}, changed=False)
    act_checked(
        spec,
        host,
        "Connect-VMNetworkAdapter",
        lambda: describe(find_vm(hv, name), None),
        f"Check that the virtual switch {switch!r} exists on {host}, then resume the run",
        lambda: hv.connect_network(name, switch),
        refused,
    )
    undo = None
    if undoable and not is_test_vm(name) and len(current) == 1:
        # The test VM is deleted by its cleanup; a real replica gets its old switch back.
        undo = RestoreNetwork(host=host, vm=name, switch=current[0] or None)
    return StepOutcome(result={"switch": switch, "previous": current}, undo=undo)


def _connect_each(
    ctx: StepContext,
    spec: StepSpec,
    host: str,
    name: str,
    wanted: tuple[str | None, ...],
) -> StepOutcome:
    """Connect the n-th adapter to the n-th switch of ``wanted`` (the VM's n-th network).

    Adapters are read first and picked by ``Id``, so a retry skips the ones already done and
    two adapters both called "Network Adapter" never stand for each other. An adapter whose
    network is unmapped (None), or that has no network in the fabric, is left as it is and
    named in a warning.
    """
    hv = ctx.hyperv(host)
    adapters = require_adapters(hv, spec, name, _RUN_IT_FIRST)
    warnings: list[str] = []
    done: list[dict[str, object]] = []
    previous: list[AdapterSwitch] = []
    for index, adapter in enumerate(adapters):
        switch = wanted[index] if index < len(wanted) else None
        entry: dict[str, object] = {"adapter": index + 1, "id": adapter.id, "switch": switch}
        if switch is None:
            why = "its network is unmapped" if index < len(wanted) else "no network is listed"
            warnings.append(
                f"adapter {index + 1} ({adapter.name}) of VM {name!r} on {host} is left "
                f"{'on ' + repr(adapter.switch) if adapter.switch else 'disconnected'}: {why}"
            )
        elif adapter.switch != switch:
            connect = functools.partial(hv.connect_adapter, name, adapter.id, switch)
            act_checked(
                spec,
                host,
                "Connect-VMNetworkAdapter",
                lambda: describe(find_vm(hv, name), None),
                f"Check that the virtual switch {switch!r} exists on {host}, then resume the run",
                connect,
                None,
            )
            entry["previous"] = adapter.switch
            previous.append(AdapterSwitch(id=adapter.id, switch=adapter.switch))
        done.append(entry)
    if len(adapters) < len(wanted):
        warnings.append(
            f"VM {name!r} on {host} has {len(adapters)} network adapter(s) for "
            f"{len(wanted)} networks; the networks past the last adapter are not connected"
        )
    result: dict[str, object] = {"adapters": done}
    if warnings:
        result["warnings"] = warnings
    undo = None
    if previous and not is_test_vm(name):
        # The test VM is deleted by its cleanup; a real replica's adapters go back one by one.
        undo = RestoreNetwork(host=host, vm=name, adapters=tuple(previous))
    return StepOutcome(result=result, undo=undo, changed=bool(previous))


def restore_network(ctx: StepContext, spec: StepSpec, undo: RestoreNetwork) -> StepOutcome:
    """Compensation of CONNECT_NETWORK: back to the previous switch (None: disconnected)."""
    host, name = undo.host, undo.vm
    if undo.adapters:
        return _restore_each(ctx, host, name, undo.adapters)
    if undo.switch is not None:
        return _connect(ctx, spec, host, name, undo.switch, undoable=False)
    hv = ctx.hyperv(host)
    if find_vm(hv, name) is None:
        return StepOutcome(result={"vm": None}, changed=False)
    if all(not a.switch for a in hv.get_network_adapters(name)):
        return StepOutcome(result={"switch": None}, changed=False)
    hv.disconnect_network(name)
    return StepOutcome(result={"switch": None})


def _restore_each(
    ctx: StepContext, host: str, name: str, previous: tuple[AdapterSwitch, ...]
) -> StepOutcome:
    """Each adapter :func:`_connect_each` moved goes back to its own previous switch."""
    hv = ctx.hyperv(host)
    if find_vm(hv, name) is None:
        return StepOutcome(result={"vm": None}, changed=False)
    current = {a.id: a.switch for a in hv.get_network_adapters(name)}
    restored = []
    for adapter in previous:
        if adapter.id not in current or current[adapter.id] == adapter.switch:
            continue  # gone with the VM's settings, or already back
        hv.connect_adapter(name, adapter.id, adapter.switch)
        restored.append({"id": adapter.id, "switch": adapter.switch})
    return StepOutcome(result={"adapters": restored}, changed=bool(restored))


def start_vm(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """Start-VM after ``start_delay`` seconds and wait until it runs; skip if Running."""
    params = input_of(spec, StartVmInput)
    host, name = host_of(spec), target_vm(ctx, spec)
    delay, timeout = params.start_delay, params.timeout
    if not first_start(ctx):
        return power_on(ctx, spec, host, name, delay, timeout)
    # The VM was failed over (or its test copy made) by this run: nothing else started it,
    # so the first start starts it without reading it first.
    hv = ctx.hyperv(host)
    _stagger(delay)
    try:
        started = hv.start_vm(name)
    except CmdletFailed as refused:
        return power_on(ctx, spec, host, name, 0.0, timeout, refused)
    return _running(ctx, hv, host, name, started, timeout)


def _stagger(delay: float) -> None:
    if delay > 0:
        # The plan's per-VM delay staggers boots inside a group (ASR's start order).
        time.sleep(delay)


def power_on(
    ctx: StepContext,
    spec: StepSpec,
    host: str,
    name: str,
    delay: float = 0.0,
    timeout: float = StartVmInput().timeout,
    refused: CmdletFailed | None = None,
) -> StepOutcome:
    """Start-VM ``name`` on ``host`` after ``delay`` seconds and wait until it runs (up to
    ``timeout``); nothing to do when it runs. Compensation starts a source VM with it.
    ``refused``: a first start's Start-VM the host refused, explained here, not repeated."""
    hv = ctx.hyperv(host)
    info = require_vm(hv, spec, name, _RUN_IT_FIRST)
    if info.state is VMState.RUNNING:
        return StepOutcome(result={"state": "Running"}, changed=False)
    _stagger(delay)
    started = act_checked(
        spec,
        host,
        "Start-VM",
        lambda: describe(find_vm(hv, name), find_replication(hv, name)),
        f"Check the VM's configuration and the host's resources on {host}, then resume",
        lambda: hv.start_vm(name),
        refused,
    )
    return _running(ctx, hv, host, name, started, timeout)


def _running(
    ctx: StepContext,
    hv: HyperVHost,
    host: str,
    name: str,
    started: VMInfo | None,
    timeout: float,
) -> StepOutcome:
    # Start-VM returns once the VM runs and -Passthru shows it; a host that answers before
    # (or sends nothing back) is asked again until it does
    running = True if started is not None and started.state is VMState.RUNNING else None
    if running is None:
        running = wait_until(
            lambda: True if _state_of(hv, name) is VMState.RUNNING else None,
            timeout=timeout,
            interval=ctx.poll_interval,
        )
    if running is None:
        raise HealthCheckFailed(
            f"VM {name!r} on {host} is {_state_text(hv, name)} {timeout:g}s after Start-VM; "
            "check its console in Hyper-V Manager, then resume the run"
        )
    undo = None if is_test_vm(name) else StopVm(host=host, vm=name)
    return StepOutcome(result={"state": "Running"}, undo=undo)


def stop_vm(ctx: StepContext, undo: StopVm) -> StepOutcome:
    """Compensation of START_VM: turn the VM off (it is about to be discarded)."""
    host, name = undo.host, undo.vm
    hv = ctx.hyperv(host)
    info = find_vm(hv, name)
    if info is None or info.state in (VMState.OFF, VMState.OFF_CRITICAL):
        return StepOutcome(result={"state": "Off"}, changed=False)
    hv.stop_vm(name, turn_off=True)
    return StepOutcome(result={"state": "Off"})


def _state_of(hv: HyperVHost, name: str) -> VMState | None:
    info = find_vm(hv, name)
    return info.state if info else None


def _state_text(hv: HyperVHost, name: str) -> str:
    state = _state_of(hv, name)
    return state.value if state else "missing"


def wait_ip(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """Wait until the VM reports an address in the input's ``subnets``: the Hyper-V host
    waits for it itself (see ``workers.hyperv.ip``); VMM is polled."""
    host = host_of(spec)
    name = target_vm(ctx, spec)
    params = input_of(spec, WaitIpInput)
    subnets = params.subnets
    if not subnets:
        raise StepParamsError(
            f"step {spec.key}: wait_ip for {name!r} needs the target network's subnets; "
            "add subnets to the network in the fabric"
        )
    source_name, timeout = params.source, params.timeout
    source: IpSource
    if source_name == "vmm":
        vmm_host = params.vmm or _site_vmm(ctx, host)
        source = VmmIpSource(ctx.vmm(vmm_host), prefer_host=host)
    else:
        source = HyperVIpSource(ctx.hyperv(host))
    address = wait_for_ip(
        source,
        name,
        subnets,
        timeout=timeout,
        initial_interval=ctx.poll_interval,
        max_interval=max(ctx.poll_interval * 15, ctx.poll_interval),
    )
    return StepOutcome(result={"addresses": [address], "source": source_name}, changed=False)


def _site_vmm(ctx: StepContext, host: str) -> str:
    """The VMM server of ``host``'s site when the step does not name it.

    The compiler lists each site's VMM server first among that site's hosts (the run's
    fabric snapshot keeps that order through JSON), so the first host of the site is it.
    """
    site = ctx.host_ref(host).site
    for name, ref in ctx.hosts.items():
        if ref.site == site:
            return name
    raise StepParamsError(f"no VMM server known for site {site}; recompile the run")


def health_check(ctx: StepContext, spec: StepSpec) -> StepOutcome:
    """The VM runs and its replication health is not Critical (polled up to ``timeout``)."""
    host = host_of(spec)
    name = target_vm(ctx, spec)
    vm = vm_of(spec)
    timeout = input_of(spec, HealthCheckInput).timeout
    hv = ctx.hyperv(host)
    last: dict[str, str] = {}

    def healthy() -> dict[str, str] | None:
        info = find_vm(hv, name)
        repl = find_replication(hv, vm)
        last["state"] = describe(info, repl)
        if info is None or info.state is not VMState.RUNNING:
            return None
        if repl is not None and repl.health is ReplicationHealth.CRITICAL:
            return None
        return {
            "state": info.state.value,
            "health": repl.health.value if repl else ReplicationHealth.NOT_APPLICABLE.value,
        }

    found = wait_until(healthy, timeout=timeout, interval=ctx.poll_interval)
    if found is None:
        raise HealthCheckFailed(
            f"health check of VM {name!r} on {host} failed ({last.get('state', 'unknown')}): "
            "it must be Running with replication health not Critical; fix the VM or its "
            "replication (Resume-VMReplication), then resume the run"
        )
    return StepOutcome(result=dict(found), changed=False)
