"""Ferryman workers: the Celery app, its tasks, and one adapter per outside system.

``celery -A workers ...`` finds the app here as ``workers.celery``: Celery's own tools
(``inspect ping``, ``events``, ``control``, ``status``) on the broker of the ``FERRYMAN_*``
settings. It is built on first use, so importing an adapter never reads the settings. To run
a worker, use ``ferryman worker --site SITE``, which wires the engine and its store too.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "celery":
        from workers.app import celery

        return celery
    raise AttributeError(f"module 'workers' has no attribute {name!r}")
