"""Compiled runs, kept per process so a worker reads and decodes a run's stored form once.

A run's ``compiled`` column is written when the run is created and never changed afterwards
(resume re-enters stages of the same compiled run; cleanup, commit, compensation and the like
are *new* runs with their own ids), so a copy read once stays valid for the life of the run.
Reading it per unit or per stage costs more than the steps themselves on large plans.

A run read from the store is kept compact (:meth:`CompiledRun.from_text`): its hosts and
options decoded, its stages as their stored JSON compressed, each stage decoded when read. A
worker needs the hosts and options for every unit but only one stage at a time, and a fully
decoded step holds about 1.6 KB against about 10 bytes compressed. The text is walked one
stage at a time, so the decode's peak is the text and one stage, not every stage's JSON
objects and every decoded step at once (the process kept that peak as resident memory). A
run put by its creator stays as compiled (it is already decoded).

Two bounds keep a long-lived worker's memory flat: at most ``size`` runs, and at most
``max_bytes`` over all the runs kept, a decoded run weighing about 1.6 KB a step and a
compact one the size of its compressed stages (the run used last is always kept, whatever
its size). A run forgotten is read and decoded again when asked for, never wrong.

A run is read by one thread at a time: the first of a worker's threads to ask reads and
decodes it while the others asking for the same run wait for that copy. Every thread of a
pool starts on a new run's units at once, and each reading its own copy would hold several
copies of the column's text at the same moment.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from sqlmodel import Session

from workflows.compiler import CompiledRun, StoredStages
from workflows.store import repository

DEFAULT_SIZE = 64  # runs in flight at once on one worker; more are decoded again, not wrong
STEP_BYTES = 1_600  # a decoded step of the benchmark's test failover, about
HEADER_BYTES = 4_096  # a compact run's plan, hosts and options, about
DEFAULT_MAX_BYTES = 80 * 2**20  # over all runs kept (fifty thousand decoded steps)


def step_count(compiled: CompiledRun) -> int:
    """How many steps a compiled run holds."""
    return sum(len(unit.steps) for stage in compiled.stages for unit in stage.units)


def weight(compiled: CompiledRun) -> int:
    """About how many bytes a kept compiled run holds (its weight against ``max_bytes``)."""
    if isinstance(compiled.stages, StoredStages):
        return HEADER_BYTES + compiled.stages.nbytes
    return HEADER_BYTES + STEP_BYTES * step_count(compiled)


class CompiledRuns:
    """A bounded, thread-safe map from run id to its :class:`CompiledRun`."""

    def __init__(self, size: int = DEFAULT_SIZE, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self._runs: OrderedDict[str, tuple[CompiledRun, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._decoding: dict[str, threading.Lock] = {}  # run id -> held while it is decoded

    def get(self, session: Session, run_id: str) -> CompiledRun:
        """The compiled run of ``run_id``, read (only that column) and decoded on first use."""
        found = self._lookup(run_id)
        if found is not None:
            return found
        with self._lock:
            decoding = self._decoding.setdefault(run_id, threading.Lock())
        with decoding:
            # another thread may have decoded it while this one waited
            found = self._lookup(run_id)
            if found is not None:
                return found
            try:
                text = repository.compiled_text_of(session, run_id=run_id)
                compiled = CompiledRun.from_text(text)
                del text
                self.put(run_id, compiled)
            finally:
                with self._lock:
                    self._decoding.pop(run_id, None)
        return compiled

    def _lookup(self, run_id: str) -> CompiledRun | None:
        with self._lock:
            found = self._runs.get(run_id)
            if found is None:
                return None
            self._runs.move_to_end(run_id)
            return found[0]

    def put(self, run_id: str, compiled: CompiledRun) -> None:
        """Remember a run's compiled form (the creator already has it decoded)."""
        kept = weight(compiled)
        with self._lock:
            old = self._runs.pop(run_id, None)
            if old is not None:
                self._bytes -= old[1]
            self._runs[run_id] = (compiled, kept)
            self._bytes += kept
            while len(self._runs) > 1 and (
                len(self._runs) > self.size or self._bytes > self.max_bytes
            ):
                _, (_, dropped) = self._runs.popitem(last=False)
                self._bytes -= dropped

    @property
    def nbytes(self) -> int:
        """About how many bytes the runs kept hold together."""
        with self._lock:
            return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._runs)
