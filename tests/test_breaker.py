"""The shared circuit breaker against real Redis, and across processes (SECURITY.md 50).

The behavioural tests run twice: on the shared (Redis) breaker and on the local breaker it falls
back to when Redis is unreachable. Time is an injected clock, so no test sleeps and hopes.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
from redis.asyncio import Redis

from resilience import BreakerState, CircuitBreaker, CircuitOpen, ResilienceError, create_redis

REDIS_URL = ""  # the session's test Redis; set by _use_session_redis before any test runs
ROOT = Path(__file__).resolve().parent.parent
RESET = 60.0
START = 1_000_000.0


class BusinessError(Exception):
    """The dependency answered, with an error that is the caller's business (e.g. a 404)."""


def not_business(exc: Exception) -> bool:
    return not isinstance(exc, BusinessError)


@dataclass
class Clock:
    now: float = START

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Calls:
    """A guarded dependency that counts how often it was really called."""

    made: int = 0

    async def fail(self) -> None:
        self.made += 1
        await asyncio.sleep(0)
        raise ConnectionError("provider down")

    async def business_error(self) -> None:
        self.made += 1
        await asyncio.sleep(0)
        raise BusinessError("no such repository")

    async def ok(self) -> str:
        self.made += 1
        await asyncio.sleep(0)
        return "ok"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def eventually(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


@pytest.fixture(scope="module", autouse=True)
def _use_session_redis(redis_url: str) -> None:
    """Module helpers (``child``) and fixtures share one URL: the suite's Redis."""
    global REDIS_URL
    REDIS_URL = redis_url


@pytest.fixture
def namespace() -> Iterator[str]:
    ns = f"test-breaker-{uuid.uuid4().hex}"
    yield ns
    client = sync_redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{ns}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(params=["redis", "local"])
async def redis(request: pytest.FixtureRequest) -> AsyncIterator[Redis]:
    """``local``: Redis is unreachable, so the breaker runs on its in-process fallback."""
    url = REDIS_URL if request.param == "redis" else f"redis://127.0.0.1:{free_port()}/0"
    client = create_redis(url)
    yield client
    await client.aclose()


@pytest.fixture
async def shared_redis() -> AsyncIterator[Redis]:
    client = create_redis(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


Make = Callable[..., CircuitBreaker]


@pytest.fixture
def make(redis: Redis, namespace: str, clock: Clock) -> Make:
    def build(**options: Any) -> CircuitBreaker:
        settings: dict[str, Any] = {
            "failure_threshold": 3, "window_seconds": 30.0, "reset_timeout": RESET,
            "is_failure": not_business, "clock": clock, "namespace": namespace, **options}
        return CircuitBreaker(redis, "github:api/v3", **settings)

    return build


async def fail_times(breaker: CircuitBreaker, calls: Calls, times: int) -> None:
    for _ in range(times):
        with pytest.raises(ConnectionError):
            await breaker.call(calls.fail)


async def opened(make: Make, **options: Any) -> tuple[CircuitBreaker, Calls]:
    breaker, calls = make(**options), Calls()
    await fail_times(breaker, calls, 3)
    assert await breaker.state() is BreakerState.OPEN
    return breaker, calls


# Behaviour, on the shared breaker and on the local fallback --------------------------------------

async def test_opens_after_the_configured_async_failures(make: Make) -> None:
    breaker, calls = make(), Calls()
    await fail_times(breaker, calls, 2)
    assert await breaker.state() is BreakerState.CLOSED
    await fail_times(breaker, calls, 1)
    assert await breaker.state() is BreakerState.OPEN
    assert calls.made == 3


async def test_failures_spread_beyond_the_window_do_not_open(make: Make, clock: Clock) -> None:
    breaker, calls = make(), Calls()
    await fail_times(breaker, calls, 2)
    clock.advance(31)
    await fail_times(breaker, calls, 2)
    assert await breaker.state() is BreakerState.CLOSED


async def test_business_errors_do_not_trip(make: Make) -> None:
    breaker, calls = make(), Calls()
    for _ in range(20):
        with pytest.raises(BusinessError):
            await breaker.call(calls.business_error)
    assert await breaker.state() is BreakerState.CLOSED
    assert await breaker.call(calls.ok) == "ok"


async def test_open_rejects_fast_without_calling(make: Make) -> None:
    breaker, calls = await opened(make)
    started = time.perf_counter()
    for _ in range(50):
        with pytest.raises(CircuitOpen) as refused:
            await breaker.call(calls.ok)
        assert isinstance(refused.value, ResilienceError)
        assert refused.value.retry_after == pytest.approx(RESET)
    assert calls.made == 3
    assert time.perf_counter() - started < 1


async def test_half_open_admits_exactly_the_trial_calls_however_many_callers(
    make: Make, clock: Clock
) -> None:
    breaker, _ = await opened(make, half_open_max_calls=3)
    clock.advance(RESET)
    assert await breaker.state() is BreakerState.HALF_OPEN
    release, admitted, refused = asyncio.Event(), 0, 0

    async def trial() -> None:
        nonlocal admitted, refused
        try:
            async with breaker.guard():
                admitted += 1
                await release.wait()
        except CircuitOpen:
            refused += 1

    tasks = [asyncio.create_task(trial()) for _ in range(50)]
    await eventually(lambda: admitted + refused == 50)
    assert (admitted, refused) == (3, 47)
    release.set()
    await asyncio.gather(*tasks)
    assert await breaker.state() is BreakerState.CLOSED


async def test_a_failed_trial_reopens(make: Make, clock: Clock) -> None:
    breaker, calls = await opened(make)
    clock.advance(RESET)
    await fail_times(breaker, calls, 1)
    assert await breaker.state() is BreakerState.OPEN
    with pytest.raises(CircuitOpen):
        await breaker.call(calls.ok)
    clock.advance(RESET - 1)
    assert await breaker.state() is BreakerState.OPEN
    clock.advance(1)
    assert await breaker.state() is BreakerState.HALF_OPEN


async def test_a_successful_trial_closes(make: Make, clock: Clock) -> None:
    breaker, calls = await opened(make)
    clock.advance(RESET)
    assert await breaker.call(calls.ok) == "ok"
    assert await breaker.state() is BreakerState.CLOSED
    await fail_times(breaker, calls, 2)  # the failure count started afresh
    assert await breaker.state() is BreakerState.CLOSED


async def test_a_business_error_in_a_trial_closes(make: Make, clock: Clock) -> None:
    breaker, calls = await opened(make)
    clock.advance(RESET)
    with pytest.raises(BusinessError):
        await breaker.call(calls.business_error)
    assert await breaker.state() is BreakerState.CLOSED


async def test_a_late_failure_from_before_opening_is_not_a_trial_result(
    make: Make, clock: Clock
) -> None:
    breaker, calls = make(), Calls()
    release = asyncio.Event()

    async def slow_failure() -> None:
        await release.wait()
        raise ConnectionError("late")

    slow = asyncio.create_task(breaker.call(slow_failure))
    await fail_times(breaker, calls, 3)
    clock.advance(RESET)
    assert await breaker.state() is BreakerState.HALF_OPEN
    release.set()
    with pytest.raises(ConnectionError):
        await slow
    assert await breaker.state() is BreakerState.HALF_OPEN


async def test_an_abandoned_trial_round_is_replaced(make: Make, clock: Clock) -> None:
    breaker, calls = await opened(make)
    clock.advance(RESET)
    entered = asyncio.Event()

    async def hang() -> None:
        entered.set()
        await asyncio.Event().wait()

    hung = asyncio.create_task(breaker.call(hang))
    await asyncio.wait_for(entered.wait(), 2)
    with pytest.raises(CircuitOpen):
        await breaker.call(calls.ok)
    clock.advance(RESET)
    assert await breaker.call(calls.ok) == "ok"
    assert await breaker.state() is BreakerState.CLOSED
    hung.cancel()
    with pytest.raises(asyncio.CancelledError):
        await hung


async def test_calls_are_never_serialised(make: Make) -> None:
    breaker, release, inside = make(), asyncio.Event(), 0

    async def slow() -> int:
        nonlocal inside
        inside += 1
        await release.wait()
        return inside

    tasks = [asyncio.create_task(breaker.call(slow)) for _ in range(20)]
    await eventually(lambda: inside == 20)
    release.set()
    assert await asyncio.gather(*tasks) == [20] * 20


async def test_scoped_breakers_keep_the_rules_and_their_own_state(make: Make) -> None:
    """One organisation's failures open its own breaker for a provider, not its neighbours'
    (SECURITY 65); business errors still do not count."""
    provider, calls = make(), Calls()
    noisy, quiet = provider.scoped("corp:eng"), provider.scoped("corp", "eng")
    for _ in range(5):
        with pytest.raises(BusinessError):
            await quiet.call(calls.business_error)
    await fail_times(noisy, calls, 3)  # the parent's threshold
    assert await noisy.state() is BreakerState.OPEN
    assert await provider.scoped("corp:eng").state() is BreakerState.OPEN  # same breaker
    with pytest.raises(CircuitOpen):
        await noisy.call(calls.ok)
    assert await quiet.call(calls.ok) == "ok"
    assert await provider.state() is BreakerState.CLOSED


# Redis only: key encoding, shared state across processes -----------------------------------------

async def test_names_with_separators_never_share_a_breaker(
    shared_redis: Redis, namespace: str, clock: Clock
) -> None:
    def named(name: str) -> CircuitBreaker:
        return CircuitBreaker(
            shared_redis, name, failure_threshold=1, namespace=namespace, clock=clock)

    await fail_times(named("a:b"), Calls(), 1)
    assert await named("a:b").state() is BreakerState.OPEN
    for other in ("a", "a%3Ab", "a:b:", "a/b"):
        assert await named(other).state() is BreakerState.CLOSED


CHILD = """
import asyncio, json, sys
from resilience import CircuitBreaker, CircuitOpen, create_redis

async def main(url, namespace, action, now, count):
    redis = create_redis(url)
    clock = None if now == "redis" else (lambda: float(now))
    breaker = CircuitBreaker(redis, "shared provider", namespace=namespace, failure_threshold=3,
                             reset_timeout=60, half_open_max_calls=2, clock=clock)
    admitted, refused, hold = 0, 0, asyncio.Event()

    async def call():
        nonlocal admitted, refused
        try:
            async with breaker.guard():
                admitted += 1
                if action == "fail":
                    raise ConnectionError
                await hold.wait()
        except CircuitOpen:
            refused += 1
        except ConnectionError:
            pass

    if action == "fail":
        for _ in range(count):
            await call()
    elif action == "hold":
        tasks = [asyncio.create_task(call()) for _ in range(count)]
        while admitted + refused < count:
            await asyncio.sleep(0.005)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    state = (await breaker.state()).value
    print(json.dumps({"admitted": admitted, "refused": refused, "state": state}))
    await redis.aclose()

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])))
"""


def child(namespace: str, action: str, now: str = "redis", count: int = 0) -> subprocess.Popen[str]:
    argv = [sys.executable, "-c", CHILD, REDIS_URL, namespace, action, now, str(count)]
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)


def result(process: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    parsed: dict[str, Any] = json.loads(out)
    return parsed


def replica(redis: Redis, namespace: str, clock: Callable[[], float] | None) -> CircuitBreaker:
    return CircuitBreaker(redis, "shared provider", namespace=namespace, failure_threshold=3,
                          reset_timeout=60, half_open_max_calls=2, clock=clock)


async def wait_for(process: subprocess.Popen[str]) -> dict[str, Any]:
    return await asyncio.to_thread(result, process)


async def test_failures_in_one_process_open_the_breaker_in_another(
    shared_redis: Redis, namespace: str
) -> None:
    here, calls = replica(shared_redis, namespace, None), Calls()
    await fail_times(here, calls, 2)
    assert (await wait_for(child(namespace, "fail", count=1)))["state"] == "open"
    assert await here.state() is BreakerState.OPEN
    with pytest.raises(CircuitOpen):
        await here.call(calls.ok)
    assert calls.made == 2
    assert (await wait_for(child(namespace, "read")))["state"] == "open"


async def test_processes_racing_for_trial_slots_get_exactly_the_limit(
    shared_redis: Redis, namespace: str
) -> None:
    clock = Clock()
    await fail_times(replica(shared_redis, namespace, clock), Calls(), 3)
    later = repr(clock.now + 60)
    racers = [child(namespace, "hold", later, 40) for _ in range(2)]
    outcomes = [await wait_for(racer) for racer in racers]
    assert sum(o["admitted"] for o in outcomes) == 2
    assert sum(o["refused"] for o in outcomes) == 78
    assert {o["state"] for o in outcomes} == {"half_open"}


# Redis unreachable: the local breaker takes over within the client's timeouts --------------------

@pytest.fixture(params=["refused", "silent"])
async def unreachable_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A closed port, or a server that accepts connections and never answers."""
    if request.param == "refused":
        yield f"redis://127.0.0.1:{free_port()}/0"
        return
    server = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
    yield f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0"
    server.close()


async def test_unreachable_redis_falls_back_to_a_local_breaker_quickly(
    unreachable_url: str,
) -> None:
    client, calls = create_redis(unreachable_url), Calls()
    breaker = CircuitBreaker(client, "p", failure_threshold=2, namespace=uuid.uuid4().hex)
    started = time.perf_counter()
    assert await breaker.call(calls.ok) == "ok"
    assert time.perf_counter() - started < 1.0
    await fail_times(breaker, calls, 2)
    with pytest.raises(CircuitOpen):
        await breaker.call(calls.ok)
    assert await breaker.state() is BreakerState.OPEN
    assert time.perf_counter() - started < 1.5
    assert calls.made == 3
    await client.aclose()
