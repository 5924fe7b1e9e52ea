"""Decoded compiled runs, kept per process so a worker decodes a run's stages once.

A run's ``compiled`` column is written when the run is created and never changed afterwards
(resume re-enters stages of the same compiled run; cleanup, commit, compensation and the like
are *new* runs with their own ids), so a decoded copy stays valid for the life of the run.
Decoding it per unit or per stage costs more than the steps themselves on large plans.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from sqlmodel import Session

from workflows.compiler import CompiledRun
from workflows.store import repository

DEFAULT_SIZE = 64  # runs in flight at once on one worker; more are decoded again, not wrong


class CompiledRuns:
    """A bounded, thread-safe map from run id to its decoded :class:`CompiledRun`."""

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self.size = size
        self._runs: OrderedDict[str, CompiledRun] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session: Session, run_id: str) -> CompiledRun:
        """The compiled run of ``run_id``, read (only that column) and decoded on first use."""
        with self._lock:
            found = self._runs.get(run_id)
            if found is not None:
                self._runs.move_to_end(run_id)
                return found
        # decoded outside the lock: two threads may both decode a run once, never block
        compiled = CompiledRun.from_json(repository.compiled_of(session, run_id=run_id))
        self.put(run_id, compiled)
        return compiled

    def put(self, run_id: str, compiled: CompiledRun) -> None:
        """Remember a run's compiled form (the creator already has it decoded)."""
        with self._lock:
            self._runs[run_id] = compiled
            self._runs.move_to_end(run_id)
            while len(self._runs) > self.size:
                self._runs.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._runs)
