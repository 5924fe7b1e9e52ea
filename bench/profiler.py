"""Where a worker process spends its CPU: py-spy samples aggregated into hot spots.

``py-spy record --gil`` samples only the thread holding the GIL, so the shares are shares of
the interpreter's busy time, not of threads waiting on locks or sockets. py-spy is a
benchmark aid, not a project dependency (``pip install py-spy``); without it the profile is
skipped with that reason.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT_DIRS = ("workers/", "workflows/", "plans/", "lab/")


@dataclass
class Profile:
    """The outcome: hot spots (function, file, inclusive share) or why there are none."""

    raw: Path
    skipped: str = ""
    samples: int = 0
    hot: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """JSON for latest.json."""
        if self.skipped:
            return {"skipped": self.skipped}
        return {"samples": self.samples, "hot_spots": self.hot, "raw": str(self.raw)}


@contextmanager
def sampling(pid: int, raw: Path, *, rate: int = 50) -> Iterator[Profile]:
    """Sample ``pid`` while the block runs; the profile is filled in when the block ends."""
    profile = Profile(raw)
    binary = shutil.which("py-spy")
    if binary is None:
        profile.skipped = "py-spy is not installed (pip install py-spy)"
        yield profile
        return
    argv = [binary, "record", "-p", str(pid), "-r", str(rate), "--gil", "--threads"]
    argv += ["--format", "raw", "-o", str(raw), "--nonblocking"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield profile
    finally:
        process.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            _, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            err = b"py-spy did not stop"
        if raw.exists():
            profile.samples, profile.hot = hot_spots(raw)
        else:
            profile.skipped = f"py-spy wrote no profile: {err.decode(errors='replace')[-300:]}"


def hot_spots(raw: Path, *, top: int = 20) -> tuple[int, list[dict[str, Any]]]:
    """Where the samples went, largest first, as ``{"where": file:function, ...}``.

    Project functions by inclusive share (the task wrappers every sample passes through, over
    90 %, are left out), then the library functions with the most samples of their own
    (``"self"``), which is where the time is finally spent.
    """
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        seen = set()
        frames = stack.split(";")
        leaf = _frame_key(frames[-1])
        if leaf:
            own[leaf] += samples
        for frame in frames:
            key = _frame_key(frame)
            if key and key not in seen:
                seen.add(key)
                inclusive[key] += samples
    if not total:
        return 0, []
    hot = [
        {"where": key, "share": round(n / total, 3)}
        for key, n in inclusive.most_common()
        if any(key.startswith(d) for d in PROJECT_DIRS) and n / total < 0.9
    ][:top]
    hot += [
        {"where": key, "self": round(n / total, 3)}
        for key, n in own.most_common()
        if not any(key.startswith(d) for d in PROJECT_DIRS)
    ][:10]
    return total, hot


def _frame_key(frame: str) -> str | None:
    # a raw frame reads "function (path/to/file.py:LINE)"
    if " (" not in frame or not frame.endswith(")"):
        return None
    function, _, location = frame.partition(" (")
    path = location.rstrip(")").rsplit(":", 1)[0]
    for directory in PROJECT_DIRS:
        index = path.find(directory)
        if index >= 0 and "site-packages" not in path:
            return f"{path[index:]}:{function}"
    return f"{path}:{function}"
