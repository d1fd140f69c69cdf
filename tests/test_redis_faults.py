"""A slow or frozen Redis is paid for once, not by every request (SECURITY 48, 57; issue 10.4).

Each test starts its own ``redis-server`` and freezes it with SIGSTOP, or keeps it busy with a
long Lua script run from a separate connection; only that process is ever signalled or killed.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from resilience import FailurePolicy, LimiterUnavailable, RateLimiter, create_redis
from resilience.ratelimit import REDIS_DEADLINE
from tests.support.own_servers import OwnRedis
from tests.support.processes import Server

# Runs for ARGV[1] microseconds: Redis answers nobody meanwhile.
BUSY_LUA = """
local function now() local t = redis.call('TIME'); return t[1] * 1000000 + t[2] end
local start = now()
while now() - start < tonumber(ARGV[1]) do end
return 1
"""
RECOVERY_BOUND = 5.0  # seconds from the end of the fault until Redis is used again
WORKERS = 16


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    server = OwnRedis()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def client(own_redis: OwnRedis) -> AsyncIterator[Redis]:
    redis = create_redis(own_redis.url)
    yield redis
    await redis.aclose()


@dataclass
class Run:
    decisions: int
    degraded: int
    slowest: float

    def rate(self, seconds: float) -> float:
        return self.decisions / seconds


async def hammer(decide: Callable[[], Awaitable[bool]], seconds: float) -> Run:
    """``WORKERS`` concurrent callers deciding for ``seconds``; ``decide`` says if degraded."""
    run = Run(0, 0, 0.0)
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        while time.monotonic() < deadline:
            started = time.monotonic()
            degraded = await decide()
            run.slowest = max(run.slowest, time.monotonic() - started)
            run.decisions += 1
            run.degraded += degraded

    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    return run


def limiter(redis: Redis, policy: FailurePolicy = FailurePolicy.OPEN) -> RateLimiter:
    return RateLimiter(redis, "1000000/minute", namespace=f"faults-{uuid.uuid4().hex}",
                       policy=policy)


def decider(limit: RateLimiter) -> Callable[[], Awaitable[bool]]:
    async def decide() -> bool:
        return (await limit.hit("org", uuid.uuid4().hex[:4])).degraded
    return decide


async def until(predicate: Callable[[], Awaitable[bool]], timeout: float) -> float:
    """Seconds until ``predicate()`` holds, polling; fails past ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if await predicate():
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout} s")


def state_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "resilience.health"]


async def test_a_frozen_redis_is_waited_for_once_then_skipped_until_it_thaws(
    own_redis: OwnRedis, client: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="resilience.health")
    limit = limiter(client)
    decide = decider(limit)
    normal = await hammer(decide, 1.0)
    assert normal.degraded == 0

    own_redis.freeze()
    first = await hammer(decide, 0.1)  # the callers that find out wait, within the bound
    assert first.degraded > 0 and first.slowest <= REDIS_DEADLINE + 0.2
    frozen = await hammer(decide, 2.0)
    assert frozen.degraded == frozen.decisions  # nobody asked Redis, nobody waited for it
    assert frozen.slowest < 0.3  # well under the 0.5 s Redis timeout nobody should wait for
    assert frozen.rate(2.0) >= 0.5 * normal.rate(1.0)
    assert limit.health.status == "degraded"

    own_redis.thaw()
    await until(lambda: _not_degraded(limit), RECOVERY_BOUND)
    lines = state_lines(caplog)
    assert len(lines) == 2, lines
    assert lines[0].startswith("rate-limit store unavailable (") and "failing open" in lines[0]
    admitted = first.degraded + frozen.decisions
    assert lines[1].startswith("rate-limit store back after ")
    reported = int(lines[1].split("; ")[1].split()[0])
    assert reported >= admitted  # every decision taken without Redis is accounted for


async def _not_degraded(limit: RateLimiter) -> bool:
    return not (await limit.hit("org", "probe")).degraded


async def test_a_long_script_makes_redis_slow_and_fail_closed_refuses_at_once(
    own_redis: OwnRedis, client: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="resilience.health")
    limit = limiter(client, FailurePolicy.CLOSED)

    async def decide() -> bool:
        try:
            await limit.hit("org", "user")
        except LimiterUnavailable:
            return True
        return False

    normal = await hammer(decide, 1.0)
    assert normal.degraded == 0
    busy_client = Redis.from_url(own_redis.url)  # no timeout: it waits for its own script

    async def run_script() -> Any:
        return await busy_client.eval(BUSY_LUA, 0, "2500000")

    script = asyncio.create_task(run_script())
    try:
        await until(decide, 2.0)  # the script started, and one caller timed out on it
        busy = await hammer(decide, 1.5)
        assert busy.degraded == busy.decisions and busy.slowest < 0.3
        assert busy.rate(1.5) >= 0.5 * normal.rate(1.0)
        await script
        ended = time.monotonic()
        await until(lambda: _admits(limit), RECOVERY_BOUND)
        assert time.monotonic() - ended < RECOVERY_BOUND
    finally:
        await asyncio.gather(script, return_exceptions=True)
        await busy_client.aclose()
    lines = state_lines(caplog)
    assert len(lines) == 2, lines
    assert "(TimeoutError); failing closed" in lines[0]
    assert "requests admitted without a limit" in lines[1] and " 0 requests" in lines[1]


async def _admits(limit: RateLimiter) -> bool:
    try:
        await limit.hit("org", "user")
    except LimiterUnavailable:
        return False
    return True


# The gateway: requests, readiness and its log while its Redis is frozen -------------------------


def _timed_get(server: Server, path: str, token: str) -> tuple[int, float]:
    started = time.monotonic()
    resp = httpx.get(server.url + path, headers={"Authorization": f"Bearer {token}"},
                     timeout=10)
    return resp.status_code, time.monotonic() - started


def test_gateway_skips_a_frozen_redis_and_says_degraded(
    own_redis: OwnRedis, start_gateway: Any, alice_token: str
) -> None:
    gateway = start_gateway(redis_url=own_redis.url)
    assert _timed_get(gateway, "/v1/sessions", alice_token)[0] == 200
    assert httpx.get(gateway.url + "/readyz").json()["status"] == "ready"

    own_redis.freeze()
    try:
        first = _timed_get(gateway, "/v1/sessions", alice_token)
        assert first[0] == 200 and first[1] <= REDIS_DEADLINE + 1.0  # fail open, bounded
        after = [_timed_get(gateway, "/v1/sessions", alice_token) for _ in range(20)]
        assert all(status == 200 for status, _ in after)
        assert sorted(t for _, t in after)[10] < 0.25  # not the 0.5 s timeout each
        ready = httpx.get(gateway.url + "/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["status"] == "degraded" and body["checks"]["redis"]["degraded"] is True
    finally:
        own_redis.thaw()
    deadline = time.monotonic() + RECOVERY_BOUND
    while "rate-limit store back after" not in gateway.log_text():
        assert time.monotonic() < deadline, gateway.log_text()
        _timed_get(gateway, "/v1/sessions", alice_token)
        time.sleep(0.05)
    log = gateway.log_text()
    assert log.count("rate-limit store unavailable") == 1
    assert log.count("rate-limit store back after") == 1
    assert httpx.get(gateway.url + "/readyz").json()["status"] == "ready"
    gateway.stop()
