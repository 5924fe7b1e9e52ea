"""A Ferryman worker process for the reliability tests: ``python -m tests.reliability.worker_main``.

The same wiring as ``ferryman worker`` (settings from ``FERRYMAN_*``, the Celery app, the real
executors over pypsrp, the gate watch), with two test knobs: executors poll the lab every
0.1 s instead of 2 s, so a crash trial takes seconds, and logging goes to stderr at
``RELIABILITY_LOGLEVEL`` (default INFO) so a test can read everything the worker said.
"""

from __future__ import annotations

import logging
import os
import sys

from workers.app import queues_for
from workers.embedded import build_runtime
from workers.tasks import default_executor
from workflows.memory import keep_large_blocks_apart
from workflows.recovery import Watch
from workflows.settings import Settings

SITES = ("stockholm", "gothenburg")


def main() -> None:
    """Run the worker until SIGTERM (warm shutdown) or SIGKILL (the tests' crash)."""
    level = os.environ.get("RELIABILITY_LOGLEVEL", "INFO")
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    settings = Settings.from_env()
    keep_large_blocks_apart()  # as ferryman worker does before its pool's threads exist
    runtime = build_runtime(settings, default_executor(poll_interval=0.1))
    watch = Watch(runtime.engine, interval=1.0).start()
    try:
        runtime.app.Worker(
            queues=queues_for(SITES),
            pool="threads",
            concurrency=settings.worker_concurrency,
            loglevel=level,
            hostname=f"reliability-{os.getpid()}@%h",
        ).start()
    finally:
        watch.stop()


if __name__ == "__main__":
    main()
