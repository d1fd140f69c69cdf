"""The JWKS cache against a real HTTP endpoint (SECURITY.md 5, 7, 14, 15)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from gateway.errors import JwksUnavailable
from gateway.jwks import JwksCache
from tests.support.jwks_server import JwksServer, KeyPair


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    with JwksServer() as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def cache(server: JwksServer, http: aiohttp.ClientSession, clock: Clock, **kw: float) -> JwksCache:
    options = {"ttl": 300.0, "cooldown": 30.0, "fetch_timeout": 0.5, **kw}
    return JwksCache(server.url, http, clock=clock, **options)


async def test_unknown_kids_cause_at_most_one_fetch_per_cooldown(
    jwks_server: JwksServer, http: aiohttp.ClientSession
) -> None:
    jwks_server.keys = [KeyPair("known").jwk()]
    clock = Clock()
    jwks = cache(jwks_server, http, clock)
    assert await jwks.get("known") is not None
    assert jwks_server.fetches == 1
    clock.now += 31
    results = await asyncio.gather(*(jwks.get(f"invented-{i}") for i in range(1000)))
    assert results == [None] * 1000
    assert jwks_server.fetches == 2  # one refresh for the whole flood
    clock.now += 10
    assert await jwks.get("another-invented") is None
    assert jwks_server.fetches == 2  # still within the cooldown
    clock.now += 30
    assert await jwks.get("another-invented") is None
    assert jwks_server.fetches == 3


async def test_concurrent_first_lookups_share_one_fetch(
    jwks_server: JwksServer, http: aiohttp.ClientSession
) -> None:
    jwks_server.keys = [KeyPair("k1").jwk()]
    jwks = cache(jwks_server, http, Clock())
    found = await asyncio.gather(*(jwks.get("k1") for _ in range(50)))
    assert all(key is not None for key in found)
    assert jwks_server.fetches == 1


async def test_removed_key_stops_being_trusted_after_ttl(
    jwks_server: JwksServer, http: aiohttp.ClientSession
) -> None:
    old, new = KeyPair("old"), KeyPair("new")
    jwks_server.keys = [old.jwk(), new.jwk()]
    clock = Clock()
    jwks = cache(jwks_server, http, clock, ttl=60)
    assert await jwks.get("old") is not None
    jwks_server.keys = [new.jwk()]
    clock.now += 59
    assert await jwks.get("old") is not None  # cached within the TTL
    clock.now += 2
    assert await jwks.get("old") is None
    assert await jwks.get("new") is not None


async def test_endpoint_down_known_keys_keep_working_unknown_fail_fast(
    jwks_server: JwksServer, http: aiohttp.ClientSession
) -> None:
    jwks_server.keys = [KeyPair("known").jwk()]
    clock = Clock()
    jwks = cache(jwks_server, http, clock, ttl=60, cooldown=0)
    assert await jwks.get("known") is not None
    jwks_server.status = 503
    clock.now += 120  # expired: the refetch fails, the stale key stays usable
    assert await jwks.get("known") is not None
    started = time.perf_counter()
    assert await jwks.get("unknown") is None
    assert time.perf_counter() - started < 0.5


async def test_slow_endpoint_gives_up_after_the_fetch_timeout(
    jwks_server: JwksServer, http: aiohttp.ClientSession
) -> None:
    jwks_server.keys = [KeyPair("k").jwk()]
    jwks_server.delay = 3
    jwks = cache(jwks_server, http, Clock(), fetch_timeout=0.3)
    started = time.perf_counter()
    with pytest.raises(JwksUnavailable):
        await jwks.get("k")
    assert time.perf_counter() - started < 1.5


async def test_symmetric_and_private_keys_are_never_trusted(
    jwks_server: JwksServer, http: aiohttp.ClientSession
) -> None:
    private = KeyPair("private").jwk()
    private["d"] = "AQAB"
    jwks_server.keys = [
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        private,
        {**KeyPair("enc").jwk(alg=None), "use": "enc"},
    ]
    jwks = cache(jwks_server, http, Clock())
    for kid in ("hmac", "private", "enc"):
        assert await jwks.get(kid) is None
