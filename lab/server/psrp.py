"""PSRP over WinRM shells: one psrpcore runspace pool per shell, pipelines run off the lock.

psrpcore is not thread-safe, so each :class:`Shell` has one lock around its pool. Outgoing
PSRP data is drained from the pool as soon as it is produced, cut into fragments no larger
than a Receive may carry, into one queue per target (the pool itself or one pipeline):
``data_to_send()`` stops at a message for another target, and each Receive must read only
its own target's data.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from psrpcore import ServerPipeline, ServerRunspacePool
from psrpcore._events import CreatePipelineEvent, GetCommandMetadataEvent, PSRPEvent
from psrpcore._exceptions import InvalidPipelineState
from psrpcore._payload import PSRPMessage, PSRPPayload, StreamType, create_message
from psrpcore.types import PSInvocationState, PSRPMessageType

from lab.objects import CmdletError, Command, ErrorInfo, InvokeResult, TransportFault
from lab.server.clixml import output_clixml
from lab.server.pipeline import plain_commands
from lab.server.serialize import to_error_record, to_ps_value
from lab.server.wsman import ReceiveChunk

log = logging.getLogger(__name__)

# Largest single fragment queued; a Receive packs as many as fit under MaxEnvelopeSize.
MAX_FRAGMENT = 60_000

Invoker = Callable[[Sequence[Command]], InvokeResult]


def _plain(value: Any) -> Any:
    """A parameter value as plain Python (psrpcore hands over its own str/int subclasses)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    meta = getattr(value, "PSObject", None)
    if meta is not None:
        # A deserialised object the client passed back (e.g. a VM from Get-VM): hand the
        # domain its properties as a dict, so no psrpcore type leaks past this layer.
        props = [*meta.adapted_properties, *meta.extended_properties]
        if props:
            return {str(p.name): _plain(p.get_value(value)) for p in props}
        return str(value)
    return value


def commands_of(pipeline: ServerPipeline) -> list[Command]:
    """The lab's view of a pipeline psrpcore read: names and ``(name, value)`` parameters."""
    commands = []
    metadata: Any = pipeline.metadata  # psrpcore's PowerShell, set by its CreatePipeline
    for cmd in metadata.commands:
        params = [(None if n is None else str(n), _plain(v)) for n, v in cmd.parameters]
        commands.append(Command(str(cmd.command_text), params, bool(cmd.is_script)))
    return commands


class LabRunspacePool(ServerRunspacePool):
    """psrpcore's server pool, reading plain CreatePipeline messages itself.

    A CreatePipeline message for a pipeline the pool knows, whose CLIXML has the plain shape
    (:func:`lab.server.pipeline.plain_commands`), becomes its event with the commands already
    read, and psrpcore's own reading (PSObjects, then its pipeline metadata) is skipped; every
    other message goes through psrpcore. :meth:`take_commands` hands the commands over.
    """

    def _process_message(self, message: PSRPMessage) -> PSRPEvent:
        if (
            message.message_type == PSRPMessageType.CreatePipeline
            and message.pipeline_id in self.pipeline_table
        ):
            commands = plain_commands(bytes(message.data))
            if commands is not None:
                event = PSRPEvent.create(
                    message.message_type, None, message.runspace_pool_id, message.pipeline_id
                )
                event._lab_commands = commands  # type: ignore[attr-defined]
                return event
        return super()._process_message(message)

    @staticmethod
    def take_commands(event: CreatePipelineEvent, pipeline: ServerPipeline) -> list[Command]:
        """The commands of ``event`` (a CreatePipeline of ``pipeline`` just returned)."""
        commands: list[Command] | None = getattr(event, "_lab_commands", None)
        return commands if commands is not None else commands_of(pipeline)


@dataclass
class PipelineRun:
    """Server-side state of one pipeline (one WinRM command)."""

    pipeline: ServerPipeline
    command_id: str
    queue: deque[bytes] = field(default_factory=deque)
    started: bool = False
    finished: bool = False  # the final PipelineState has been queued
    cancelled: bool = False
    fault: TransportFault | None = None
    done: threading.Event = field(default_factory=threading.Event)


class ShellClosed(Exception):
    """The shell was deleted while a request waited on it."""


class Shell:
    """One WinRM shell: a psrpcore ServerRunspacePool and its pipelines."""

    def __init__(
        self,
        shell_id: str,
        invoker: Invoker,
        fragment_size: int,
        threads: PipelineThreads | None = None,
    ) -> None:
        self.shell_id = shell_id
        self._invoker = invoker
        self._threads = threads if threads is not None else PipelineThreads()
        self.fragment_size = max(64, min(MAX_FRAGMENT, fragment_size))
        self.pool = LabRunspacePool()
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.pool_queue: deque[bytes] = deque()
        self.runs: dict[uuid.UUID, PipelineRun] = {}
        self.closed = False
        self.last_used = time.monotonic()

    def touch(self) -> None:
        """Note client activity (idle shells are closed like WinRM's IdleTimeOut)."""
        self.last_used = time.monotonic()

    # -- incoming data (callers hold no lock) -------------------------------------------------

    def open(self, creation: bytes) -> None:
        """Feed the Create request's creationXml (SessionCapability + InitRunspacePool)."""
        self._feed(creation, None)

    def command(self, command_id: str, data: bytes) -> PipelineRun:
        """Start a pipeline from a Command request's first fragment."""
        pid = uuid.UUID(command_id) if command_id else _peek_pipeline_id(data)
        with self.lock:
            if pid not in self.runs:
                # The pipeline must exist before its CreatePipeline message is processed.
                self.runs[pid] = PipelineRun(ServerPipeline(self.pool, pid), str(pid).upper())
            run = self.runs[pid]
        self._feed(data, pid)
        return run

    def send(self, command_id: str | None, data: bytes) -> None:
        """Feed a Send request's stdin/pr data."""
        pid = uuid.UUID(command_id) if command_id else None
        self._feed(data, pid)

    def _feed(self, data: bytes, pid: uuid.UUID | None) -> None:
        starts: list[tuple[PipelineRun, list[Command]]] = []
        with self.lock:
            if self.closed:
                raise ShellClosed(self.shell_id)
            self.pool.receive_data(PSRPPayload(data, StreamType.default, pid))
            while True:
                event = self.pool.next_event()
                if event is None:
                    break
                if isinstance(event, (CreatePipelineEvent, GetCommandMetadataEvent)):
                    run = self.runs.get(event.pipeline_id) if event.pipeline_id else None
                    if run is None:
                        continue
                    # Running without telling the client, as PowerShell does.
                    run.pipeline._change_state(PSInvocationState.Running, emit=False)
                    run.started = True
                    if isinstance(event, CreatePipelineEvent):
                        starts.append((run, self.pool.take_commands(event, run.pipeline)))
                    else:
                        run.pipeline.complete()
                        run.finished = True
                        run.done.set()
            self._drain()
        for run, commands in starts:
            self._threads.submit(self._execute, run, commands)

    # -- running a pipeline (off the lock) ---------------------------------------------------

    def _execute(self, run: PipelineRun, commands: list[Command]) -> None:
        result: InvokeResult | None = None
        error: ErrorInfo | None = None
        activity = commands[0].name if commands else ""
        try:
            result = self._invoker(commands)
        except CmdletError as exc:
            error = exc.info
        except TransportFault as fault:
            run.fault = fault
            error = ErrorInfo(
                f"The connection to the remote host failed ({fault.kind}).",
                "TransportFault",
                category="ConnectionError",
                exception_type="System.Net.WebException",
            )
        except Exception as exc:  # a lab bug must still end the pipeline, not hang the client
            log.exception("lab pipeline %s failed", activity)
            error = ErrorInfo(
                f"The lab failed to run {activity}: {exc}",
                "LabInternalError",
                category="NotSpecified",
                exception_type="System.InvalidOperationException",
            )
        with self.lock:
            if not run.cancelled and not self.closed:
                self._finish(run, result, error, activity)
                self._drain()
            run.done.set()
            self.cond.notify_all()

    def _finish(
        self, run: PipelineRun, result: InvokeResult | None, error: ErrorInfo | None, activity: str
    ) -> None:
        pipe = run.pipeline
        if result is not None:
            for obj in result.output:
                data = output_clixml(obj)
                if data is None:
                    pipe.write_output(to_ps_value(obj))
                else:
                    write_output_clixml(pipe, data)
            for info in result.errors:
                record = to_error_record(info, activity=activity)
                pipe.write_error(
                    record.Exception,
                    record.CategoryInfo,
                    record.TargetObject,
                    record.FullyQualifiedErrorId,
                )
            for text in result.warnings:
                pipe.write_warning(text)
            for text in result.verbose:
                pipe.write_verbose(text)
            complete(pipe)
        else:
            assert error is not None
            # psrpcore 0.3 has no public "fail" call: a terminating error is the Failed state
            # carrying the ErrorRecord, exactly what PowerShell sends.
            pipe._change_state(
                PSInvocationState.Failed, error=to_error_record(error, activity=activity)
            )
        run.finished = True

    # -- outgoing data (callers hold the lock) -----------------------------------------------

    def _drain(self) -> None:
        produced = False
        while True:
            payload = self.pool.data_to_send(self.fragment_size)
            if payload is None:
                break
            produced = True
            if payload.pipeline_id is None:
                self.pool_queue.append(payload.data)
            else:
                run = self.runs.get(payload.pipeline_id)
                if run is not None:
                    run.queue.append(payload.data)
        if produced:
            self.cond.notify_all()

    # -- Receive -----------------------------------------------------------------------------

    def receive(self, command_id: str | None, budget: int, timeout: float) -> ReceiveChunk | None:
        """Wait up to ``timeout`` for data; ``None`` means nothing to say (TimedOut)."""
        pid = uuid.UUID(command_id) if command_id else None
        with self.cond:
            run = self.runs.get(pid) if pid else None
            if pid is not None and run is None:
                # Already closed: nothing more will come.
                return ReceiveChunk([], str(pid).upper(), done=True)

            def ready() -> bool:
                if self.closed:
                    return True
                if run is None:
                    return bool(self.pool_queue)
                return bool(run.queue) or run.fault is not None

            self.cond.wait_for(ready, timeout=timeout)
            if self.closed:
                raise ShellClosed(self.shell_id)
            if run is not None and run.fault is not None and not run.queue:
                fault, run.fault = run.fault, None
                raise fault
            queue = self.pool_queue if run is None else run.queue
            if not queue:
                return None
            chunks: list[bytes] = []
            used = 0
            while queue and (not chunks or used + len(queue[0]) <= budget):
                chunk = queue.popleft()
                used += len(chunk)
                chunks.append(chunk)
            done = run is not None and run.finished and not run.queue
            return ReceiveChunk(chunks, run.command_id if run else None, done)

    def take_fault(self, run: PipelineRun) -> TransportFault | None:
        """Claim a transport fault raised while the pipeline's Command was being answered."""
        with self.lock:
            fault, run.fault = run.fault, None
            return fault

    # -- Signal / Delete ---------------------------------------------------------------------

    def signal(self, command_id: str, terminate: bool) -> None:
        """Stop (Ctrl+C) or terminate (close) one pipeline."""
        pid = uuid.UUID(command_id)
        with self.cond:
            run = self.runs.get(pid)
            if run is None:
                return
            pipe = run.pipeline
            if pipe.state in (PSInvocationState.Running, PSInvocationState.Stopping):
                run.cancelled = True
                pipe.stop()
                run.finished = True
            if terminate:
                if pipe.state == PSInvocationState.NotStarted:
                    run.cancelled = True
                pipe.close()
                del self.runs[pid]
            self._drain()
            self.cond.notify_all()

    def close(self) -> None:
        """Close open pipelines first (psrpcore requires it), then the pool."""
        with self.cond:
            if self.closed:
                return
            for run in list(self.runs.values()):
                run.cancelled = True
                pipe = run.pipeline
                if pipe.state in (PSInvocationState.Running, PSInvocationState.Stopping):
                    pipe.stop()
                pipe.close()
            self.runs.clear()
            try:
                self.pool.close()
            except Exception:  # a pool that never opened has nothing to close
                log.debug("closing pool of shell %s", self.shell_id, exc_info=True)
            self.closed = True
            self.cond.notify_all()


# The PipelineState message of a pipeline that completed, as psrpcore writes it.
COMPLETED_STATE = (
    f'<Obj RefId="0"><MS><I32 N="PipelineState">{int(PSInvocationState.Completed)}</I32></MS></Obj>'
).encode()


def _queue(pipe: ServerPipeline, message_type: PSRPMessageType, data: bytes) -> None:
    """What psrpcore's ``prepare_message`` does once a message is serialised as ``data``:
    queue it for the pipeline with the pool's next object id."""
    pool: Any = pipe.runspace_pool
    pool_id, pipeline_id = pool.runspace_pool_id, pipe.pipeline_id
    raw = create_message(pool._is_client, message_type, data, pool_id, pipeline_id)
    pool._send_buffer.append(
        PSRPMessage(
            message_type,
            bytearray(raw),
            pool_id,
            pipeline_id,
            pool._fragment_counter,
            StreamType.default,
        )
    )


def write_output_clixml(pipe: ServerPipeline, data: bytes) -> None:
    """``pipe.write_output(value)`` for a value already written as CLIXML ``data``: the same
    state check, then the PipelineOutput message."""
    if pipe.state != PSInvocationState.Running:
        raise InvalidPipelineState("write pipeline output", pipe.state, [PSInvocationState.Running])
    _queue(pipe, PSRPMessageType.PipelineOutput, data)


def complete(pipe: ServerPipeline) -> None:
    """``pipe.complete()``: the Completed PipelineState message (written once, above), then
    the pipeline's state."""
    _queue(pipe, PSRPMessageType.PipelineState, COMPLETED_STATE)
    pipe._change_state(PSInvocationState.Completed, emit=False)


class PipelineThreads:
    """Daemon threads that run one host's pipelines, kept for reuse while there is work.

    Starting a thread per pipeline costs a hand-over to the new thread on every cmdlet; an
    idle thread takes the next pipeline instead. There is no bound: every pipeline runs at
    once, as on a real host (a slow cmdlet must not hold up the next one). A thread idle for
    ``idle_timeout`` seconds ends, and :meth:`stop` ends the idle ones at once (the host goes
    down or the lab stops); the next pipeline starts a thread again. The threads are daemons,
    so a pipeline still sleeping in an injected latency never holds up the interpreter's exit.
    """

    def __init__(self, name: str = "lab-pipeline", idle_timeout: float = 30.0) -> None:
        self.name = name
        self.idle_timeout = idle_timeout
        self._cond = threading.Condition(threading.Lock())
        self._tasks: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        # Threads waiting for a task (including those already woken for one).
        self._idle: set[threading.Thread] = set()
        self._generation = 0  # bumped by stop(): threads of an older one end when idle
        self._count = 0

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on an idle thread, or on a new one when none is idle."""
        with self._cond:
            self._tasks.append((fn, args))
            if len(self._idle) >= len(self._tasks):
                self._cond.notify()
                return
            self._count += 1
            thread = threading.Thread(
                target=self._work,
                args=(self._generation,),
                name=f"{self.name}-{self._count}",
                daemon=True,
            )
        thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """End the idle threads now (and busy ones when their pipeline ends); waits for the
        idle ones."""
        with self._cond:
            self._generation += 1
            idle = list(self._idle)
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in idle:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _work(self, generation: int) -> None:
        me = threading.current_thread()
        while True:
            with self._cond:
                while not self._tasks:
                    if generation != self._generation:
                        return
                    self._idle.add(me)
                    try:
                        woken = self._cond.wait(self.idle_timeout)
                    finally:
                        self._idle.discard(me)
                    if not woken and not self._tasks:
                        return
                fn, args = self._tasks.popleft()
            try:
                fn(*args)
            except Exception:  # the task handles its own errors; keep the thread alive
                log.exception("lab pipeline thread: unexpected error")


def _peek_pipeline_id(data: bytes) -> uuid.UUID:
    """The pipeline id of the first PSRP message in a fragment (for clients without CommandId)."""
    # Fragment header: object id (8), fragment id (8), flags (1), length (4); then the
    # message: destination (4), type (4), runspace pool id (16), pipeline id (16).
    start = 21 + 4 + 4 + 16
    return uuid.UUID(bytes_le=bytes(data[start : start + 16]))
