"""The per-process cache of decoded compiled runs stays bounded and decodes a run once."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import update

from plans import Bundle
from tests.workflows.fakes import FakeExecutor
from tests.workflows.test_engine import settle, without_gate
from tests.workflows.test_store import make_run
from workers.embedded import Runtime
from workflows import cache as cache_module
from workflows.cache import CompiledRuns, weight
from workflows.compensation import compensate
from workflows.compiler import CompiledRun, RunOperation, StoredStages, compile_run
from workflows.followups import start_followup
from workflows.statuses import RunStatus
from workflows.steps import StepKind
from workflows.store import Database, Run


def store_compiled(db: Database, run_id: str, compiled: CompiledRun) -> None:
    make_run(db, run_id=run_id, vm=f"vm-{run_id}")  # a VM is held by one run at a time
    with db.session() as session:
        query = update(Run).where(Run.id == run_id)  # type: ignore[arg-type]
        session.execute(query.values(compiled=compiled.to_json()))


@pytest.fixture
def compiled(bundle: Bundle) -> CompiledRun:
    return compile_run(bundle.fabric, "three-tier", bundle.plan("three-tier"), "test")


def test_the_cache_stays_within_its_budget_after_many_runs(compiled: CompiledRun) -> None:
    each = weight(compiled)
    cache = CompiledRuns(size=64, max_bytes=3 * each)
    for index in range(50):
        cache.put(f"run-{index:04d}", compiled)
        assert cache.nbytes <= 3 * each
    assert len(cache) == 3
    assert cache.nbytes == 3 * each
    # the budget keeps the runs used last, whatever their order of creation
    kept = [f"run-{index:04d}" for index in (47, 48, 49)]
    assert all(cache._lookup(run_id) is compiled for run_id in kept)
    assert cache._lookup("run-0046") is None


def test_a_run_larger_than_the_budget_is_still_kept_while_used(compiled: CompiledRun) -> None:
    cache = CompiledRuns(size=64, max_bytes=1)
    cache.put("run-a", compiled)
    cache.put("run-b", compiled)
    assert len(cache) == 1 and cache._lookup("run-b") is compiled
    cache.put("run-b", compiled)  # put again: counted once
    assert cache.nbytes == weight(compiled)


def test_a_run_read_from_the_store_is_kept_compact_and_reads_as_compiled(
    db: Database, compiled: CompiledRun
) -> None:
    store_compiled(db, "abcdef123456", compiled)
    cache = CompiledRuns()
    with db.session() as session:
        kept = cache.get(session, "abcdef123456")
    assert isinstance(kept.stages, StoredStages)
    assert kept == compiled
    assert weight(kept) < weight(compiled) and cache.nbytes == weight(kept)
    # what the engine reads of it: a stage by index from either end, the stages from one on
    assert kept.stages[-1] == compiled.stages[-1] and kept.stages[2] == compiled.stages[2]
    assert [stage.index for stage in kept.stages[3:]] == [s.index for s in compiled.stages[3:]]
    assert list(kept.steps()) == list(compiled.steps())
    for beyond in (len(compiled.stages), -len(compiled.stages) - 1):
        with pytest.raises(IndexError):
            kept.stages[beyond]
    assert (kept.hosts, kept.options) == (compiled.hosts, compiled.options)


def test_threads_asking_for_one_run_at_once_decode_it_once(
    db: Database, compiled: CompiledRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_compiled(db, "abcdef123456", compiled)
    threads = 8
    started = threading.Barrier(threads)
    released = threading.Event()
    decoded: list[int] = []
    real = CompiledRun.from_text

    def decode(text: str) -> CompiledRun:
        decoded.append(1)
        released.wait(5)  # every other thread has asked by now, or is about to
        return real(text)

    class Counting:
        from_text = staticmethod(decode)

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
    real = CompiledRun.from_text
    calls: list[int] = []

    def flaky(text: str) -> CompiledRun:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("broken once")
        return real(text)

    class Flaky:
        from_text = staticmethod(flaky)

    monkeypatch.setattr(cache_module, "CompiledRun", Flaky)
    cache = CompiledRuns()
    with db.session() as session, pytest.raises(ValueError, match="broken once"):
        cache.get(session, "abcdef123456")
    with db.session() as session:
        assert cache.get(session, "abcdef123456") == compiled
    assert len(calls) == 2 and len(cache) == 1


class FromTheStore(CompiledRuns):
    """Keeps only runs read back from the store: a run's creator no longer has it decoded."""

    def put(self, run_id: str, compiled: CompiledRun) -> None:
        if isinstance(compiled.stages, StoredStages):
            super().put(run_id, compiled)


@pytest.fixture
def from_the_store(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    """The runtime, its engine and worker reading every run's compiled form from the store."""
    monkeypatch.setattr(runtime.engine, "compiled_runs", FromTheStore())
    return runtime


def kept_compact(runtime: Runtime) -> bool:
    runs = runtime.engine.compiled_runs._runs.values()
    return bool(runs) and all(isinstance(kept.stages, StoredStages) for kept, _ in runs)


def test_a_run_read_back_compact_fails_and_resumes(
    from_the_store: Runtime, bundle: Bundle, executor: FakeExecutor
) -> None:
    engine = from_the_store.engine
    executor.permanent.add(("failover", "app-02"))
    run = engine.start(without_gate(bundle), "three-tier", "planned")
    assert settle(from_the_store, run.id).status == RunStatus.FAILED
    assert executor.calls[("failover", "web-01")] == 0  # group 3 never began
    executor.permanent.clear()
    engine.resume(run.id, by="carol")
    assert settle(from_the_store, run.id).status == RunStatus.SUCCEEDED
    assert executor.calls[("failover", "app-02")] == 2
    assert executor.calls[("failover", "web-01")] == 1
    # every other VM step ran once: succeeded steps were not run again
    again = {(kind, vm) for (kind, vm), n in executor.calls.items() if vm and n > 1}
    assert again == {("failover", "app-02")}
    assert kept_compact(from_the_store)


def test_a_run_read_back_compact_is_compensated(
    from_the_store: Runtime, bundle: Bundle, executor: FakeExecutor
) -> None:
    engine = from_the_store.engine
    executor.permanent.add(("reverse", "sql-02"))
    run = engine.start(bundle, "three-tier", "planned")
    assert settle(from_the_store, run.id).status == RunStatus.FAILED
    child = compensate(engine, run.id, by="dave")
    assert child is not None
    assert settle(from_the_store, child.id).status == RunStatus.SUCCEEDED
    undone = sorted(u["vm"] for u in executor.compensated if u["action"] == "cancel_failover")
    assert undone == ["sql-01", "sql-02"]
    assert kept_compact(from_the_store)


def test_a_test_run_read_back_compact_passes_its_gate_and_is_cleaned_up(
    from_the_store: Runtime, bundle: Bundle, executor: FakeExecutor
) -> None:
    engine = from_the_store.engine
    run = engine.start(bundle, "three-tier", "test")
    assert settle(from_the_store, run.id).status == RunStatus.WAITING
    engine.approve(run.id, by="alice")
    assert settle(from_the_store, run.id).status == RunStatus.SUCCEEDED
    cleanup = start_followup(engine, run.id, RunOperation.CLEANUP, by="frank")
    assert settle(from_the_store, cleanup.id).status == RunStatus.SUCCEEDED
    assert executor.count(StepKind.TEST_CLEANUP) == executor.count(StepKind.TEST_FAILOVER) == 7
    assert max(executor.calls.values()) == 1
    assert kept_compact(from_the_store)
