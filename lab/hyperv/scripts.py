"""Scripts (``AddScript`` text): recorded, succeed by default, or act out a behaviour.

A topology behaviour whose regex matches the script text gives its output, its error (a
terminating ``RuntimeException``, like ``throw``) and its duration in lab seconds. The caller
sleeps the duration outside every lock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from lab.objects import ErrorInfo
from lab.topology import ScriptBehaviour


@dataclass(frozen=True)
class ScriptOutcome:
    """What running a script amounts to: output objects, an error, a duration."""

    output: list[Any]
    error: ErrorInfo | None
    duration: float


def outcome(
    behaviours: tuple[ScriptBehaviour, ...], text: str, parameters: dict[str, Any]
) -> ScriptOutcome:
    """The first behaviour matching ``text`` (search, not full match); default: success."""
    for b in behaviours:
        if re.search(b.pattern, text):
            error = None
            if b.error is not None:
                error = ErrorInfo(
                    message=b.error,
                    fully_qualified_error_id=b.error,
                    category="OperationStopped",
                    target_object=b.error,
                    exception_type="System.Management.Automation.RuntimeException",
                )
            output = [_fill(o, parameters) for o in b.output]
            return ScriptOutcome(output, error, b.duration)
    return ScriptOutcome([], None, 0.0)


def _fill(value: Any, parameters: dict[str, Any]) -> Any:
    """Output strings may name parameters as ``{Name}``; unknown names stay as written."""
    if not isinstance(value, str):
        return value
    try:
        return value.format_map(_Keep({k: v for k, v in parameters.items() if k}))
    except (ValueError, IndexError):
        return value


class _Keep(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"
