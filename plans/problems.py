"""Problems found in plan and fabric files, each with the place it was found.

Validation never stops at the first problem: it collects them all, each with the file, the
line and column of the offending YAML node, and the path into the document, so an operator can
fix a file in one pass.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from plans.errors import ConfigurationError

# A path into a document: mapping keys and list indices, e.g. ("plans", "x", "groups", 1).
DocPath = tuple[str | int, ...]


class Severity(enum.StrEnum):
    """How bad a problem is: errors refuse the files, warnings only inform."""

    ERROR = "error"
    WARNING = "warning"


def format_path(path: DocPath) -> str:
    """Render a document path as ``plans.three-tier.groups[1].vms[0].name``.

    Keys that contain dots or brackets (DNS zone names, for instance) are quoted so the path
    stays unambiguous: ``fabric.dns_zones["corp.example"].site``.
    """
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif any(ch in part for ch in '.[]" ') or not part:
            out += f'["{part}"]'
        else:
            out += f".{part}" if out else part
    return out


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong (or suspicious) in a file.

    ``line`` and ``col`` are 1-based; 0 means the problem concerns the file as a whole.
    ``str(problem)`` is ``FILE:LINE:COL: message`` (warnings say so after the position), the
    form editors and CI annotate.
    """

    file: str
    line: int
    col: int
    message: str
    path: DocPath = field(default=(), compare=False)
    severity: Severity = Severity.ERROR

    def __post_init__(self) -> None:
        # A problem is one line whatever the file held: names with newlines or control
        # characters are shown escaped, so a crafted file cannot forge extra output lines.
        for name in ("file", "message"):
            text = getattr(self, name)
            if not text.isprintable():
                clean = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
                object.__setattr__(self, name, clean)

    @property
    def is_error(self) -> bool:
        """Whether this problem refuses the files."""
        return self.severity is Severity.ERROR

    @property
    def path_text(self) -> str:
        """The document path as text (empty for whole-file problems)."""
        return format_path(self.path)

    def __str__(self) -> str:
        prefix = "warning: " if self.severity is Severity.WARNING else ""
        return f"{self.file}:{self.line}:{self.col}: {prefix}{self.message}"


def sort_problems(problems: Iterable[Problem]) -> list[Problem]:
    """Problems in file order (file, line, column), duplicates removed."""
    unique = {(p.file, p.line, p.col, p.message, p.severity): p for p in problems}
    return sorted(unique.values(), key=lambda p: (p.file, p.line, p.col, p.message))


class PlanInvalid(ConfigurationError):
    """Plan or fabric files have errors; ``problems`` lists every one of them.

    ``str()`` lists each problem as ``FILE:LINE:COL: message``: fix them and load again
    (``ferryman plan validate FILE`` prints the same list).
    """

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        errors = [p for p in self.problems if p.is_error]
        head = f"{len(errors)} error(s) in plan files; fix them and load again:"
        super().__init__("\n".join([head, *(str(p) for p in self.problems)]))
