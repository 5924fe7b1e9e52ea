"""Worker crashes: SIGKILL at seeded-random points of a planned failover loses nothing.

Each trial starts a fresh lab, starts a planned failover of the example plan (three-tier,
seven VMs in three groups, a manual gate, two scripts, DNS on BIND9) on the worker process
that is running, kills that worker with SIGKILL once the lab has seen a seeded-random number
of mutating calls, waits until the killed worker's unacknowledged messages are older than the
visibility timeout, and starts a new worker. The run must then succeed with every step done,
and the lab's audit log must show each mutating cmdlet exactly once per VM.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest

from lab.testing import running_lab
from tests.reliability.conftest import SpawnWorker
from tests.reliability.drill import (
    PLAN,
    VISIBILITY_TIMEOUT,
    Stack,
    WorkerProcess,
    audit_calls,
    drive,
    example_bundle,
    expected_planned_calls,
    step_statuses,
    topology,
    unacked_older_than,
)
from tests.support.bind import BindServers
from tests.support.servers import wait_for
from workers.embedded import Runtime
from workflows.events import EventKind
from workflows.statuses import RunStatus
from workflows.store import repository

SCRIPTS = 2  # quiesce-order-intake and warm-caches run in a planned failover
FAST_SEEDS = [101, 202]
STUCK_AFTER = 90  # a recovered trial finishes in ~10 s
SLOW_SEEDS = list(range(1, 21))
LOST_MESSAGE_SEEDS = [303, 404, 505]
IN_FLIGHT_GRACE = 5.0  # seconds a kill waits, after its count of calls, for a step to run


@dataclass
class Trial:
    """What one crash trial did, for the assertions and the figures."""

    seed: int
    kill_after_calls: int
    in_flight_at_kill: int
    status: str
    error: str
    steps: Counter[str]
    calls: Counter[tuple[str, str, str]]
    expected: set[tuple[str, str, str]]
    scripts: int
    scripts_before_resume: int | None = None  # set when a kill interrupted a script
    recovered: Counter[str] = field(default_factory=Counter)  # the watch's takeovers, resends


INTERRUPTED_SCRIPT = "the worker died while script"


def crash_trial(
    stack: Stack, runtime: Runtime, bind: BindServers, worker: WorkerProcess,
    spawn: SpawnWorker, seed: int, lose_messages: bool = False,
) -> tuple[Trial, WorkerProcess]:  # fmt: skip
    """One trial; returns its record and the worker left running for the next trial.

    ``lose_messages``: the broker also loses every message the killed worker held (what a
    Redis without persistence does when it restarts with the worker, or a message popped and
    not yet recorded as held): only the steps' heartbeats can tell the new worker about them.
    """
    rng = random.Random(seed)
    with running_lab(topology(), auth="ntlm") as lab:
        bundle = example_bundle({n: e.url for n, e in lab.endpoints.items()}, bind)
        expected = expected_planned_calls(bundle)
        kill_after = rng.randint(1, len(expected) + SCRIPTS)
        run = runtime.engine.start(
            bundle, PLAN, "planned", requested_by="reliability", idempotency_key=f"crash-{seed}"
        )

        counted_at: list[float] = []  # when the lab had seen the seed's number of calls

        def reached() -> bool:
            with runtime.db.session() as session:
                from workflows.store import repository

                current = repository.get_run(session, run_id=run.id)
            if current.status == RunStatus.WAITING:
                runtime.engine.approve(run.id, by="reliability", comment="drill")
            if len(lab.lab.audit.entries()) < kill_after:
                return False
            # then kill while a step runs (most steps take milliseconds against a lab without
            # latency, so a kill at the count alone often fell between two steps), unless
            # none starts within IN_FLIGHT_GRACE (the seed's call was the run's last)
            if not counted_at:
                counted_at.append(time.monotonic())
            if step_statuses(runtime, run.id)["running"]:
                return True
            return time.monotonic() - counted_at[0] > IN_FLIGHT_GRACE

        wait_for(reached, timeout=90, interval=0.01, what=f"{kill_after} mutating calls in the lab")
        worker.kill()
        # counted once the worker is gone: a step it finished between a look and the kill
        # is not in flight, and only the steps it left running must be taken over
        in_flight = step_statuses(runtime, run.id)["running"]
        if lose_messages:
            stack.redis.client(0).delete("unacked", "unacked_index")
        else:
            wait_for(
                lambda: unacked_older_than(stack.redis, VISIBILITY_TIMEOUT),
                timeout=VISIBILITY_TIMEOUT * 4,
                what="the killed worker's messages to pass the visibility timeout",
            )
        replacement = spawn(f"{seed}")
        scripts_before_resume = None
        try:
            final = drive(runtime, run.id, timeout=STUCK_AFTER)
            if final.status == RunStatus.FAILED and INTERRUPTED_SCRIPT in (final.error or ""):
                # A script cannot be re-run blindly: the run stops and says so; the operator
                # checks and resumes, which runs that script once more.
                _s, audit = lab.admin("GET", "/audit")
                scripts_before_resume = sum(1 for e in audit["entries"] if e["cmdlet"] == "Script")
                runtime.engine.resume(run.id, by="reliability")
                final = drive(runtime, run.id, timeout=STUCK_AFTER)
            status, error = final.status, final.error
        except TimeoutError as exc:
            status, error = "stuck", str(exc)
        _status, audit = lab.admin("GET", "/audit")
    entries = audit["entries"]
    return (
        Trial(
            seed=seed,
            kill_after_calls=kill_after,
            in_flight_at_kill=in_flight,
            status=status,
            error=error,
            steps=step_statuses(runtime, run.id),
            calls=audit_calls(entries),
            expected=expected,
            scripts=sum(1 for e in entries if e["cmdlet"] == "Script"),
            scripts_before_resume=scripts_before_resume,
            recovered=recoveries(runtime, run.id),
        ),
        replacement,
    )


def recoveries(runtime: Runtime, run_id: str) -> Counter[str]:
    """How often the workers' watch stepped in for the run (steps taken over, units resent)."""
    kinds = {EventKind.STEP_TAKEN_OVER, EventKind.UNITS_RESENT, EventKind.STAGE_RESENT}
    with runtime.db.session() as session:
        found = repository.events_of(session, run_id=run_id)
    return Counter(e.event for e in found if e.event in kinds)


def check(trial: Trial, bind: BindServers) -> None:
    """Everything a trial must show: success, no step left behind, every call exactly once."""
    where = f"seed {trial.seed} (killed after {trial.kill_after_calls} calls)"
    twice = {call: n for call, n in trial.calls.items() if n != 1}
    assert not twice, f"{where}: calls made more than once: {twice}"
    assert set(trial.calls) <= trial.expected, f"{where}: calls the plan does not make"
    assert trial.status == RunStatus.SUCCEEDED, f"{where}: run {trial.status}: {trial.error}"
    assert set(trial.steps) == {"succeeded"}, f"{where}: steps {dict(trial.steps)}"
    assert set(trial.calls) == trial.expected, f"{where}: calls differ from the plan's"
    if trial.scripts_before_resume is None:
        assert trial.scripts == SCRIPTS, f"{where}: {trial.scripts} script runs"
    else:
        # never re-run automatically; the operator's resume runs the interrupted one once more
        assert trial.scripts_before_resume <= SCRIPTS, f"{where}: script re-run by itself"
        # the interrupted script may or may not have reached the host before the kill
        assert SCRIPTS <= trial.scripts <= SCRIPTS + 1, f"{where}: {trial.scripts} script runs"
    assert bind.primary.addresses("sql-01") == {"10.20.1.11"}


def run_trials(
    stack: Stack, bind: BindServers, spawn: SpawnWorker, seeds: list[int], lose: bool = False
) -> list[Trial]:
    """Run the seeded trials one after another on one Redis and one store."""
    worker = spawn("first")
    trials = []
    with stack.runtime() as runtime:
        for seed in seeds:
            trial, worker = crash_trial(stack, runtime, bind, worker, spawn, seed, lose)
            check(trial, bind)
            trials.append(trial)
    return trials


def test_planned_failover_survives_worker_kills(
    stack: Stack, bind: BindServers, spawn_worker: SpawnWorker
) -> None:
    trials = run_trials(stack, bind, spawn_worker, FAST_SEEDS)
    assert [t.status for t in trials] == ["succeeded"] * len(FAST_SEEDS), trials


def test_steps_whose_messages_vanished_with_their_worker_are_taken_over(
    stack: Stack, bind: BindServers, spawn_worker: SpawnWorker
) -> None:
    """The killed worker's messages are gone for good: the watch finds its silent steps."""
    trials = run_trials(stack, bind, spawn_worker, LOST_MESSAGE_SEEDS, lose=True)
    assert [t.status for t in trials] == ["succeeded"] * len(LOST_MESSAGE_SEEDS), trials
    print(f"\nlost-message trials: {[(t.seed, dict(t.recovered)) for t in trials]}")
    assert any(t.in_flight_at_kill for t in trials), "no kill hit a step in flight"
    # with the messages gone, only the watch can have finished what the kill interrupted
    assert all(t.recovered for t in trials if t.in_flight_at_kill), trials


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_twenty_seeded_worker_kills(
    stack: Stack, bind: BindServers, spawn_worker: SpawnWorker
) -> None:
    trials = run_trials(stack, bind, spawn_worker, SLOW_SEEDS)
    in_flight = [t.in_flight_at_kill for t in trials]
    print(
        f"\ncrash trials: {len(trials)}; kill points (calls): "
        f"{[t.kill_after_calls for t in trials]}; steps in flight at kill: {in_flight}"
    )
    # the seeds must actually hit work in progress, or the test proves little
    assert sum(1 for n in in_flight if n) >= len(trials) // 2
    completed = sum(t.status == RunStatus.SUCCEEDED for t in trials)
    print(f"runs completed: {completed} of {len(trials)}")
