"""The internal assertion: the gateway's short-lived statement of who is calling mcp_server.

The gateway never forwards the caller's own token (MCP forbids token passthrough). Instead it
signs an Ed25519 JWT for audience ``gatehouse-mcp-server`` that lives at most
:data:`MAX_LIFETIME` seconds and is bound to organisation, user, session, roles and the
session's tool allow-list. Only the gateway holds the private key; mcp_server holds the public
key, so a compromised mcp_server cannot mint assertions.

Signing (gateway) and verifying (mcp_server) cost more CPU than anything else either does for a
forwarded call, so both remember: the gateway reuses one assertion per identity for the first
two thirds of its lifetime, and mcp_server remembers a verified assertion by its SHA-256 digest
until it expires (each use still held to its time claims). What changes per request, the
request id and trace context, travels in the ``X-Request-Id`` and ``traceparent`` headers
instead (an older assertion's ``rid``/``traceparent`` claims are still read as a fallback).
A reused assertion can be replayed no longer, nor by anyone else, than a per-request one could:
both live the same lifetime and travel only between gateway and mcp_server.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

import jwt
from cachetools import TTLCache
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from oauth.errors import AssertionRejected, JwtRejected
from oauth.jwt_rules import JwtPolicy, check_times, decode, read_header

ISSUER = "gatehouse-gateway"
AUDIENCE = "gatehouse-mcp-server"
ALGORITHM = "EdDSA"
TOKEN_TYPE = "gatehouse-assertion+jwt"
MAX_LIFETIME = 60
MAX_BYTES = 16_384  # a session's tool allow-list travels inside
REMEMBERED = 10_000  # identities (gateway) and verified assertions (mcp_server) kept at most

POLICY = JwtPolicy(
    issuer=ISSUER, audience=AUDIENCE, algorithms=frozenset({ALGORITHM}), skew=5,
    max_bytes=MAX_BYTES, accepted_types=frozenset({TOKEN_TYPE}),
    required_claims=("exp", "iat", "iss", "aud", "sub", "org"),
    max_lifetime=MAX_LIFETIME, keys_by_id=False,
)


@dataclass(frozen=True)
class CallerIdentity:
    """What mcp_server learns about a call; nothing here is a credential."""

    org_id: str
    user_id: str
    request_id: str
    roles: tuple[str, ...] = ()
    session_id: str | None = None
    traceparent: str | None = None
    allowed_tools: tuple[str, ...] | None = None  # None: every tool


class AssertionSigner:
    """Signs the assertion of an identity, reusing it while two thirds of its lifetime remain
    unspent (so it always reaches mcp_server with at least a third to go)."""

    def __init__(self, private_key: Ed25519PrivateKey, *, lifetime: int = 30,
                 remember: int = REMEMBERED) -> None:
        if not 0 < lifetime <= MAX_LIFETIME:
            raise ValueError(f"assertion lifetime must be 1..{MAX_LIFETIME} seconds")
        self._key = private_key
        self._lifetime = lifetime
        reuse = lifetime * 2 // 3
        self._signed: TTLCache[tuple[object, ...], str] | None = (
            TTLCache(maxsize=remember, ttl=reuse) if reuse >= 1 and remember > 0 else None)

    def sign(self, caller: CallerIdentity) -> str:
        """The assertion of ``caller``'s identity (not its request id or trace context, which
        travel in headers)."""
        key = (caller.org_id, caller.user_id, caller.session_id, caller.roles,
               caller.allowed_tools)
        token = None if self._signed is None else self._signed.get(key)
        if token is None:
            token = self._sign(caller)
            if self._signed is not None:
                self._signed[key] = token
        return token

    def _sign(self, caller: CallerIdentity) -> str:
        now = int(time.time())
        claims: dict[str, object] = {
            "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + self._lifetime,
            "jti": uuid.uuid4().hex, "org": caller.org_id, "sub": caller.user_id,
            "roles": list(caller.roles),
        }
        if caller.session_id is not None:
            claims["sid"] = caller.session_id
        if caller.allowed_tools is not None:
            claims["tools"] = list(caller.allowed_tools)
        return jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"typ": TOKEN_TYPE})


class AssertionVerifier:
    """mcp_server's check of the gateway's assertion, under the shared JWT rules; a verified
    assertion is remembered by digest and only its time claims are checked again."""

    def __init__(self, public_key: Ed25519PublicKey, *, remember: int = REMEMBERED) -> None:
        self._key = public_key
        self._verified: TTLCache[bytes, tuple[dict[str, Any], CallerIdentity]] = TTLCache(
            maxsize=max(remember, 1), ttl=MAX_LIFETIME + POLICY.skew)

    def verify(self, token: str, *, now: float | None = None,
               request_id: str | None = None) -> CallerIdentity:
        """The caller ``token`` vouches for; ``request_id`` (from the request's header) wins
        over an ``rid`` claim."""
        moment = time.time() if now is None else now
        digest = hashlib.sha256(token.encode()).digest()
        remembered = self._verified.get(digest)
        try:
            if remembered is None:
                remembered = self._verify(token, moment)
                self._verified[digest] = remembered
            else:
                check_times(remembered[0], POLICY, moment)
        except AssertionRejected:
            raise
        except JwtRejected as exc:
            raise AssertionRejected(f"invalid assertion: {exc}", exc.reason) from None
        caller = remembered[1]
        return caller if request_id is None else replace(caller, request_id=request_id)

    def _verify(self, token: str, now: float) -> tuple[dict[str, Any], CallerIdentity]:
        claims = decode(token, self._key, read_header(token, POLICY), POLICY, now)
        return claims, CallerIdentity(
            org_id=str(claims["org"]),
            user_id=str(claims["sub"]),
            request_id=str(claims.get("rid") or ""),
            roles=tuple(str(r) for r in claims.get("roles", [])),
            session_id=claims.get("sid"),
            traceparent=claims.get("traceparent"),
            allowed_tools=_tools(claims.get("tools")),
        )


def _tools(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise AssertionRejected("assertion tools claim is malformed")
    return tuple(value)
