"""Single-flight refresh against real PostgreSQL, Redis and a loopback HTTP token endpoint:
SECURITY.md 31, 32 and 38 (and 39 for refresh errors).

Self-contained: its own database (dropped at the end), Redis db 13 with unique key prefixes,
and an aiohttp token/revocation endpoint on 127.0.0.1 that counts the grants it serves.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from redis.asyncio import Redis

from oauth.disconnect import disconnect
from oauth.errors import NeedsReconnect, NotConnected, RefreshFailed, RefreshTimedOut
from oauth.keyring import Keyring, generate_entry
from oauth.refresh import Refresher, lock_key
from oauth.revocation import rfc7009
from oauth.store import TokenStore
from oauth.token_endpoint import ClientCredentials, TokenEndpoint
from oauth.vault import TokenBundle
from sql import create_pool
from tests.support.databases import Database, scratch_database
from tests.support.tenants import Who, provision

ROOT = Path(__file__).resolve().parent.parent



@dataclass
class TokenServer:
    """A provider: ``dead*`` refresh tokens get invalid_grant, ``flaky*`` a 503."""

    url: str = ""
    delay: float = 0.3
    grants: list[str] = field(default_factory=list)
    revoked: list[tuple[str, str]] = field(default_factory=list)

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        assert request.headers["Authorization"].startswith("Basic ")
        assert form["grant_type"] == "refresh_token"
        refresh = str(form["refresh_token"])
        self.grants.append(refresh)
        await asyncio.sleep(self.delay)
        if refresh.startswith("dead"):
            return web.json_response({"error": "invalid_grant"}, status=400)
        if refresh.startswith("github-dead"):  # GitHub's style: HTTP 200 carrying an error
            return web.json_response({"error": "bad_refresh_token"}, status=200)
        if refresh.startswith("flaky"):
            return web.json_response({"error": "temporarily_unavailable"}, status=503)
        return web.json_response(
            {
                "access_token": f"AT-new-{secrets.token_hex(8)}",
                "token_type": "Bearer",
                "expires_in": 3600,
                "refresh_token": f"{refresh}-next",
            }
        )

    async def revoke(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.revoked.append((str(form["token"]), str(form["token_type_hint"])))
        return web.Response(status=200)

    def calls(self, refresh_token: str) -> int:
        return self.grants.count(refresh_token)


@dataclass(frozen=True)
class Env:
    app_url: str
    pool: asyncpg.Pool
    keyring_config: str
    server: TokenServer
    redis_url: str


@pytest.fixture(scope="module")
async def env(database: Database, redis_url: str) -> AsyncIterator[Env]:
    server = TokenServer()
    app = web.Application()
    app.router.add_post("/token", server.token)
    app.router.add_post("/revoke", server.revoke)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    server.url = f"http://{host}:{port}"
    try:
        async with scratch_database(database.admin_url, "gatehouse_refresh") as scratch:
            pool = await create_pool(scratch.app_url, max_size=20)
            try:
                yield Env(scratch.app_url, pool, generate_entry("k1"), server, redis_url)
            finally:
                await pool.close()
    finally:
        await runner.cleanup()


@pytest.fixture
async def redis(env: Env) -> AsyncIterator[Redis]:
    client = Redis.from_url(env.redis_url, socket_timeout=1, socket_connect_timeout=1)
    yield client
    await client.aclose()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def endpoint(session: aiohttp.ClientSession, server: TokenServer) -> TokenEndpoint:
    client = ClientCredentials("gatehouse", "client-secret")
    return TokenEndpoint(
        session, server.url + "/token", client, revocation_url=server.url + "/revoke"
    )


def refresher(
    env: Env, redis: Redis, session: aiohttp.ClientSession, namespace: str, **options: float
) -> Refresher:
    store = TokenStore(env.pool, Keyring.parse(env.keyring_config))
    grants = {"github": endpoint(session, env.server).refresh}
    return Refresher(store, redis, grants, namespace=namespace, **options)


async def connect(env: Env, refresh_token: str, *, expired: bool = True) -> Who:
    """A provisioned user with a github connection, expired (or valid) an hour ago/ahead."""
    who = Who(f"org-{uuid.uuid4().hex[:8]}", f"user-{uuid.uuid4().hex[:8]}")
    await provision(env.pool, who, roles=())
    delta = timedelta(hours=-1 if expired else 1)
    bundle = TokenBundle(f"AT-old-{secrets.token_hex(8)}", refresh_token, datetime.now(UTC) + delta)
    await TokenStore(env.pool, Keyring.parse(env.keyring_config)).save(who, "github", bundle)
    return who


class LockWatch:
    """A Redis client that says when a lock was refused (``SET NX`` answered nothing): from
    then on its caller is waiting for another holder."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self.refused = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._redis, name)

    async def set(self, *args: Any, **kwargs: Any) -> Any:
        taken = await self._redis.set(*args, **kwargs)
        if kwargs.get("nx") and not taken:
            self.refused.set()
        return taken


def namespace() -> str:
    return f"test-refresh-{uuid.uuid4().hex}"


async def test_fresh_token_needs_no_provider_and_no_redis(
    env: Env, http: aiohttp.ClientSession
) -> None:
    rt = f"rt-{uuid.uuid4().hex}"
    who = await connect(env, rt, expired=False)
    dead_redis = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    token = await refresher(env, dead_redis, http, namespace()).access_token(who, "github")
    assert token.startswith("AT-old-") and env.server.calls(rt) == 0
    with pytest.raises(NotConnected):
        await refresher(env, dead_redis, http, namespace()).access_token(who, "gitlab")


async def test_fifty_concurrent_callers_cause_one_refresh(
    env: Env, redis: Redis, http: aiohttp.ClientSession
) -> None:
    """SECURITY 38: 50 callers in one process, expired token, one grant at the provider."""
    rt = f"rt-{uuid.uuid4().hex}"
    who = await connect(env, rt)
    ref = refresher(env, redis, http, namespace())
    tokens = await asyncio.gather(*(ref.access_token(who, "github") for _ in range(50)))
    assert env.server.calls(rt) == 1
    assert len(set(tokens)) == 1 and tokens[0].startswith("AT-new-")
    stored = await TokenStore(env.pool, Keyring.parse(env.keyring_config)).load(who, "github")
    assert stored is not None and stored.refresh_token == f"{rt}-next"
    assert stored.expires_at is not None and not stored.expires_within(3000)
    assert await ref.access_token(who, "github") == tokens[0]
    assert env.server.calls(rt) == 1 and env.server.calls(f"{rt}-next") == 0


async def _worker(args: list[str]) -> None:
    """Child process of the two-process test: 25 callers once the parent says go."""
    app_url, redis_url, keyring_config, token_url, ns, org, user = args
    pool = await create_pool(app_url, max_size=10)
    client = Redis.from_url(redis_url, socket_timeout=1)
    async with aiohttp.ClientSession() as session:
        store = TokenStore(pool, Keyring.parse(keyring_config))
        token_endpoint = TokenEndpoint(session, token_url, ClientCredentials("gatehouse", "s"))
        ref = Refresher(store, client, {"github": token_endpoint.refresh}, namespace=ns)
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        started = time.monotonic()
        calls = (ref.access_token(Who(org, user), "github") for _ in range(25))
        tokens = await asyncio.gather(*calls)
        elapsed = time.monotonic() - started
        print(json.dumps({"tokens": tokens, "elapsed": elapsed}), flush=True)
    await client.aclose()
    await pool.close()


async def test_fifty_callers_across_two_processes_cause_one_refresh(
    env: Env, redis: Redis, http: aiohttp.ClientSession
) -> None:
    """SECURITY 38 across replicas: 25 callers here, 25 in a child process, one grant."""
    rt = f"rt-{uuid.uuid4().hex}"
    who = await connect(env, rt)
    ns = namespace()
    code = (
        "import asyncio, sys; from tests.test_refresh import _worker;"
        " asyncio.run(_worker(sys.argv[1:]))"
    )
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, env.app_url, env.redis_url, env.keyring_config,
        env.server.url + "/token",
        ns, who.org_id, who.user_id,
        cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    try:
        assert (await asyncio.wait_for(child.stdout.readline(), 30)).strip() == b"ready"
        ref = refresher(env, redis, http, ns)
        child.stdin.write(b"go\n")
        await child.stdin.drain()
        here = await asyncio.gather(*(ref.access_token(who, "github") for _ in range(25)))
        there = json.loads(await asyncio.wait_for(child.stdout.readline(), 30))
    finally:
        if child.returncode is None:
            await asyncio.wait_for(child.wait(), 30)
    assert child.returncode == 0
    assert env.server.calls(rt) == 1
    assert len(set(here) | set(there["tokens"])) == 1 and len(there["tokens"]) == 25
    # The child's callers overlapped the single refresh (held the lock or waited for it) rather
    # than arriving after it was done: the provider takes 0.3 s to answer.
    assert there["elapsed"] > 0.15


async def test_dead_lock_holder_lock_expires_and_next_caller_refreshes(
    env: Env, redis: Redis, http: aiohttp.ClientSession
) -> None:
    """SECURITY 38: a holder that took the lock and died; after the TTL the caller re-checks
    (still stale) and refreshes once."""
    rt = f"rt-{uuid.uuid4().hex}"
    who = await connect(env, rt)
    ns = namespace()
    await redis.set(lock_key(ns, who, "github"), "dead-holder", nx=True, px=1500)
    ref = refresher(env, redis, http, ns, lock_ttl=1.5, call_timeout=1.0, wait_timeout=5)
    started = time.monotonic()
    token = await ref.access_token(who, "github")
    assert time.monotonic() - started >= 1.2
    assert token.startswith("AT-new-") and env.server.calls(rt) == 1


async def test_holder_that_saved_then_died_is_not_refreshed_again(
    env: Env, redis: Redis, http: aiohttp.ClientSession
) -> None:
    """SECURITY 38: the re-check after the lock expires finds the other replica's tokens."""
    rt = f"rt-{uuid.uuid4().hex}"
    who = await connect(env, rt)
    ns = namespace()
    await redis.set(lock_key(ns, who, "github"), "dead-holder", px=800)
    watched = LockWatch(redis)
    waiter = asyncio.create_task(
        refresher(env, cast(Redis, watched), http, ns).access_token(who, "github"))
    # Save only once the waiter has found the lock taken, so it must re-check to see the save.
    await asyncio.wait_for(watched.refused.wait(), 5)
    saved = TokenBundle("AT-other-replica", "rt-other", datetime.now(UTC) + timedelta(hours=1))
    await TokenStore(env.pool, Keyring.parse(env.keyring_config)).save(who, "github", saved)
    assert await waiter == "AT-other-replica"
    assert env.server.calls(rt) == 0


async def test_waiting_is_bounded(env: Env, redis: Redis, http: aiohttp.ClientSession) -> None:
    rt = f"rt-{uuid.uuid4().hex}"
    who = await connect(env, rt)
    ns = namespace()
    await redis.set(lock_key(ns, who, "github"), "slow-holder", px=10_000)
    started = time.monotonic()
    with pytest.raises(RefreshTimedOut):
        await refresher(env, redis, http, ns, wait_timeout=0.5).access_token(who, "github")
    assert time.monotonic() - started < 1.5 and env.server.calls(rt) == 0


@pytest.mark.parametrize("prefix", ["dead", "github-dead"])
async def test_invalid_grant_marks_needs_reconnect_without_retry(
    env: Env, redis: Redis, http: aiohttp.ClientSession, prefix: str
) -> None:
    """SECURITY 31: one provider call, every caller told to reconnect, the row is marked."""
    rt = f"{prefix}-{uuid.uuid4().hex}"
    who = await connect(env, rt)
    ref = refresher(env, redis, http, namespace())
    results = await asyncio.gather(
        *(ref.access_token(who, "github") for _ in range(10)), return_exceptions=True
    )
    assert all(isinstance(r, NeedsReconnect) for r in results), results
    with pytest.raises(NeedsReconnect):
        await ref.access_token(who, "github")
    assert env.server.calls(rt) == 1
    info = await TokenStore(env.pool, Keyring.parse(env.keyring_config)).info(who, "github")
    assert info is not None and info.needs_reconnect
    for error in results:
        assert rt not in str(error) and "AT-old" not in repr(error)


async def test_transient_provider_failure_is_not_stampeded(
    env: Env, redis: Redis, http: aiohttp.ClientSession
) -> None:
    rt = f"flaky-{uuid.uuid4().hex}"
    who = await connect(env, rt)
    ref = refresher(env, redis, http, namespace(), failure_ttl=2)
    results = await asyncio.gather(
        *(ref.access_token(who, "github") for _ in range(10)), return_exceptions=True
    )
    assert all(isinstance(r, RefreshFailed) for r in results), results
    assert env.server.calls(rt) == 1
    assert all(rt not in str(r) for r in results)
    info = await TokenStore(env.pool, Keyring.parse(env.keyring_config)).info(who, "github")
    assert info is not None and not info.needs_reconnect


async def test_stale_token_without_redis_fails_fast(env: Env, http: aiohttp.ClientSession) -> None:
    rt = f"rt-{uuid.uuid4().hex}"
    who = await connect(env, rt)
    dead_redis = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    started = time.monotonic()
    with pytest.raises(RefreshFailed, match="lock store unavailable"):
        await refresher(env, dead_redis, http, namespace()).access_token(who, "github")
    assert time.monotonic() - started < 2 and env.server.calls(rt) == 0


async def test_disconnect_revokes_at_provider_and_deletes(
    env: Env, http: aiohttp.ClientSession
) -> None:
    """SECURITY 32 (the vault's part): RFC 7009 revocation of the refresh token, local delete."""
    rt = f"rt-{uuid.uuid4().hex}"
    who = await connect(env, rt)
    store = TokenStore(env.pool, Keyring.parse(env.keyring_config))
    outcome = await disconnect(store, rfc7009(endpoint(http, env.server)), who, "github")
    assert outcome.deleted and outcome.revoked
    assert (rt, "refresh_token") in env.server.revoked
    assert await store.load(who, "github") is None
    again = await disconnect(store, rfc7009(endpoint(http, env.server)), who, "github")
    assert not again.deleted and not again.revoked
