"""The internal assertion: the gateway's short-lived statement of who is calling mcp_server.

The gateway never forwards the caller's own token (MCP forbids token passthrough). Instead it
signs, per request, an Ed25519 JWT for audience ``gatehouse-mcp-server`` that lives at most
:data:`MAX_LIFETIME` seconds and carries organisation, user, session, roles, request id and
trace context. Only the gateway holds the private key; mcp_server holds the public key, so a
compromised mcp_server cannot mint assertions.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from oauth.errors import AssertionRejected, JwtRejected
from oauth.jwt_rules import JwtPolicy, decode, read_header

ISSUER = "gatehouse-gateway"
AUDIENCE = "gatehouse-mcp-server"
ALGORITHM = "EdDSA"
TOKEN_TYPE = "gatehouse-assertion+jwt"
MAX_LIFETIME = 60
MAX_BYTES = 16_384  # a session's tool allow-list travels inside

POLICY = JwtPolicy(
    issuer=ISSUER, audience=AUDIENCE, algorithms=frozenset({ALGORITHM}), skew=5,
    max_bytes=MAX_BYTES, accepted_types=frozenset({TOKEN_TYPE}),
    required_claims=("exp", "iat", "iss", "aud", "sub", "org", "rid"),
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
    def __init__(self, private_key: Ed25519PrivateKey, *, lifetime: int = 30) -> None:
        if not 0 < lifetime <= MAX_LIFETIME:
            raise ValueError(f"assertion lifetime must be 1..{MAX_LIFETIME} seconds")
        self._key = private_key
        self._lifetime = lifetime

    def sign(self, caller: CallerIdentity) -> str:
        now = int(time.time())
        claims: dict[str, object] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + self._lifetime,
            "jti": uuid.uuid4().hex,
            "org": caller.org_id,
            "sub": caller.user_id,
            "roles": list(caller.roles),
            "rid": caller.request_id,
        }
        if caller.session_id is not None:
            claims["sid"] = caller.session_id
        if caller.traceparent is not None:
            claims["traceparent"] = caller.traceparent
        if caller.allowed_tools is not None:
            claims["tools"] = list(caller.allowed_tools)
        return jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"typ": TOKEN_TYPE})


class AssertionVerifier:
    """mcp_server's check of the gateway's assertion, under the shared JWT rules."""

    def __init__(self, public_key: Ed25519PublicKey) -> None:
        self._key = public_key

    def verify(self, token: str, *, now: float | None = None) -> CallerIdentity:
        try:
            header = read_header(token, POLICY)
            claims = decode(token, self._key, header, POLICY, time.time() if now is None else now)
        except AssertionRejected:
            raise
        except JwtRejected as exc:
            raise AssertionRejected(f"invalid assertion: {exc}", exc.reason) from None
        return CallerIdentity(
            org_id=str(claims["org"]),
            user_id=str(claims["sub"]),
            request_id=str(claims["rid"]),
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
