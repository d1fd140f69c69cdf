"""An asynchronous, caching view of the issuer's JSON Web Key Set.

Rules (SECURITY.md 5, 7, 14, 15):
- Keys are cached for ``ttl`` seconds; after that the next lookup refetches, so a key removed
  from the issuer's JWKS stops being trusted within one TTL.
- An unknown ``kid`` triggers at most one refetch per ``cooldown``; a flood of invented ``kid``s
  cannot turn into a flood of fetches. Concurrent misses share one fetch (single flight).
- When the JWKS endpoint is down or slow, fetches give up after ``fetch_timeout``: known keys
  keep working (up to ``max_stale`` seconds), unknown ones fail closed at once.
- ``kid`` values are only ever dictionary keys here: never paths, URLs or SQL.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from gateway.errors import JwksUnavailable
from telemetry.spans import child_span

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)

_MAX_JWKS_BYTES = 256 * 1024


@dataclass(frozen=True)
class KeySet:
    keys: dict[str, dict[str, Any]]
    fetched_at: float


class JwksCache:
    def __init__(
        self,
        url: str,
        http: aiohttp.ClientSession,
        *,
        ttl: float,
        cooldown: float,
        fetch_timeout: float,
        max_stale: float = 24 * 3600,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._http = http
        self._ttl = ttl
        self._cooldown = cooldown
        self._timeout = aiohttp.ClientTimeout(total=fetch_timeout)
        self._max_stale = max_stale
        self._clock = clock
        self._keyset: KeySet | None = None
        self._last_attempt = float("-inf")
        self._inflight: asyncio.Task[None] | None = None
        self.fetch_count = 0
        self.fetch_failures = 0  # both read by gateway.metrics at each scrape

    async def get(self, kid: str) -> dict[str, Any] | None:
        """The JWK for ``kid`` as a dict, or ``None`` when the issuer does not publish it."""
        now = self._clock()
        keyset = self._keyset
        expired = keyset is None or now - keyset.fetched_at >= self._ttl
        unknown = keyset is not None and kid not in keyset.keys
        if expired or (unknown and now - self._last_attempt >= self._cooldown):
            await self._refresh()
        keyset = self._keyset
        if keyset is None:
            raise JwksUnavailable("the issuer's key set could not be fetched")
        if self._clock() - keyset.fetched_at > self._ttl + self._max_stale:
            raise JwksUnavailable("the cached key set is too old to trust")
        return keyset.keys.get(kid)

    async def ready(self) -> bool:
        """Whether keys are available (fetching them if never fetched)."""
        if self._keyset is None:
            await self._refresh()
        return self._keyset is not None

    async def _refresh(self) -> None:
        if self._inflight is None:
            self._inflight = asyncio.create_task(self._traced_fetch())
        task = self._inflight
        try:
            await asyncio.shield(task)
        finally:
            if task.done() and self._inflight is task:
                self._inflight = None

    async def _traced_fetch(self) -> None:
        with child_span(_tracer, "jwks fetch", {"url.full": self._url}, SpanKind.CLIENT):
            await self._fetch()

    async def _fetch(self) -> None:
        self._last_attempt = self._clock()
        self.fetch_count += 1
        try:
            async with self._http.get(self._url, timeout=self._timeout) as resp:
                if resp.status != 200:
                    raise JwksUnavailable(f"JWKS endpoint answered {resp.status}")
                body = await resp.content.read(_MAX_JWKS_BYTES + 1)
            if len(body) > _MAX_JWKS_BYTES:
                raise JwksUnavailable("JWKS document too large")
            self._keyset = KeySet(_parse(body), self._clock())
        except (aiohttp.ClientError, TimeoutError, ValueError, JwksUnavailable) as exc:
            # Stale keys stay in place: known keys keep working while the issuer is down.
            self.fetch_failures += 1
            log.warning("JWKS fetch from %s failed: %s", self._url, type(exc).__name__)
            trace.get_current_span().set_attribute("error.type", type(exc).__name__)


def _parse(body: bytes) -> dict[str, dict[str, Any]]:
    document = json.loads(body)
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK set")
    keys: dict[str, dict[str, Any]] = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str):
            continue
        if jwk.get("use", "sig") != "sig" or "d" in jwk or jwk.get("kty") == "oct":
            continue  # encryption, private and symmetric keys are never an issuer's signing keys
        try:
            jwt.PyJWK(jwk)
        except jwt.PyJWTError:
            continue
        keys[jwk["kid"]] = jwk
    return keys
