"""Fresh access tokens, refreshed ahead of expiry by exactly one caller across all replicas.

Lock protocol (Redis, one key per connection, ``<namespace>:<org>:<user>:<provider>`` with each
part percent-encoded so separators in ids cannot collide):

1. A caller whose token expires within ``margin`` seconds tries ``SET key <random> NX PX ttl``.
2. The holder re-loads the row (another replica may have refreshed while it waited), and if it
   is still stale calls the provider (bounded by ``call_timeout`` < ``lock_ttl``), stores the
   result with a compare-and-set on the row's version, and releases the lock with a Lua
   compare-and-delete, so it never deletes a lock that expired and was taken by someone else.
3. Callers that do not get the lock poll it with capped exponential backoff and jitter; when it
   is gone they re-load the row and return the refreshed token, or contend for the lock again
   (the holder died or failed). They give up with :class:`RefreshTimedOut` after ``wait_timeout``.
   A holder that dies leaves a lock that expires after ``lock_ttl``; the next caller re-checks.

``invalid_grant`` (or a connection without a refresh token) marks the connection as needing
reconnect and raises :class:`NeedsReconnect`; waiters then see the mark and raise it too, so the
provider is asked once. Any other failure is remembered for ``failure_ttl`` seconds so waiters
fail fast with :class:`RefreshFailed` instead of each asking the provider again. Fresh tokens
never touch Redis; stale ones need it (without it: :class:`RefreshFailed`, never an unlocked
refresh).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from opentelemetry import trace
from redis.asyncio import Redis
from redis.exceptions import RedisError

from oauth.errors import (
    NeedsReconnect,
    NotConnected,
    RefreshFailed,
    RefreshTimedOut,
    TokenEndpointError,
)
from oauth.store import StoredTokens, TokenStore
from oauth.token_endpoint import TokenResponse
from oauth.vault import TokenBundle
from resilience.keys import key_of
from sql import Tenant
from telemetry.spans import child_span

RefreshGrant = Callable[[str], Awaitable[TokenResponse]]
T = TypeVar("T")
_tracer = trace.get_tracer(__name__)

# KEYS[1]: the lock; ARGV[1]: the holder's token. Deletes the lock only if still held by it.
RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def lock_key(namespace: str, tenant: Tenant, provider: str) -> str:
    return key_of(namespace, tenant.org_id, tenant.user_id, provider)


# The grant is gone for good: RFC 6749's invalid_grant, and GitHub's spelling of it.
_GRANT_GONE = frozenset({"invalid_grant", "bad_refresh_token"})


class Refresher:
    def __init__(
        self,
        store: TokenStore,
        redis: Redis,
        grants: Mapping[str, RefreshGrant],
        *,
        margin: float = 60.0,
        lock_ttl: float = 15.0,
        call_timeout: float = 10.0,
        wait_timeout: float = 20.0,
        failure_ttl: float = 5.0,
        namespace: str = "gatehouse:refresh",
    ) -> None:
        if not 0 < call_timeout < lock_ttl:
            raise ValueError("call_timeout must be positive and shorter than lock_ttl")
        self._store = store
        self._redis = redis
        self._grants = dict(grants)
        self._margin = margin
        self._lock_ms = int(lock_ttl * 1000)
        self._call_timeout = call_timeout
        self._wait_timeout = wait_timeout
        self._failure_ms = int(failure_ttl * 1000)
        self._namespace = namespace
        self._release = redis.register_script(RELEASE_LUA)
        # Told (with the provider) each time a caller starts waiting for another caller's
        # refresh: mcp_server counts it; this package knows nothing of metrics.
        self.on_wait: Callable[[str], None] | None = None

    async def access_token(self, tenant: Tenant, provider: str) -> str:
        """A token valid for at least ``margin`` seconds (or with no known expiry)."""
        bundle = await self._store.load(tenant, provider)
        if bundle is None:
            raise NotConnected(provider)
        if not bundle.expires_within(self._margin):
            return bundle.access_token
        with child_span(_tracer, "token refresh", {"gatehouse.provider": provider}):
            return await self._single_flight(tenant, provider)

    async def _single_flight(self, tenant: Tenant, provider: str) -> str:
        key = lock_key(self._namespace, tenant, provider)
        deadline = time.monotonic() + self._wait_timeout
        delay = 0.01
        await self._raise_if_failed_recently(key, provider)
        waiting = False
        while True:
            holder = secrets.token_hex(16)
            if await self._redis_call(self._redis.set(key, holder, nx=True, px=self._lock_ms)):
                try:
                    return await self._refresh_locked(tenant, provider, key)
                finally:
                    await self._unlock(key, holder)
            if not waiting:  # another caller (maybe another replica) holds the lock
                trace.get_current_span().add_event("waiting for another refresh")
            if not waiting and self.on_wait is not None:
                self.on_wait(provider)
            waiting = True
            if time.monotonic() + delay > deadline:
                raise RefreshTimedOut(f"refresh of {provider!r} did not finish in time")
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, 0.2)
            if await self._redis_call(self._redis.exists(key)):
                continue
            token = await self._refreshed_by_other(tenant, provider, key)
            if token is not None:
                return token

    async def _refreshed_by_other(self, tenant: Tenant, provider: str, key: str) -> str | None:
        """After the lock went away: the new token, or None to contend for the lock."""
        await self._raise_if_failed_recently(key, provider)
        bundle = await self._store.load(tenant, provider)
        if bundle is None:
            raise NotConnected(provider)
        return None if bundle.expires_within(self._margin) else bundle.access_token

    async def _refresh_locked(self, tenant: Tenant, provider: str, key: str) -> str:
        stored = await self._store.load_current(tenant, provider)
        if stored is None:
            raise NotConnected(provider)
        if stored.needs_reconnect:
            raise NeedsReconnect(provider)
        if not stored.bundle.expires_within(self._margin):
            return stored.bundle.access_token  # another caller refreshed while we waited
        refresh_token = stored.bundle.refresh_token
        if refresh_token is None:
            await self._store.mark_needs_reconnect(tenant, provider, version=stored.version)
            raise NeedsReconnect(provider)
        response = await self._call_provider(tenant, provider, key, stored, refresh_token)
        bundle = _merge(stored.bundle, response)
        if await self._store.replace_tokens(tenant, provider, bundle, version=stored.version):
            return bundle.access_token
        raise RefreshFailed(f"connection to {provider!r} changed during refresh; retry")

    async def _call_provider(
        self, tenant: Tenant, provider: str, key: str, stored: StoredTokens, refresh_token: str
    ) -> TokenResponse:
        grant = self._grants.get(provider)
        if grant is None:
            raise RefreshFailed(f"no token endpoint configured for provider {provider!r}")
        try:
            async with asyncio.timeout(self._call_timeout):
                return await grant(refresh_token)
        except TokenEndpointError as exc:
            if exc.error in _GRANT_GONE:
                await self._store.mark_needs_reconnect(tenant, provider, version=stored.version)
                raise NeedsReconnect(provider) from None
            failure = f"provider refused the refresh: {exc.error[:64]!r}"
        except (RefreshFailed, TimeoutError) as exc:
            failure = f"provider unreachable: {type(exc).__name__}"
        await self._redis_call(self._redis.set(key + ":failed", "1", px=self._failure_ms))
        raise RefreshFailed(f"refresh of {provider!r} failed: {failure}")

    async def _raise_if_failed_recently(self, key: str, provider: str) -> None:
        if await self._redis_call(self._redis.exists(key + ":failed")):
            raise RefreshFailed(f"refresh of {provider!r} failed recently; retry later")

    async def _unlock(self, key: str, holder: str) -> None:
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await self._release(keys=[key], args=[holder])  # else it expires after lock_ttl

    async def _redis_call(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except (RedisError, OSError, TimeoutError) as exc:
            raise RefreshFailed(f"lock store unavailable: {type(exc).__name__}") from None


def _merge(old: TokenBundle, response: TokenResponse) -> TokenBundle:
    expires_at = None
    if response.expires_in is not None:
        expires_at = datetime.now(UTC) + timedelta(seconds=response.expires_in)
    scopes = old.scopes if response.scope is None else tuple(response.scope.split())
    return TokenBundle(
        access_token=response.access_token,
        refresh_token=response.refresh_token or old.refresh_token,
        expires_at=expires_at,
        scopes=scopes,
    )
