"""Bare Celery: the plan's shape as a stage-by-stage chain of chords, with no Ferryman in it.

A run is G stages of M tasks. Each stage is a chord whose callback (``bench.bare.advance``)
dispatches the next stage's chord, as workflows/ARCHITECTURE.md prescribes, so no message
carries the rest of the plan. The run's definition lives in Redis under
``bench:bare:<run id>`` (what Ferryman keeps in SQL); the last callback pushes the finish time
onto ``bench:bare:<run id>:done``, which the driver waits on with BLPOP (an event, not a poll).

Two task bodies give the two baselines:

* ``bench.bare.noop`` does nothing: what Celery itself costs for the shape.
* ``bench.bare.vm`` makes a test failover's PowerShell calls for one VM directly through the
  Hyper-V adapter's :class:`~workers.hyperv.psrp.PsrpRunner` (the same pypsrp client and
  runspace-pool cache Ferryman's workers use), with no run state, SQL or compiler.

The worker process is started with ``celery -A bench.bare:app worker``; the broker and backend
URLs arrive in ``BENCH_BROKER_URL``. Task arguments never carry a credential: hosts travel as
URLs plus the password's ``env:`` reference.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, cast

import redis
from celery import Celery, chord, group, signature

from workers.executors.context import POLL_INTERVAL
from workers.hyperv.connection import PsrpEndpoint
from workers.hyperv.ip import LATENESS
from workers.hyperv.psrp import PsrpRunner
from workflows.steps import HostRef

VM_QUEUE = "bench.bare.site"
ENGINE_QUEUE = "bench.bare.engine"
NOOP = "bench.bare.noop"
VM = "bench.bare.vm"
ADVANCE = "bench.bare.advance"
TEST_SWITCH = "test-got"


def make_app(broker_url: str) -> Celery:
    """A Celery app with Ferryman's conventions (JSON, acks_late, prefetch 1; see
    workflows/ARCHITECTURE.md)."""
    app = Celery("bench.bare", broker=broker_url, backend=broker_url)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_send_sent_event=False,
        broker_transport_options={"visibility_timeout": 3600},
        result_expires=3600,
        task_routes={NOOP: {"queue": VM_QUEUE}, VM: {"queue": VM_QUEUE}},
        task_default_queue=ENGINE_QUEUE,
        broker_connection_retry_on_startup=True,
    )
    return app


# Without BENCH_BROKER_URL (an import outside a benchmark) the app points nowhere shared.
app = make_app(os.environ.get("BENCH_BROKER_URL", "memory://"))


def _redis() -> redis.Redis:
    return redis.Redis.from_url(app.conf.broker_url)


# --- task bodies ---------------------------------------------------------------------------


@app.task(name=NOOP)
def noop(run_id: str, vm: str) -> None:
    """Nothing: Celery's own cost per task."""


_runners: dict[str, PsrpRunner] = {}


def _runner(host: Mapping[str, Any]) -> PsrpRunner:
    # One runner per host per process, on the adapter's process-wide pool cache, as Ferryman's
    # workers do: the runspace pool is opened once and reused by every task.
    runner = _runners.get(host["url"])  # a host's URL changes with every fresh lab
    if runner is None:
        # the one way a host reference becomes an endpoint, as the workers build theirs
        endpoint = PsrpEndpoint.from_ref(HostRef(**{"site": "", **host}))
        runner = _runners[host["url"]] = PsrpRunner(endpoint)
    return runner


@app.task(name=VM)
def vm_steps(
    run_id: str, vm: str, replica: Mapping[str, Any], wait_ip: bool, ip_timeout: float
) -> int:
    """A test failover of ``vm`` on its replica host, call by call; returns the call count.

    The calls are the ones Ferryman's executors make for the compiled steps TEST_FAILOVER,
    CONNECT_NETWORK, START_VM and WAIT_IP on a step's first start, which acts without reading
    first (only a later start, a retry or a redelivery, reads the state first); the benchmark
    checks the counts against the lab's record of both runs. Nothing is recorded anywhere.
    """
    runner = _runner(replica)
    test_vm = f"{vm} - Test"
    calls = 0

    def call(cmdlet: str, params: dict[str, Any], switches: Sequence[str] = ()) -> Any:
        nonlocal calls
        calls += 1
        return runner.run(cmdlet, params, switches=switches)

    call("Start-VMFailover", {"VMName": vm, "Confirm": False}, ["AsTest"])  # TEST_FAILOVER
    call("Connect-VMNetworkAdapter", {"VMName": test_vm, "SwitchName": TEST_SWITCH})
    started = call("Start-VM", {"Name": test_vm}, ["Passthru"])  # START_VM
    if not any(item.get("State") == "Running" for item in started.output):
        call("Get-VM", {"Name": test_vm})  # answered before the VM ran: read it again
    if wait_ip:  # WAIT_IP
        deadline = time.monotonic() + ip_timeout
        started = time.monotonic()
        while True:
            result = call("Get-VMNetworkAdapter", {"VMName": test_vm})
            if any(item.get("IPAddresses") for item in result.output):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{test_vm} reported no address within {ip_timeout:g}s")
            # the guest is booting; nothing to wait on but time: the executors' schedule
            waited = time.monotonic() - started
            time.sleep(min(max(waited * LATENESS, POLL_INTERVAL), POLL_INTERVAL * 15))
    return calls


# --- the stage-by-stage chain of chords ----------------------------------------------------


def _stage_chord(run_id: str, definition: Mapping[str, Any], index: int) -> Any:
    task = definition["task"]
    units = definition["stages"][index]
    header = group(
        signature(task, kwargs={"run_id": run_id, **unit}, queue=VM_QUEUE) for unit in units
    )
    body = signature(ADVANCE, kwargs={"run_id": run_id, "stage": index}, queue=ENGINE_QUEUE)
    return chord(header, body)


@app.task(name=ADVANCE)
def advance(results: list[Any], run_id: str, stage: int) -> None:
    """A stage finished: dispatch the next stage's chord, or signal the run's end."""
    client = _redis()
    # redis-py types a reply as sync-or-async: this client is sync
    definition = json.loads(cast(bytes | None, client.get(f"bench:bare:{run_id}")) or b"{}")
    client.hset(f"bench:bare:{run_id}:stages", str(stage), repr(time.time()))
    if stage + 1 < len(definition["stages"]):
        _stage_chord(run_id, definition, stage + 1).apply_async()
    else:
        client.rpush(f"bench:bare:{run_id}:done", repr(time.time()))


def start_run(celery_app: Celery, task: str, stages: Sequence[Sequence[Mapping[str, Any]]]) -> str:
    """Store the run's definition and dispatch its first stage; returns the run id."""
    run_id = uuid.uuid4().hex
    definition = {"task": task, "stages": [list(stage) for stage in stages]}
    client = redis.Redis.from_url(celery_app.conf.broker_url)
    client.set(f"bench:bare:{run_id}", json.dumps(definition), ex=7200)
    with celery_app.connection_for_write() as connection:
        _stage_chord(run_id, definition, 0).apply_async(connection=connection)
    return run_id


def wait_run(celery_app: Celery, run_id: str, *, timeout: float) -> float:
    """Block until the run's last callback ran; returns its wall-clock finish time."""
    client = redis.Redis.from_url(celery_app.conf.broker_url, socket_timeout=30)
    deadline = time.monotonic() + timeout
    # BLPOP in short slices so a socket timeout of the client never cuts a long wait.
    while time.monotonic() < deadline:
        item = cast(list[bytes] | None, client.blpop([f"bench:bare:{run_id}:done"], timeout=5))
        if item is not None:
            return float(item[1])
    raise TimeoutError(f"bare run {run_id} did not finish within {timeout:g}s")


def noop_stages(groups: Sequence[Sequence[str]]) -> list[list[dict[str, Any]]]:
    """Stage definitions for :data:`NOOP` tasks."""
    return [[{"vm": vm} for vm in names] for names in groups]


def vm_stages(
    groups: Sequence[Sequence[str]],
    replica_of: Mapping[str, Mapping[str, Any]],
    *,
    wait_ip: bool = True,
    ip_timeout: float = 120.0,
) -> list[list[dict[str, Any]]]:
    """Stage definitions for :data:`VM` tasks; ``replica_of`` maps VM -> replica host ref."""
    return [
        [
            {
                "vm": vm,
                "replica": dict(replica_of[vm]),
                "wait_ip": wait_ip,
                "ip_timeout": ip_timeout,
            }
            for vm in names
        ]
        for names in groups
    ]
