"""Test doubles for the Hyper-V adapter: a scripted PowerShellRunner and a fake clock."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from workers.powershell import PSError, PSResult

Answer = PSResult | BaseException | Callable[[dict[str, Any], tuple[str, ...]], PSResult]


@dataclass
class Call:
    """One recorded runner call."""

    cmdlet: str
    parameters: dict[str, Any]
    switches: tuple[str, ...]
    pipeline: str = ""  # "A | B" when the call was one command of a pipeline


@dataclass
class FakeRunner:
    """Answers each cmdlet from ``answers`` (a result, an exception, or a function of the
    parameters); records every call. Unknown cmdlets answer an empty result.

    A pipeline is answered as one call keyed ``"A | B"`` (its function gets the last
    command's parameters and switches); each of its commands is recorded in ``calls``.
    """

    answers: dict[str, list[Answer]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)

    def on(self, cmdlet: str, *answers: Answer) -> FakeRunner:
        """Queue answers for ``cmdlet``; the last one repeats."""
        self.answers.setdefault(cmdlet, []).extend(answers)
        return self

    def run(
        self,
        cmdlet: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        switches: Sequence[str] = (),
        timeout: float | None = None,
    ) -> PSResult:
        params = dict(parameters or {})
        self.calls.append(Call(cmdlet, params, tuple(switches)))
        return self._answer(cmdlet, params, tuple(switches))

    def run_pipeline(
        self,
        commands: Sequence[tuple[str, Mapping[str, Any], Sequence[str]]],
        *,
        timeout: float | None = None,
    ) -> PSResult:
        label = " | ".join(cmdlet for cmdlet, _, _ in commands)
        for cmdlet, parameters, switches in commands:
            self.calls.append(Call(cmdlet, dict(parameters), tuple(switches), label))
        _, last_params, last_switches = commands[-1]
        return self._answer(label, dict(last_params), tuple(last_switches))

    def _answer(self, key: str, params: dict[str, Any], switches: tuple[str, ...]) -> PSResult:
        queue = self.answers.get(key, [])
        answer: Answer = (queue.pop(0) if len(queue) > 1 else queue[0]) if queue else PSResult()
        if isinstance(answer, BaseException):
            raise answer
        if callable(answer):
            return answer(params, switches)
        return answer

    def run_script(
        self,
        script: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> PSResult:
        return self.run("<script>", parameters, timeout=timeout)


def output(*objects: dict[str, Any]) -> PSResult:
    """A result with these output objects."""
    return PSResult(output=list(objects))


def error(message: str, fq_id: str, category: str = "ObjectNotFound") -> PSResult:
    """A result with one non-terminating error record."""
    return PSResult(errors=[PSError(message, fq_id, category, "")], had_errors=True)


class FakeClock:
    """A monotonic clock that only moves when ``sleep`` is called; records the sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
