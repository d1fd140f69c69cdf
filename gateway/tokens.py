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

import math
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import jwt
from cachetools import TTLCache

from gateway.errors import Unauthenticated
from gateway.jwks import JwksCache, JwksUnavailable

_KID = re.compile(r"^[A-Za-z0-9._~+/=-]{1,128}$")
_SYMMETRIC = {"HS256", "HS384", "HS512", "none"}

# Which key types can produce which signature algorithms.
_KEY_TYPES = {"RSA": "RS PS", "EC": "ES", "OKP": "EdDSA Ed"}


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
        unsafe = _SYMMETRIC.intersection(algorithms)
        if unsafe:
            raise ValueError(f"algorithms {sorted(unsafe)} cannot verify third-party tokens")
        self._jwks = jwks
        self._issuer = issuer
        self._audience = audience
        self._algorithms = frozenset(algorithms)
        self._token_types = frozenset(t.lower() for t in token_types)
        self._skew = skew
        self._max_bytes = max_bytes
        self._clock = clock
        self._verified: TTLCache[str, tuple[str, dict[str, Any]]] = TTLCache(
            maxsize=remember, ttl=remember_seconds
        )

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, or :class:`Unauthenticated` saying (safely) why not."""
        if len(token) > self._max_bytes:
            raise Unauthenticated("token too large")
        remembered = self._verified.get(token)
        if remembered is not None:
            kid, claims = remembered
            if await self._jwks.get(kid) is None:
                raise Unauthenticated("token signed by an unknown key")
            self._check_times(claims)
            return claims
        header = _header(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise Unauthenticated("token algorithm not allowed")
        if "crit" in header:
            raise Unauthenticated("token has critical header parameters this server does not know")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in self._token_types:
            raise Unauthenticated("token type not accepted")
        key = await self._key(header.get("kid"), alg)
        claims = self._decode(token, key, alg)
        self._check_times(claims)
        self._verified[token] = (header["kid"], claims)
        return claims

    async def _key(self, kid: object, alg: str) -> jwt.PyJWK:
        if not isinstance(kid, str) or not _KID.match(kid):
            raise Unauthenticated("token key id missing or malformed")
        try:
            jwk = await self._jwks.get(kid)
        except JwksUnavailable as exc:
            raise Unauthenticated("issuer keys unavailable") from exc
        if jwk is None:
            raise Unauthenticated("token signed by an unknown key")
        if "alg" in jwk and jwk["alg"] != alg:
            raise Unauthenticated("token algorithm does not match its key")
        if not any(alg.startswith(p) for p in _KEY_TYPES.get(jwk.get("kty", ""), "").split()):
            raise Unauthenticated("token algorithm does not match its key")
        try:
            return jwt.PyJWK(jwk, algorithm=alg)
        except jwt.PyJWTError as exc:
            raise Unauthenticated("token algorithm does not match its key") from exc

    def _decode(self, token: str, key: jwt.PyJWK, alg: str) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._skew,
                options={"require": ["exp", "iss", "aud"], "strict_aud": False},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("token expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise Unauthenticated("token not yet valid") from exc
        except (jwt.InvalidAudienceError, jwt.InvalidIssuerError) as exc:
            raise Unauthenticated("token not issued for this resource") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated("token invalid") from exc

    def _check_times(self, claims: dict[str, Any]) -> None:
        """PyJWT tolerates numeric strings and floats; NumericDates here must be integers."""
        now = self._clock()
        for name in ("exp", "nbf", "iat"):
            value = claims.get(name)
            if name != "exp" and value is None:
                continue
            if type(value) is not int or not math.isfinite(value):
                raise Unauthenticated(f"token claim {name} must be an integer time")
        if claims["exp"] + self._skew <= now:
            raise Unauthenticated("token expired")
        if claims.get("nbf", 0) - self._skew > now:
            raise Unauthenticated("token not yet valid")
        if claims.get("iat", 0) - self._skew > now:
            raise Unauthenticated("token issued in the future")


def _header(token: str) -> dict[str, Any]:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise Unauthenticated("token malformed") from exc
    if not isinstance(header, dict):
        raise Unauthenticated("token malformed")
    return header
