"""Crash recovery: what a dead worker or sender left behind is found and finished.

Celery redelivers a killed worker's messages (acks_late), but some things are lost with a
process: a stage committed but never sent (its sender died between the commit and the send),
a stage's chord callback (the worker holding it died), a running step's message (popped and
never acknowledged, or held as a retry), or a unit's message before any of its steps started.
:class:`Recovery` reads each candidate run's records, asks :func:`workflows.decide.recover`
what to do, and writes that with a compare-and-set, so several watches (one per worker) act
once. Every recovery is a run event (``stage_resent``, ``callback_recovered``,
``step_taken_over``, ``units_resent``) that ``ferryman runs report`` shows.

A lost send or callback is recovered once the stage has been quiet for the shorter of
``settings.dispatch_grace`` and ``settings.step_lease``; a silent step after ``step_lease``.
:class:`Watch` is the thread the workers run: it applies gate timeouts, then recovers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from workflows import decide
from workflows.engine import Advance, Engine
from workflows.events import EventKind
from workflows.statuses import StepStatus
from workflows.steps import interrupted_script
from workflows.store import repository, utcnow

log = logging.getLogger(__name__)


class Recovery:
    """Finds runs a crash left stuck and moves them on, as :func:`decide.recover` says."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @property
    def timing(self) -> decide.Timing:
        """The waits of the engine's settings."""
        settings = self.engine.settings
        return decide.Timing(settings.dispatch_grace, settings.step_lease)

    def sweep(self, kinds: tuple[type[decide.Recovery], ...] | None = None) -> list[str]:
        """Look at every running run a crash may have left stuck and recover it.

        ``kinds``: only these recoveries (all by default). Returns the runs recovered, in
        the order found (a run once per recovery).
        """
        now = utcnow()
        timing = self.timing
        recovered: list[str] = []
        for run_id in self._candidates(now, timing):
            for move in self._decide(run_id, now, timing):
                if kinds is not None and not isinstance(move, kinds):
                    continue
                if self._apply(run_id, move, now, timing):
                    recovered.append(run_id)
        return recovered

    def resend_lost_stages(self) -> list[str]:
        """Send again every stage committed but left unsent (its sender died)."""
        return self.sweep((decide.ResendStage,))

    def advance_settled_stages(self) -> list[str]:
        """Advance running runs whose sent stage settled but whose callback never came."""
        return self.sweep((decide.AdvanceLostCallback,))

    def take_over_orphaned_steps(self) -> list[str]:
        """Hand every running step whose worker stopped beating to a fresh delivery.

        A worker refreshes the heartbeat of the steps it runs every ``settings.step_heartbeat``
        seconds. A step whose heartbeat is older than ``settings.step_lease`` lost its worker
        and, with it, possibly its message (a delivery that never comes back). Such a step is
        set back to pending and its unit is sent again on its own, linked to ``advance``: the
        unit skips its succeeded steps and the executors are idempotent, so the step is done
        once. A script is not run again blindly: it fails for an operator to check, as when
        its own message comes back (unless the plan says ``rerun_on_redelivery: true``). If
        the old delivery does come back later, it finds the step held by the new one and
        leaves it. Returns the runs touched (each once).
        """
        return sorted(set(self.sweep((decide.TakeOver,))))

    def resend_idle_units(self) -> list[str]:
        """Send again the units of a sent stage that wait with nothing happening.

        A unit's message can vanish before any of its steps starts (with the worker that
        had taken it, or held as a retry by a worker that died: the broker gives such
        messages back only after the visibility timeout, hours by default). When no step of
        the stage has started, finished or beaten for ``settings.step_lease`` and some units
        still have a pending step and none running, those units are sent again, at most once
        per lease (the stage's entry time is moved on, compare-and-set). A unit whose message
        was only slow finds its steps taken by the first delivery and leaves them.
        """
        return self.sweep((decide.ResendUnits,))

    # -- reading

    def _candidates(self, now: datetime, timing: decide.Timing) -> list[str]:
        """Runs worth a look: a cheap filter in SQL before the decision reads their steps."""
        wait_before = now - timedelta(seconds=timing.recovery_wait)
        lease_before = now - timedelta(seconds=timing.step_lease)
        with self.engine.db.session() as session:
            found = [
                run.id for run in repository.undispatched_runs(session, entered_before=wait_before)
            ]
            found += [
                run_id for run_id, _ in repository.sent_runs(session, entered_before=wait_before)
            ]
            found += [
                step.run_id for step in repository.orphaned_steps(session, beat_before=lease_before)
            ]
        return list(dict.fromkeys(found))

    def _decide(
        self, run_id: str, now: datetime, timing: decide.Timing
    ) -> tuple[decide.Recovery, ...]:
        with self.engine.db.session() as session:
            run = repository.get_run(session, run_id=run_id, with_inputs=False)
            compiled = self.engine.compiled_runs.get(session, run_id)
            steps = repository.steps_of(session, run_id=run_id, stage=run.current_stage)
            return decide.recover(run, compiled.stages, steps, now, timing)

    # -- writing

    def _apply(
        self, run_id: str, move: decide.Recovery, now: datetime, timing: decide.Timing
    ) -> bool:
        if isinstance(move, decide.ResendStage):
            cutoff = now - timedelta(seconds=timing.recovery_wait)
            return self.engine.resend(run_id, entered_before=cutoff)
        if isinstance(move, decide.AdvanceLostCallback):
            # a compare-and-set: a late real callback then finds the run moved on
            done = self.engine.advance(run_id, move.stage, recovered=True)
            return done in (Advance.ADVANCED, Advance.FAILED)
        if isinstance(move, decide.TakeOver):
            return self._take_over(run_id, move, now - timedelta(seconds=timing.step_lease))
        return self._resend_units(run_id, move, timing)

    def _take_over(self, run_id: str, move: decide.TakeOver, cutoff: datetime) -> bool:
        engine = self.engine
        with engine.transaction() as (session, after):
            orphan = repository.get_step(session, run_id=run_id, key=move.step)
            stage = engine.compiled_runs.get(session, run_id).stages[move.stage]
            found = decide.find_spec(stage, move.unit, move.step)
            if found is None:
                return False
            unit, spec = found
            since = orphan.heartbeat_at or orphan.started_at
            silent = (
                f"its worker has not been heard from since {since:%H:%M:%S} UTC"
                if since
                else "its worker was never heard from"
            )
            then: Callable[[], None]
            if move.rerun:
                status = StepStatus.PENDING
                message = f"{silent}; its unit was sent again"
                fields: dict[str, Any] = {"task_id": None, "error": ""}
                then = partial(engine.dispatcher.dispatch, run_id, replace(stage, units=(unit,)))
            else:
                status = StepStatus.FAILED
                # the step's error names what happened, without its own key: the run's error
                # and the report put the key in front of it
                message = f"{silent}; {interrupted_script(run_id, spec, orphan.attempts)}"
                fields = {"error": message}
                then = partial(self._advance, run_id, move.stage)
            if not repository.take_over_step(
                session, step=orphan, beat_before=cutoff, status=status, **fields
            ):
                return False  # its worker beat meanwhile, or another watch took it
            after.append(then)
            repository.add_event(
                session,
                run_id=run_id,
                event=EventKind.STEP_TAKEN_OVER,
                message=f"{orphan.key}: {message}",
                data={"step": orphan.key, "task_id": orphan.task_id},
            )
        return True

    def _advance(self, run_id: str, stage: int) -> None:
        """The failed step settles its stage: move the run on as its callback would."""
        self.engine.advance(run_id, stage)

    def _resend_units(self, run_id: str, move: decide.ResendUnits, timing: decide.Timing) -> bool:
        engine = self.engine
        with engine.transaction() as (session, after):
            run = repository.get_run(session, run_id=run_id, with_inputs=False)
            entered = run.stage_entered_at
            # still quiet since before the lease (another watch's send moves the entry on)
            quiet_since = utcnow() - timedelta(seconds=timing.step_lease)
            if entered is None or entered > quiet_since:
                return False
            if not repository.claim_stage(
                session, run_id=run_id, stage=move.stage, entered=entered
            ):
                return False  # the run moved on, or another watch sent them
            stage = engine.compiled_runs.get(session, run_id).stages[move.stage]
            units = tuple(unit for unit in stage.units if unit.key in move.units)
            keys = ", ".join(move.units)
            repository.add_event(
                session,
                run_id=run_id,
                event=EventKind.UNITS_RESENT,
                message=f"stage {move.stage} {stage.name}: nothing happened for "
                f"{timing.step_lease:g} s while {keys} waited to start "
                "(their messages may have been lost with a worker); sent again",
                data={"units": list(move.units)},
            )
            after.append(partial(engine.dispatcher.dispatch, run_id, replace(stage, units=units)))
        return True


class Watch:
    """A thread that, every ``interval`` seconds until stopped, applies gate timeouts
    (:meth:`Engine.check_timeouts`) and recovers what crashes left behind
    (:meth:`Recovery.sweep`)."""

    def __init__(self, engine: Engine, interval: float = 5.0) -> None:
        self.engine = engine
        self.recovery = Recovery(engine)
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ferryman-watch", daemon=True)

    def start(self) -> Watch:
        """Start watching."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop and wait for the thread."""
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.engine.check_timeouts()
                for run_id in self.recovery.sweep():
                    # the run's events say what was recovered; the log says it happened
                    log.warning("run %s: recovered after a crash (see its events)", run_id)
            except Exception:  # a database hiccup must not kill the watch
                log.exception("the watch's round failed; retrying in %s s", self.interval)
