"""The distributed rate limiter and the combined admission against real Redis (SECURITY 46-48).

Time is Redis's own clock, except where a test passes ``clock`` to see the sliding window move.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from resilience import (
    BreakerState,
    CircuitBreaker,
    FailurePolicy,
    LimiterUnavailable,
    RateLimiter,
    admit,
    create_redis,
)
from tests.support.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
DAY = 86_400.0
WINDOW_START = 20_000 * DAY  # a "per day" window begins here


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = create_redis(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def unreachable() -> AsyncIterator[Redis]:
    client = create_redis(f"redis://127.0.0.1:{free_port()}/0")
    yield client
    await client.aclose()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def limiter(redis: Redis, limit: str, policy: FailurePolicy = FailurePolicy.OPEN,
            clock: Callable[[], float] | None = None, namespace: str = "") -> RateLimiter:
    return RateLimiter(redis, limit, namespace=namespace or f"test-{uuid.uuid4().hex}",
                       policy=policy, clock=clock)


async def test_concurrent_hits_admit_exactly_the_limit(redis: Redis) -> None:
    limit = limiter(redis, "100/minute")
    decisions = await asyncio.gather(*(limit.hit("org", "user") for _ in range(500)))
    assert sum(d.allowed for d in decisions) == 100
    refused = [d for d in decisions if not d.allowed]
    assert all(1 <= d.retry_after <= 61 for d in refused)


CHILD = """
import asyncio, json, sys
from resilience import RateLimiter, create_redis

async def main(url, namespace, count):
    redis = create_redis(url)
    limit = RateLimiter(redis, "100/minute", namespace=namespace)
    print("ready", flush=True)
    sys.stdin.readline()
    decisions = await asyncio.gather(*(limit.hit("org", "user") for _ in range(count)))
    print(json.dumps(sum(d.allowed for d in decisions)), flush=True)
    await redis.aclose()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def test_two_processes_sharing_redis_admit_exactly_the_limit(redis_url: str) -> None:
    namespace = f"test-{uuid.uuid4().hex}"
    racers = [subprocess.Popen([sys.executable, "-c", CHILD, redis_url, namespace, "250"],
                               cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True) for _ in range(2)]
    for racer in racers:  # both loaded and connected before either starts
        assert racer.stdout is not None and racer.stdout.readline().strip() == "ready"
    for racer in racers:
        assert racer.stdin is not None
        racer.stdin.write("go\n")
        racer.stdin.flush()
    admitted = [json.loads(racer.communicate(timeout=60)[0]) for racer in racers]
    assert all(racer.returncode == 0 for racer in racers)
    assert sum(admitted) == 100


async def test_identifiers_with_separators_never_share_a_bucket(redis: Redis) -> None:
    limit = limiter(redis, "1/minute")
    for identifiers in (("a/b", "c"), ("a", "b/c"), ("a:b", "c"), ("a", "b:c"), ("a%2Fb", "c"),
                        ("a%3Ab", "c"), ("a", "b", "c")):
        assert (await limit.hit(*identifiers)).allowed, identifiers
    assert not (await limit.hit("a/b", "c")).allowed
    assert not (await limit.hit("a", "b:c")).allowed


async def test_previous_window_weighs_in_and_retry_after_is_exact(redis: Redis) -> None:
    clock = Clock(WINDOW_START - DAY / 2)
    limit = limiter(redis, "4/day", clock=clock)
    for _ in range(4):
        assert (await limit.hit("u")).allowed
    refused = await limit.hit("u")
    assert not refused.allowed and refused.remaining == 0
    # Next window begins in half a day; then the 4 hits weigh 4 * (1 - f) until 4(1-f) + 1 <= 4.
    assert refused.retry_after == int(DAY / 2 + DAY / 4)
    clock.now = WINDOW_START + DAY / 4 - 1
    assert not (await limit.hit("u")).allowed  # weighted 4 * 0.75... + 1 > 4
    clock.now = WINDOW_START + DAY / 4
    allowed = await limit.hit("u")
    assert allowed.allowed and allowed.remaining == 0
    clock.now = WINDOW_START + DAY / 2  # previous weighs 2, current 1: room for one more
    assert (await limit.hit("u")).allowed
    assert not (await limit.hit("u")).allowed
    clock.now = WINDOW_START + 3 * DAY  # idle windows forget everything
    assert (await limit.hit("u")).remaining == 3


async def test_refused_answers_retry_when_the_previous_window_fades(redis: Redis) -> None:
    clock = Clock(WINDOW_START - 1)
    limit = limiter(redis, "2/day", clock=clock)
    for _ in range(2):
        assert (await limit.hit("u")).allowed
    clock.now = WINDOW_START + 1  # previous window still weighs ~2
    refused = await limit.hit("u")
    assert not refused.allowed
    assert refused.retry_after == int(DAY / 2) - 1  # 2 * (1 - f) + 1 <= 2 at f = 1/2
    clock.now = WINDOW_START + 1 + refused.retry_after
    assert (await limit.hit("u")).allowed


async def test_a_request_refused_by_one_limit_counts_against_none(redis: Redis) -> None:
    user = limiter(redis, "1/minute")
    org = limiter(redis, "10/minute")
    first = await admit([user.bucket("acme", "alice"), org.bucket("acme")])
    assert first.admitted
    second = await admit([user.bucket("acme", "alice"), org.bucket("acme")])
    assert not second.admitted
    assert [d.allowed for d in second.decisions] == [False, True]
    assert second.decisions[0].retry_after >= 1
    assert (await org.hit("acme")).remaining == 8  # only the first request and this one


@pytest.fixture
def breaker(redis: Redis) -> CircuitBreaker:
    return CircuitBreaker(redis, "provider", failure_threshold=1, reset_timeout=60,
                          namespace=f"test-breaker-{uuid.uuid4().hex}")


async def fail_once(breaker: CircuitBreaker) -> None:
    with pytest.raises(ConnectionError):
        async with breaker.guard():
            raise ConnectionError("provider down")


async def test_an_open_breaker_refuses_and_nothing_is_counted(
    redis: Redis, breaker: CircuitBreaker
) -> None:
    limit = limiter(redis, "5/minute")
    assert (await admit([limit.bucket("u")], breaker)).ticket is not None
    await fail_once(breaker)
    refused = await admit([limit.bucket("u")], breaker)
    assert not refused.admitted and refused.decisions[0].allowed
    assert refused.ticket is not None and not refused.ticket.admitted
    assert refused.ticket.retry_after > 50
    assert (await limit.hit("u")).remaining == 3  # the refused request took nothing


async def test_a_limit_refusal_takes_no_half_open_slot_and_release_gives_one_back(
    redis: Redis,
) -> None:
    clock = Clock(1_000_000.0)
    breaker = CircuitBreaker(redis, "provider", failure_threshold=1, reset_timeout=60,
                             clock=clock, namespace=f"test-breaker-{uuid.uuid4().hex}")
    await fail_once(breaker)
    clock.now += 61
    assert await breaker.state() is BreakerState.HALF_OPEN
    full = limiter(redis, "1/minute")
    await full.hit("u")
    assert (await admit([full.bucket("u")], breaker)).ticket is None  # no slot taken
    spare = limiter(redis, "5/minute")
    trial = (await admit([spare.bucket("u")], breaker)).ticket
    assert trial is not None and trial.admitted and trial.state is BreakerState.HALF_OPEN
    second = (await admit([spare.bucket("u")], breaker)).ticket
    assert second is not None and not second.admitted  # the only slot is taken
    await breaker.release(trial)
    again = (await admit([spare.bucket("u")], breaker)).ticket
    assert again is not None and again.admitted
    async with breaker.guard(again):
        pass
    assert await breaker.state() is BreakerState.CLOSED


@pytest.mark.parametrize("policy", [FailurePolicy.OPEN, FailurePolicy.CLOSED])
async def test_unreachable_redis_follows_the_policy_quickly(
    unreachable: Redis, policy: FailurePolicy
) -> None:
    limit = limiter(unreachable, "10/minute", policy)
    started = time.perf_counter()
    if policy is FailurePolicy.OPEN:
        decision = await limit.hit("org", "user")
        assert decision.allowed and decision.degraded
    else:
        with pytest.raises(LimiterUnavailable):
            await limit.hit("org", "user")
    assert time.perf_counter() - started < 2


async def test_unreachable_redis_admits_through_the_local_breaker(unreachable: Redis) -> None:
    breaker = CircuitBreaker(unreachable, "provider", failure_threshold=1)
    admission = await admit([limiter(unreachable, "10/minute").bucket("u")], breaker)
    assert admission.admitted
    assert admission.ticket is not None and admission.ticket.local
    assert not breaker.shared  # Redis is skipped for a while instead of timing out each call
