"""Decoded compiled runs, kept per process so a worker decodes a run's stages once.

A run's ``compiled`` column is written when the run is created and never changed afterwards
(resume re-enters stages of the same compiled run; cleanup, commit, compensation and the like
are *new* runs with their own ids), so a decoded copy stays valid for the life of the run.
Decoding it per unit or per stage costs more than the steps themselves on large plans.

Two bounds keep a long-lived worker's memory flat: at most ``size`` runs, and at most
``max_steps`` steps over all the runs kept (a decoded step of the benchmark's test failover
holds about 1.6 KB, so the default keeps about 80 MB; the run used last is always kept,
whatever its size). A run
forgotten is read and decoded again when asked for, never wrong.

A run is decoded by one thread at a time: the first of a worker's threads to ask reads and
decodes it while the others asking for the same run wait for that copy. Every thread of a
pool starts on a new run's units at once, and each decoding its own copy of a 5,000-VM run
held several copies of the column's text and its objects at the same moment: the process
kept that peak as resident memory long after the copies were dropped.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from sqlmodel import Session

from workflows.compiler import CompiledRun
from workflows.store import repository

DEFAULT_SIZE = 64  # runs in flight at once on one worker; more are decoded again, not wrong
DEFAULT_MAX_STEPS = 50_000  # steps over all runs kept (two and a half 5,000-VM test failovers)


def step_count(compiled: CompiledRun) -> int:
    """How many steps a compiled run holds: the weight of its decoded copy."""
    return sum(len(unit.steps) for stage in compiled.stages for unit in stage.units)


class CompiledRuns:
    """A bounded, thread-safe map from run id to its decoded :class:`CompiledRun`."""

    def __init__(self, size: int = DEFAULT_SIZE, max_steps: int = DEFAULT_MAX_STEPS) -> None:
        self.size = size
        self.max_steps = max_steps
        self._runs: OrderedDict[str, tuple[CompiledRun, int]] = OrderedDict()
        self._steps = 0
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
                compiled = CompiledRun.from_json(repository.compiled_of(session, run_id=run_id))
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
        weight = step_count(compiled)
        with self._lock:
            old = self._runs.pop(run_id, None)
            if old is not None:
                self._steps -= old[1]
            self._runs[run_id] = (compiled, weight)
            self._steps += weight
            while len(self._runs) > 1 and (
                len(self._runs) > self.size or self._steps > self.max_steps
            ):
                _, (_, dropped) = self._runs.popitem(last=False)
                self._steps -= dropped

    @property
    def steps(self) -> int:
        """How many steps the runs kept hold together."""
        with self._lock:
            return self._steps

    def __len__(self) -> int:
        with self._lock:
            return len(self._runs)
