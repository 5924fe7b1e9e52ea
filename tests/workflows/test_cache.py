"""The per-process cache of decoded compiled runs stays bounded and decodes a run once."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import update

from plans import Bundle
from tests.workflows.test_store import make_run
from workflows import cache as cache_module
from workflows.cache import CompiledRuns, step_count
from workflows.compiler import CompiledRun, compile_run
from workflows.store import Database, Run


def store_compiled(db: Database, run_id: str, compiled: CompiledRun) -> None:
    make_run(db, run_id=run_id, vm=f"vm-{run_id}")  # a VM is held by one run at a time
    with db.session() as session:
        query = update(Run).where(Run.id == run_id)  # type: ignore[arg-type]
        session.execute(query.values(compiled=compiled.to_json()))


@pytest.fixture
def compiled(bundle: Bundle) -> CompiledRun:
    return compile_run(bundle.fabric, "three-tier", bundle.plan("three-tier"), "test")


def test_the_cache_stays_within_its_step_budget_after_many_runs(compiled: CompiledRun) -> None:
    steps = step_count(compiled)
    assert steps > 0
    cache = CompiledRuns(size=64, max_steps=3 * steps)
    for index in range(50):
        cache.put(f"run-{index:04d}", compiled)
        assert cache.steps <= 3 * steps
    assert len(cache) == 3
    assert cache.steps == 3 * steps
    # the budget keeps the runs used last, whatever their order of creation
    kept = [f"run-{index:04d}" for index in (47, 48, 49)]
    assert all(cache._lookup(run_id) is compiled for run_id in kept)
    assert cache._lookup("run-0046") is None


def test_a_run_larger_than_the_budget_is_still_kept_while_used(compiled: CompiledRun) -> None:
    cache = CompiledRuns(size=64, max_steps=1)
    cache.put("run-a", compiled)
    cache.put("run-b", compiled)
    assert len(cache) == 1 and cache._lookup("run-b") is compiled
    cache.put("run-b", compiled)  # put again: counted once
    assert cache.steps == step_count(compiled)


def test_threads_asking_for_one_run_at_once_decode_it_once(
    db: Database, compiled: CompiledRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_compiled(db, "abcdef123456", compiled)
    threads = 8
    started = threading.Barrier(threads)
    released = threading.Event()
    decoded: list[int] = []
    real = CompiledRun.from_json

    def decode(data: dict[str, Any]) -> CompiledRun:
        decoded.append(1)
        released.wait(5)  # every other thread has asked by now, or is about to
        return real(data)

    class Counting:
        from_json = staticmethod(decode)

    monkeypatch.setattr(cache_module, "CompiledRun", Counting)
    cache = CompiledRuns()
    results: list[CompiledRun] = []

    def ask() -> None:
        started.wait(5)
        with db.session() as session:
            results.append(cache.get(session, "abcdef123456"))

    workers = [threading.Thread(target=ask) for _ in range(threads)]
    for worker in workers:
        worker.start()
    started_all = threading.Timer(0.5, released.set)  # bounds the wait, asserts nothing on time
    started_all.start()
    for worker in workers:
        worker.join(30)
    started_all.cancel()
    released.set()
    assert len(results) == threads
    assert len(decoded) == 1
    assert all(result is results[0] for result in results)
    assert results[0] == compiled


def test_a_failed_decode_leaves_the_run_to_be_decoded_again(
    db: Database, compiled: CompiledRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_compiled(db, "abcdef123456", compiled)
    real = CompiledRun.from_json
    calls: list[int] = []

    def flaky(data: dict[str, Any]) -> CompiledRun:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("broken once")
        return real(data)

    class Flaky:
        from_json = staticmethod(flaky)

    monkeypatch.setattr(cache_module, "CompiledRun", Flaky)
    cache = CompiledRuns()
    with db.session() as session, pytest.raises(ValueError, match="broken once"):
        cache.get(session, "abcdef123456")
    with db.session() as session:
        assert cache.get(session, "abcdef123456") == compiled
    assert len(calls) == 2 and len(cache) == 1
