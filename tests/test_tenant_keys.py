"""Keys built from caller-chosen identifiers never collide (SECURITY 47, 58).

Every Redis key built from organisation, user, provider or tool ids goes through
:func:`resilience.keys.key_of`; these tests call the real builders (limit buckets, breaker keys,
refresh lock keys) with identifiers full of separators. The adversarial strategy re-splits one
tuple's raw join at other separator positions, which is exactly the pair a plain ``":".join``
would confuse (``corp:eng``/``carol`` and ``corp``/``eng:carol``).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from oauth.refresh import lock_key
from resilience import BreakerState, CircuitBreaker, RateLimiter, create_redis
from resilience.keys import key_of
from tests.support.tenants import Who

SEPARATORS = (":", "%", "/", "|", "\x1f")
# Separators, the characters of their own percent-encodings, lone surrogates and any Unicode.
_TRICKY = st.sampled_from([*SEPARATORS, "3", "A", "a", "2", "5", "F", "\ud800", "é", "\u202e"])
IDENTIFIER = st.text(alphabet=_TRICKY | st.characters(), max_size=10)

# Constructing limiters and breakers registers scripts only; nothing here talks to Redis.
_OFFLINE = Redis(host="127.0.0.1", port=1)
_LIMITER = RateLimiter(_OFFLINE, "10/minute", namespace="gatehouse-user")


Builder = Callable[[tuple[str, ...]], str]

BUILDERS: dict[str, tuple[int, Builder]] = {
    "key_of": (3, lambda ids: key_of("ns", *ids)),
    "user limit bucket (org, user)": (2, lambda ids: _LIMITER.bucket(*ids).key),
    "tool limit bucket (org, user, tool)": (3, lambda ids: _LIMITER.bucket(*ids).key),
    "breaker": (1, lambda ids: CircuitBreaker(_OFFLINE, ids[0], namespace="gatehouse:breaker").key),
    "refresh lock (org, user, provider)": (
        3, lambda ids: lock_key("gatehouse:refresh", Who(ids[0], ids[1]), ids[2])),
}


@st.composite
def resplit_pair(draw: st.DrawFn, arity: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Two tuples whose parts, joined with one separator, give the same string."""
    parts = tuple(draw(st.lists(IDENTIFIER, min_size=arity, max_size=arity)))
    sep = draw(st.sampled_from(SEPARATORS))
    joined = sep.join(parts)
    at = [i for i, ch in enumerate(joined) if ch == sep]
    cuts = sorted(draw(st.lists(st.sampled_from(at), min_size=arity - 1, max_size=arity - 1,
                                unique=True))) if arity > 1 else []
    bounds = [-1, *cuts, len(joined)]
    return parts, tuple(joined[bounds[k] + 1:bounds[k + 1]] for k in range(arity))


@st.composite
def builder_and_pair(
    draw: st.DrawFn, adversarial: bool
) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    name = draw(st.sampled_from(sorted(BUILDERS)))
    arity = BUILDERS[name][0]
    if adversarial:
        first, second = draw(resplit_pair(arity))
    else:
        one = st.lists(IDENTIFIER, min_size=arity, max_size=arity).map(tuple)
        first, second = draw(one), draw(one)
    return name, first, second


def _distinct_tuples_distinct_keys(name: str, first: tuple[str, ...],
                                   second: tuple[str, ...]) -> None:
    build = BUILDERS[name][1]
    if first != second:
        assert build(first) != build(second), (name, first, second)
    else:
        assert build(first) == build(second)  # and the key is stable


_SETTINGS = settings(max_examples=400, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(builder_and_pair(adversarial=True))
@example(("user limit bucket (org, user)", ("corp:eng", "carol"), ("corp", "eng:carol")))
@example(("refresh lock (org, user, provider)", ("corp:eng", "carol", "github"),
          ("corp", "eng:carol", "github")))
@example(("breaker", ("a:b",), ("a%3Ab",)))
@example(("key_of", ("a%", "", "b"), ("a", "%", "b")))
def test_resplit_identifiers_never_share_a_key(
    case: tuple[str, tuple[str, ...], tuple[str, ...]],
) -> None:
    _distinct_tuples_distinct_keys(*case)


@_SETTINGS
@given(builder_and_pair(adversarial=False))
def test_any_distinct_identifiers_never_share_a_key(
    case: tuple[str, tuple[str, ...], tuple[str, ...]],
) -> None:
    _distinct_tuples_distinct_keys(*case)


@_SETTINGS
@given(st.lists(IDENTIFIER, max_size=4).map(tuple), st.lists(IDENTIFIER, max_size=4).map(tuple))
def test_tuples_of_different_lengths_never_share_a_bucket(
    first: tuple[str, ...], second: tuple[str, ...]
) -> None:
    # One limiter may be asked with (org,), (org, user) and (org, user, tool) alike.
    if first != second:
        assert _LIMITER.bucket(*first).key != _LIMITER.bucket(*second).key


# The concrete probe case against real Redis ----------------------------------------------------

@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = create_redis(redis_url)
    yield client
    await client.aclose()


async def test_corp_eng_carol_and_corp_eng_carol_have_separate_limits(redis: Redis) -> None:
    limit = RateLimiter(redis, "1/minute", namespace=f"test-{uuid.uuid4().hex}")
    assert (await limit.hit("corp:eng", "carol")).allowed
    assert (await limit.hit("corp", "eng:carol")).allowed  # its own bucket, not carol's
    assert not (await limit.hit("corp:eng", "carol")).allowed


async def test_corp_eng_carol_and_corp_eng_carol_have_separate_breakers(redis: Redis) -> None:
    # A breaker takes one name under a namespace; the pair is (namespace tail, name).
    base = f"test-{uuid.uuid4().hex}"

    def breaker(namespace: str, name: str) -> CircuitBreaker:
        return CircuitBreaker(redis, name, namespace=namespace, failure_threshold=1,
                              reset_timeout=60)

    async def fail() -> None:
        raise ConnectionError

    with pytest.raises(ConnectionError):
        await breaker(f"{base}:corp:eng", "carol").call(fail)
    assert await breaker(f"{base}:corp:eng", "carol").state() is BreakerState.OPEN
    assert await breaker(f"{base}:corp", "eng:carol").state() is BreakerState.CLOSED


async def test_corp_eng_carol_and_corp_eng_carol_have_separate_refresh_locks(
    redis: Redis,
) -> None:
    namespace = f"test-{uuid.uuid4().hex}"
    first = lock_key(namespace, Who("corp:eng", "carol"), "github")
    second = lock_key(namespace, Who("corp", "eng:carol"), "github")
    assert await redis.set(first, "holder-1", nx=True, px=10_000)
    # The other tenant's refresh is not blocked by (or able to release) carol's lock.
    assert await redis.set(second, "holder-2", nx=True, px=10_000)
    assert await redis.get(first) == b"holder-1"
