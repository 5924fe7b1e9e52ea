"""A finished run's freed memory goes back to the system (glibc's malloc_trim)."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest

from workflows import memory

PROBE = textwrap.dedent(
    """
    import threading
    from workflows.memory import release_freed_memory

    def rss_kb():
        with open("/proc/self/status") as status:
            return next(int(l.split()[1]) for l in status if l.startswith("VmRSS:"))

    kept = []
    def churn():  # in a thread of its own, as a pool's step runs: glibc gives it an arena
        blocks = [bytes(2048) for _ in range(60_000)]
        kept.extend(blocks[::64])  # a few survivors keep the freed space from being the top
    worker = threading.Thread(target=churn)
    worker.start()
    worker.join()
    before = rss_kb()
    release_freed_memory()
    print(before, rss_kb())
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_memory_freed_in_a_pool_thread_is_returned() -> None:
    assert memory._malloc_trim() is not None
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120
    )
    before, after = map(int, done.stdout.split())
    assert before - after > 50_000  # of the ~120 MB freed, most goes back (kB)


def test_a_failing_trim_never_fails_the_run_end(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    asked: list[int] = []

    def broken(pad: int) -> int:
        asked.append(pad)
        raise OSError("no")

    monkeypatch.setattr(memory, "_malloc_trim", lambda: broken)
    with caplog.at_level(logging.DEBUG, logger="workflows.memory"):
        memory.release_freed_memory()
    assert asked == [0]
    assert "malloc_trim failed: no" in caplog.text
