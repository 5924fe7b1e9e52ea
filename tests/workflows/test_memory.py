"""A worker's freed memory goes back to the system (glibc's malloc_trim and mallopt)."""

from __future__ import annotations

import logging
import os
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


LARGE_BLOCKS = textwrap.dedent(
    """
    import ctypes, sys, threading
    from workflows.memory import keep_large_blocks_apart

    class MallInfo(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]

    mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    mallinfo2.restype = MallInfo
    if sys.argv[1] == "set":
        assert keep_large_blocks_apart()
    mapped = []
    def stage():  # in a pool thread: a large value built and dropped, then another
        first = bytes(8 * 2**20)  # its own mapping; freeing it raises glibc's threshold
        del first
        before = mallinfo2().hblkhd
        second = bytes(2 * 2**20)
        mapped.append(mallinfo2().hblkhd - before)
        del second
    worker = threading.Thread(target=stage)
    worker.start()
    worker.join()
    print(mapped[0])
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
@pytest.mark.parametrize("setting", ["set", "default"])
def test_a_large_block_keeps_its_own_mapping_after_a_larger_one_was_freed(setting: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    done = subprocess.run(
        [sys.executable, "-c", LARGE_BLOCKS, setting],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=env,
    )
    mapped = int(done.stdout)
    if setting == "set":
        assert mapped >= 2 * 2**20  # mapped apart, so freeing it unmaps it
    else:
        assert mapped == 0  # glibc's own rule: from the heap, where it leaves a hole


def test_the_environment_keeps_its_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[int, int]] = []

    def mallopt(param: int, value: int) -> int:
        asked.append((param, value))
        return 1

    monkeypatch.setattr(memory, "_mallopt", lambda: mallopt)
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert memory.keep_large_blocks_apart() is False
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    assert memory.keep_large_blocks_apart() is True
    assert asked == [(memory.M_MMAP_THRESHOLD, memory.MMAP_THRESHOLD)]
