"""Throwaway servers for the reliability tests: redis-server and a PostgreSQL cluster.

They live in :mod:`tests.support.servers`, with every other server tests and benchmarks
start; the names stay importable from here.
"""

from tests.support.servers import (
    LOOPBACK,
    START_TIMEOUT,
    PostgresCluster,
    RedisServer,
    free_port,
    postgres_bin,
    wait_for,
)

__all__ = [
    "LOOPBACK",
    "START_TIMEOUT",
    "PostgresCluster",
    "RedisServer",
    "free_port",
    "postgres_bin",
    "wait_for",
]
