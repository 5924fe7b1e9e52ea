"""PowerShell wildcard patterns (``WildcardPattern``): ``*``, ``?``, ``[abc]``, ``[a-z]``.

A backtick escapes the next character, so ``WildcardPattern.Escape`` output (what a careful
client sends for a literal name such as a recovery point's) matches only itself. Matching
ignores case, as the Hyper-V cmdlets' ``-Name`` parameters do. ``fnmatch`` would read
``[`` differently and know nothing of backticks.
"""

from __future__ import annotations

import re
from functools import lru_cache

_SPECIAL = "*?["


def has_wildcards(pattern: str) -> bool:
    """True when ``pattern`` has an unescaped ``*``, ``?`` or ``[``."""
    escaped = False
    for ch in pattern:
        if escaped:
            escaped = False
        elif ch == "`":
            escaped = True
        elif ch in _SPECIAL:
            return True
    return False


def matches(pattern: str, text: str) -> bool:
    """True when ``text`` matches the whole of ``pattern`` (case-insensitive)."""
    return _compile(pattern).fullmatch(text) is not None


def unescape(pattern: str) -> str:
    """``pattern`` with its backtick escapes removed (the literal it stands for)."""
    return re.sub(r"`(.)", r"\1", pattern)


@lru_cache(maxsize=256)
def _compile(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "`" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                # An unclosed bracket: PowerShell refuses the pattern; nothing matches.
                return re.compile(r"(?!)")
            body = pattern[i + 1 : end].replace("\\", "\\\\").replace("^", "\\^")
            out.append(f"[{body}]")
            i = end + 1
            continue
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)
