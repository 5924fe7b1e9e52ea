"""Queue triggers under duplicates, hostile messages and consumer restarts.

The consumer is ``ferryman triggers`` in a process of its own, on a Redis of the test's own;
messages are published raw to ``ferryman.runs`` as any client would.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import cast

import pytest
from kombu import Connection

from lab.testing import running_lab
from plans.errors import FerrymanError
from tests.reliability.drill import (
    PLAN_FILE,
    Stack,
    TriggerProcess,
    WorkerProcess,
    drive,
    topology,
    write_plan_files,
)
from tests.reliability.triggers import (
    dead_letters,
    malformed,
    publish,
    queue_length,
    request,
    run_count,
    unacked,
)
from tests.support.servers import wait_for
from workflows.compiler import Stage
from workflows.engine import Engine
from workflows.settings import Settings
from workflows.statuses import RunStatus
from workflows.steps import RUNS_QUEUE
from workflows.store import Database, repository
from workflows.triggers import TriggerConsumer, bundle_loader

MALFORMED = 1000
CLEAR_REASONS = ("the message is not JSON", "the message is not a run request", "no recovery plan")
DUPLICATES = 100


def idle(stack: Stack) -> bool:
    return queue_length(stack, RUNS_QUEUE) == 0 and unacked(stack) == 0


def drained(stack: Stack) -> bool:
    """Every published trigger has been taken and acknowledged.

    Checked twice, a moment apart: kombu moves a message from the queue to the unacked hash
    in two steps, so a single look can fall between them.
    """
    if not idle(stack):
        return False
    time.sleep(0.3)
    return idle(stack)


def plan_env(paths: Path) -> dict[str, str]:
    return {"FERRYMAN_PLAN_PATHS": str(paths)}


def test_one_run_for_a_key_published_a_hundred_times(stack: Stack) -> None:
    env = plan_env(PLAN_FILE)
    consumers = [TriggerProcess(stack, name, env).start() for name in ("a", "b")]
    body = request("drill-duplicate-42")
    gate = threading.Barrier(DUPLICATES)

    def send() -> None:
        gate.wait()
        publish(stack, [body])

    threads = [threading.Thread(target=send) for _ in range(DUPLICATES)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        wait_for(lambda: drained(stack), timeout=120, what="100 duplicate triggers consumed")
        with stack.runtime() as runtime:
            assert run_count(runtime, "drill-duplicate-42") == 1
            assert run_count(runtime) == 1
        assert dead_letters(stack) == []
        assert not any(c.exited for c in consumers)
    finally:
        for consumer in consumers:
            consumer.kill()


@pytest.mark.slow
def test_a_thousand_malformed_triggers_are_dead_lettered(stack: Stack) -> None:
    consumer = TriggerProcess(stack, "fuzz", plan_env(PLAN_FILE)).start()
    rng = random.Random(7)
    try:
        publish(stack, [malformed(rng, i) for i in range(MALFORMED)])
        wait_for(
            lambda: len(dead_letters(stack)) >= MALFORMED,
            timeout=300,
            what=f"{MALFORMED} dead letters",
        )
        letters = dead_letters(stack)
        assert len(letters) == MALFORMED
        assert all(letter["reason"] and letter["header"] for letter in letters)
        with stack.runtime() as runtime:
            assert run_count(runtime) == 0, "a malformed trigger started a run"
            assert not consumer.exited
            # and the consumer still takes good triggers
            publish(stack, [request("after-the-fuzz")])
            wait_for(
                lambda: run_count(runtime, "after-the-fuzz") == 1,
                timeout=60,
                what="the good trigger's run",
            )
            wait_for(lambda: drained(stack), timeout=60, what="the good trigger acknowledged")
            assert run_count(runtime) == 1
        # every reason names the mistake
        unclear = [
            r for r in (letter["reason"] for letter in letters) if not r.startswith(CLEAR_REASONS)
        ]
        assert unclear == []
        kinds = {letter["reason"].split(":")[0] for letter in letters}
        print(f"\n{MALFORMED} malformed triggers dead-lettered; reasons start: {sorted(kinds)}")
    finally:
        consumer.kill()


def test_consumer_restarts_lose_nothing_and_gates_keep_waiting(
    stack: Stack, tmp_path: Path
) -> None:
    with running_lab(topology(), auth="ntlm") as lab:
        plan = write_plan_files(tmp_path / "plans", {n: e.url for n, e in lab.endpoints.items()})
        env = plan_env(plan.parent)
        worker = WorkerProcess(stack, "a").start()
        consumers = [TriggerProcess(stack, "a", env).start()]
        try:
            with stack.runtime() as runtime:
                publish(stack, [request("drill-7")])
                # kill the consumer once the run's first stage (two VMs) has been sent whole
                # (a kill between the run's commit and its dispatch: tests/workflows/
                # test_lost_dispatch.py)
                wait_for(lambda: len(lab.lab.audit.entries()) >= 2, timeout=60, what="first stage")
                consumers[0].kill()
                # triggers sent while no consumer runs wait in the queue
                publish(stack, [request("drill-7"), request("drill-8", plan="nope")])
                consumers.append(TriggerProcess(stack, "b", env).start())
                wait_for(lambda: len(dead_letters(stack)) == 1, timeout=60, what="dead letter")
                wait_for(lambda: drained(stack), timeout=60, what="queued triggers consumed")
                assert run_count(runtime, "drill-7") == 1
                assert run_count(runtime) == 1
                letters = dead_letters(stack)
                assert ["drill-8" in d["body"] for d in letters] == [True]
                assert "nope" in letters[0]["reason"]
                with runtime.db.session() as session:
                    run = repository.find_run_by_key(session, idempotency_key="drill-7")
                assert run is not None

                def waiting() -> bool:
                    with runtime.db.session() as session:
                        current = repository.get_run(session, run_id=run.id)
                    assert current.status in ("running", "waiting"), current.error
                    return current.status == RunStatus.WAITING

                wait_for(waiting, timeout=90, what="the run to reach its gate")
                # the control plane restarts again while the run waits for an operator
                consumers[-1].kill()
                consumers.append(TriggerProcess(stack, "c", env).start())
                assert waiting()
                with runtime.db.session() as session:
                    gate = repository.approval_for(session, run_id=run.id, stage=run.current_stage)
                    pending = repository.pending_approvals(session)
                assert [a.run_id for a in pending] == [run.id]
                final = drive(runtime, run.id, timeout=120)
                assert final.status == RunStatus.SUCCEEDED, final.error
                assert gate is None or gate.run_id == run.id
        finally:
            for process in [worker, *consumers]:
                process.kill()


class CrashingDispatcher:
    """Dies (like a SIGKILL) when asked to dispatch: after the run's commit, before its send."""

    def dispatch(self, run_id: str, stage: Stage) -> None:
        raise KeyboardInterrupt("consumer killed between commit and dispatch")


class RecordingDispatcher:
    """Records what would have been sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []

    def dispatch(self, run_id: str, stage: Stage) -> None:
        self.sent.append((run_id, stage.index))


def test_a_trigger_redelivered_after_a_crash_before_dispatch_moves_the_run(
    tmp_path: Path,
) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/ferryman.db")
    db = Database(settings.database_url)
    load = bundle_loader([str(PLAN_FILE)])
    body = request("drill-crash-window")
    # handle() never touches the connection: it only starts runs
    no_connection = cast(Connection, None)
    try:
        crashed = TriggerConsumer(Engine(db, CrashingDispatcher(), settings), no_connection, load)
        with pytest.raises(KeyboardInterrupt):
            crashed.handle(body)  # the message is not acknowledged: it comes back
        recorder = RecordingDispatcher()
        replay = TriggerConsumer(Engine(db, recorder, settings), no_connection, load)
        run = replay.handle(body)
        assert run.status == RunStatus.RUNNING
        assert recorder.sent == [(run.id, 0)], "the run's first stage was never sent"
    finally:
        db.dispose()


def test_deeply_nested_json_gets_a_clear_reason(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/ferryman.db")
    db = Database(settings.database_url)
    consumer = TriggerConsumer(
        Engine(db, RecordingDispatcher(), settings),
        cast(Connection, None),
        bundle_loader([str(PLAN_FILE)]),
    )
    try:
        with pytest.raises(FerrymanError, match="not JSON"):
            consumer.handle("[" * 100_000 + "]" * 100_000)
    finally:
        db.dispose()
