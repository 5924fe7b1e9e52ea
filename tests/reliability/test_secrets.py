"""Secrets stay secret: after a full planned failover with a WinRM password (``env:``) and a
TSIG key (``file:``), neither value appears in any log, table, broker message or report.

Captured: the worker process's log at DEBUG (pypsrp, spnego, kombu, Celery, Ferryman), this
process's (the engine's) log at DEBUG, every command Redis received during the run
(``redis-cli monitor``, with base64 payloads decoded), every Redis key left afterwards,
every row of every table, and the run report.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import subprocess
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import inspect, text

from tests.reliability.conftest import SpawnWorker
from tests.reliability.drill import Stack, planned_run
from tests.support.bind import BindServers
from tests.support.servers import wait_for
from workflows import report

BASE64_TOKEN = re.compile(rb"[A-Za-z0-9+/]{16,}={0,2}")


def tsig_secret(key_file: Path) -> str:
    match = re.search(r'secret "([^"]+)"', key_file.read_text())
    assert match, key_file.read_text()
    return match.group(1)


def decoded(raw: bytes) -> bytes:
    """``raw`` plus every base64 token in it decoded (kombu puts bodies in base64)."""
    parts = [raw]
    for token in BASE64_TOKEN.findall(raw):
        try:
            parts.append(base64.b64decode(token + b"=" * (-len(token) % 4)))
        except (binascii.Error, ValueError):
            continue
    return b"\n".join(parts)


def redis_dump(stack: Stack) -> bytes:
    """Every key of the broker (db 0) and result backend (db 1), with its value."""
    chunks: list[bytes] = []
    for db in (0, 1):
        client = stack.redis.client(db)
        for key in client.scan_iter():
            kind = client.type(key)
            values: list[Any] = []
            # redis-py types a reply as sync-or-async: this client is sync
            if kind == b"string":
                values = [client.get(key) or b""]
            elif kind == b"list":
                values = list(cast(list[Any], client.lrange(key, 0, -1)))
            elif kind == b"hash":
                values = [
                    v for pair in cast(dict[Any, Any], client.hgetall(key)).items() for v in pair
                ]
            elif kind == b"set":
                values = list(cast(set[Any], client.smembers(key)))
            elif kind == b"zset":
                values = list(cast(list[Any], client.zrange(key, 0, -1)))
            chunks.append(bytes(key) + b" " + b"\n".join(bytes(v) for v in values))
    return b"\n".join(chunks)


def database_dump(runtime: object) -> str:
    """Every row of every table, as text."""
    engine = runtime.db.engine  # type: ignore[attr-defined]
    rows: list[str] = []
    with engine.connect() as connection:
        for table in inspect(engine).get_table_names():
            for row in connection.execute(text(f'SELECT * FROM "{table}"')):
                rows.append(f"{table}: {tuple(row)}")
    return "\n".join(rows)


def test_no_secret_in_logs_tables_messages_or_report(
    stack: Stack,
    bind: BindServers,
    spawn_worker: SpawnWorker,
    lab_password: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secrets = {"WinRM password": lab_password, "TSIG secret": tsig_secret(bind.key_file)}
    stack.extra_env["RELIABILITY_LOGLEVEL"] = "DEBUG"
    caplog.set_level(logging.DEBUG)
    worker = spawn_worker("debug")
    monitor_log = stack.directory / "redis-monitor.log"
    with open(monitor_log, "wb") as out:
        monitor = subprocess.Popen(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(stack.redis.port), "monitor"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: monitor_log.stat().st_size > 0, timeout=10, what="redis monitor")
        with planned_run(stack, bind) as (runtime, run):
            with runtime.db.session() as session:
                run_report = json.dumps(report.build(session, run.id), default=str)
            tables = database_dump(runtime)
            broker_keys = redis_dump(stack)
    finally:
        monitor.terminate()
        monitor.wait(timeout=10)
    worker_log = worker.log()
    commands = decoded(monitor_log.read_bytes())
    # the captures are real: they hold the run's traffic
    assert "pypsrp" in worker_log and "DEBUG" in worker_log
    assert b"LPUSH" in commands.upper() and b"ferryman.vm.steps" in commands
    assert "update_dns" in tables and run.id in run_report
    assert "env:FERRYMAN_LAB_PASSWORD" in tables  # the reference is kept, not the value
    places = {
        "worker log": worker_log.encode(),
        "engine log": caplog.text.encode(),
        "redis commands": commands,
        "redis keys": decoded(broker_keys),
        "database": tables.encode(),
        "run report": run_report.encode(),
    }
    leaks = [
        f"{what} in {where}"
        for what, value in secrets.items()
        for where, content in places.items()
        if value.encode() in content
    ]
    assert leaks == []
    sizes = {where: len(content) for where, content in places.items()}
    print(f"\nsearched for 2 secrets in {sizes} bytes: no leak")
