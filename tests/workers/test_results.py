"""Sending tasks subscribes to no result: Ferryman reads runs from the store, so a result
object dropped after Redis has gone has nothing to unsubscribe (no reconnect at exit)."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from celery import chord, group
from celery._state import _set_task_join_will_block, task_join_will_block

from tests.support.servers import redis_server
from workers.app import UnawaitedRedisBackend, create_app
from workflows.settings import Settings


@pytest.fixture
def outside_a_worker() -> Iterator[None]:
    """Celery's process-wide flag as in a process that is no worker (an embedded worker in
    an earlier test may have set it)."""
    before = task_join_will_block()
    _set_task_join_will_block(False)
    yield
    _set_task_join_will_block(before)


def test_sent_tasks_and_chords_leave_no_subscription_to_unsubscribe_later(
    outside_a_worker: None, tmp_path: Any
) -> None:
    unraisable: list[Any] = []
    previous_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    try:
        with redis_server() as redis:
            settings = Settings(
                broker_url=redis.url(0),
                result_backend=redis.url(1),
                database_url=f"sqlite:///{tmp_path / 'store.db'}",
            )
            app = create_app(settings)
            assert isinstance(app.backend, UnawaitedRedisBackend)
            sent = [
                app.send_task("ferryman.test.one", queue="nobody"),
                chord(
                    group(app.signature("ferryman.test.part", queue="nobody") for _ in range(3)),
                    app.signature("ferryman.test.callback", queue="nobody", immutable=True),
                ).apply_async(),
            ]
            assert len(sent) == 2
            consumer = app.backend.result_consumer
            assert not consumer.subscribed_to
        # Redis has gone: dropping the results must not try to reach it
        del sent
        gc.collect()
    finally:
        sys.unraisablehook = previous_hook
    assert unraisable == []
