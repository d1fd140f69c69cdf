"""Verification of inbound bearer JWTs (SECURITY.md items 1-13).

Order matters: size cap, then the header (type, algorithm allow-list, ``crit``, key id), then
the key from the issuer's JWKS (its own ``alg`` must agree), then signature and registered
claims with PyJWT, then strict types for the time claims. Header parameters that name keys
(``jku``, ``x5u``, ``jwk``, ``x5c``) are never consulted: keys come only from the configured JWKS.

Agents send the same token on every call, and a signature check costs more than everything
else the gateway does per request, so fully verified tokens are remembered for a short while.
A remembered token is still held to its time claims on every use, and to its key: the key is
looked up in the JWKS cache again, so it stops working as soon as its key leaves the JWKS.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from cachetools import TTLCache
from opentelemetry import trace

from gateway.errors import JwksUnavailable, Unauthenticated
from gateway.jwks import JwksCache
from oauth.errors import JwtRejected
from oauth.jwt_rules import JwtPolicy, check_times, decode, key_from_jwk, read_header
from telemetry.spans import child_span

_tracer = trace.get_tracer(__name__)


class TokenVerifier:
    def __init__(
        self,
        jwks: JwksCache,
        *,
        issuer: str,
        audience: str,
        algorithms: Sequence[str],
        token_types: Sequence[str],
        skew: int,
        max_bytes: int,
        remember: int = 10_000,
        remember_seconds: float = 60,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._jwks = jwks
        self.policy = JwtPolicy(
            issuer=issuer, audience=audience, algorithms=frozenset(algorithms), skew=skew,
            max_bytes=max_bytes, accepted_types=frozenset(t.lower() for t in token_types),
        )
        self._clock = clock
        self._verified: TTLCache[str, tuple[str, dict[str, Any]]] = TTLCache(
            maxsize=remember, ttl=remember_seconds
        )

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, or :class:`Unauthenticated` saying (safely) why not."""
        try:
            return await self._verify(token)
        except JwtRejected as exc:
            raise Unauthenticated(str(exc), reason=exc.reason) from None

    async def _verify(self, token: str) -> dict[str, Any]:
        if len(token) > self.policy.max_bytes:
            raise JwtRejected("too_large", "token too large")
        remembered = self._verified.get(token)
        if remembered is not None:
            kid, claims = remembered
            if await self._jwk(kid) is None:
                raise JwtRejected("unknown_key", "token signed by an unknown key")
            check_times(claims, self.policy, self._clock())
            return claims
        # A span only where the signature is checked: a remembered token costs a lookup, less
        # than the span would (issue 14)
        with child_span(_tracer, "verify token"):
            header = read_header(token, self.policy)
            assert header.kid is not None  # the policy looks keys up by id
            key = key_from_jwk(await self._jwk(header.kid), header.alg)
            claims = decode(token, key, header, self.policy, self._clock())
        self._verified[token] = (header.kid, claims)
        return claims

    async def _jwk(self, kid: str) -> dict[str, Any] | None:
        try:
            return await self._jwks.get(kid)
        except JwksUnavailable:
            raise JwtRejected("keys_unavailable", "issuer keys unavailable") from None
