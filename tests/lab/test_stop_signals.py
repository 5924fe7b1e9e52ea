"""``ferryman lab serve`` ends on SIGTERM or SIGINT whenever it arrives: before the lab waits,
while it waits, or while it enters the wait (where setting an Event from a handler deadlocks)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

HAMMER = """
import os, random, signal, threading
from lab.cli import _StopSignals

pid = os.getpid()
for round in range(10000):
    with _StopSignals() as stop:
        sig = random.choice(_StopSignals.SIGNALS)
        if round % 10 == 0:
            os.kill(pid, sig)  # before the wait: must not be lost
            stop.wait()
            continue
        go = threading.Event()

        def fire():
            go.wait()
            for _ in range(random.randrange(200)):  # land anywhere in the wait's set-up
                pass
            os.kill(pid, sig)

        thread = threading.Thread(target=fire)
        thread.start()
        go.set()
        stop.wait()
        thread.join()
print(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, signal.set_wakeup_fd(-1))
"""


def test_every_stop_signal_ends_the_wait_and_the_handlers_are_restored() -> None:
    done = subprocess.run(
        [sys.executable, "-c", HAMMER],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # SIGTERM's default handler is back and no wakeup descriptor is left behind
    assert done.stdout.split() == ["True", "-1"]
