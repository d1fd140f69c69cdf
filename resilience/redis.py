"""One place that turns a Redis URL into a client with bounded timeouts.

Every call into Redis must fail fast when Redis is down: a request must never hang on it.
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis

# Seconds. Loopback or same-datacentre Redis answers in well under a millisecond.
CONNECT_TIMEOUT = 0.5
COMMAND_TIMEOUT = 0.5
MAX_CONNECTIONS = 64


def create_pool(url: str) -> BlockingConnectionPool:
    """A bounded pool: a burst of callers waits (briefly) for a connection instead of failing
    or opening hundreds of sockets."""
    return BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=COMMAND_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=COMMAND_TIMEOUT,
        health_check_interval=30,
    )


def create_redis(url: str) -> Redis:
    """An asyncio Redis client for ``redis://``, ``rediss://`` or ``unix://`` URLs."""
    return Redis(connection_pool=create_pool(url))

