"""Inbound JWT verification, attack by attack (SECURITY.md 1-13).

The verifier runs against a real HTTP JWKS endpoint; tokens are forged with PyJWT and by hand.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from gateway.errors import Unauthenticated
from gateway.jwks import JwksCache
from gateway.tokens import TokenVerifier
from tests.support.jwks_server import JwksServer, KeyPair

ISSUER = "https://idp.example.test"
AUDIENCE = "https://gatehouse.example.test/mcp"
SKEW = 60


@pytest.fixture(scope="module")
def signing_key() -> KeyPair:
    return KeyPair("signing-1")


@pytest.fixture
def jwks_server(signing_key: KeyPair) -> Iterator[JwksServer]:
    with JwksServer() as server:
        server.keys = [signing_key.jwk()]
        yield server


@pytest.fixture
async def verifier(jwks_server: JwksServer) -> AsyncIterator[TokenVerifier]:
    async with aiohttp.ClientSession() as http:
        jwks = JwksCache(jwks_server.url, http, ttl=300, cooldown=30, fetch_timeout=1)
        yield TokenVerifier(
            jwks,
            issuer=ISSUER,
            audience=AUDIENCE,
            algorithms=["RS256", "ES256"],
            token_types=["at+jwt"],
            skew=SKEW,
            max_bytes=8192,
        )


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "org_id": "acme",
            "iat": now, "nbf": now, "exp": now + 300}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(key: KeyPair, payload: dict[str, Any], **header: Any) -> str:
    headers = {"kid": key.kid, "typ": "at+jwt", **header}
    return jwt.encode(payload, key.private, algorithm=headers.pop("alg", "RS256"), headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join([b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()),
                     b64(signature)])


async def rejected(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(Unauthenticated) as info:
        await verifier.verify(token)
    return info.value.detail


async def refusal_reason(verifier: TokenVerifier, token: str) -> str:
    """Which rule of :mod:`oauth.jwt_rules` refused ``token``."""
    with pytest.raises(Unauthenticated) as info:
        await verifier.verify(token)
    return info.value.reason


async def test_valid_token_is_accepted(verifier: TokenVerifier, signing_key: KeyPair) -> None:
    result = await verifier.verify(sign(signing_key, claims()))
    assert (result["sub"], result["org_id"]) == ("alice", "acme")


@pytest.mark.parametrize("signature", [b"", b"anything"])
async def test_alg_none_is_rejected(verifier: TokenVerifier, signature: bytes) -> None:
    token = raw_token({"alg": "none", "typ": "at+jwt", "kid": "signing-1"}, claims(), signature)
    assert "algorithm" in await rejected(verifier, token)


async def test_hs256_with_the_public_key_as_secret_is_rejected(
    verifier: TokenVerifier, signing_key: KeyPair
) -> None:
    public_pem = signing_key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "at+jwt", "kid": signing_key.kid}
    signing_input = ".".join([b64(json.dumps(header).encode()), b64(json.dumps(claims()).encode())])
    import hashlib
    import hmac

    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    assert "algorithm" in await rejected(verifier, signing_input + "." + b64(mac))


async def test_algorithm_outside_allow_list_is_rejected(
    verifier: TokenVerifier, signing_key: KeyPair
) -> None:
    assert "algorithm" in await rejected(verifier, sign(signing_key, claims(), alg="RS512"))


async def test_header_alg_differing_from_the_jwk_alg_is_rejected(
    verifier: TokenVerifier, jwks_server: JwksServer, signing_key: KeyPair
) -> None:
    # The JWK says PS256; a token claiming RS256 for the same key must not verify.
    pss = KeyPair("pss-key")
    pss.private = signing_key.private
    jwks_server.keys.append(pss.jwk(alg="PS256"))
    token = sign(pss, claims(), alg="RS256")
    assert "does not match" in await rejected(verifier, token)


async def test_rsa_key_cannot_verify_an_ec_algorithm(
    verifier: TokenVerifier, signing_key: KeyPair
) -> None:
    token = raw_token({"alg": "ES256", "typ": "at+jwt", "kid": signing_key.kid}, claims(), b"x")
    assert "does not match" in await rejected(verifier, token)


async def test_flipped_signature_byte_is_rejected(
    verifier: TokenVerifier, signing_key: KeyPair
) -> None:
    token = sign(signing_key, claims())
    head, body, sig = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[10] ^= 0x01
    assert await rejected(verifier, f"{head}.{body}.{b64(bytes(raw))}") == "token invalid"


async def test_edited_payload_is_rejected(verifier: TokenVerifier, signing_key: KeyPair) -> None:
    head, _, sig = sign(signing_key, claims()).split(".")
    forged = b64(json.dumps(claims(org_id="other-org")).encode())
    assert await rejected(verifier, f"{head}.{forged}.{sig}") == "token invalid"


@pytest.mark.parametrize(
    "kid", ["../../../../etc/passwd", "' OR 1=1 --", "k" * 10_000, "", None, 42]
)
async def test_hostile_kid_is_rejected_without_fetching(
    verifier: TokenVerifier, jwks_server: JwksServer, signing_key: KeyPair, kid: object
) -> None:
    await verifier.verify(sign(signing_key, claims()))  # warm: the one legitimate fetch
    header: dict[str, Any] = {"alg": "RS256", "typ": "at+jwt"}
    if kid is not None:
        header["kid"] = kid
    token = raw_token(header, claims(), b"signature")
    reason = await rejected(verifier, token)
    assert reason in ("token too large", "token key id missing or malformed",
                      "token signed by an unknown key", "token malformed")
    assert jwks_server.fetches == 1


@pytest.mark.parametrize("param", ["jku", "x5u", "jwk"])
async def test_key_location_headers_are_ignored(
    verifier: TokenVerifier, jwks_server: JwksServer, param: str
) -> None:
    attacker = KeyPair("signing-1")  # same kid as the real key, different key material
    value: Any = attacker.jwk() if param == "jwk" else "https://attacker.example/jwks.json"
    token = sign(attacker, claims(), **{param: value})
    assert await rejected(verifier, token) == "token invalid"


@pytest.mark.parametrize(
    ("field", "offset", "message"),
    [("exp", -(SKEW + 5), "expired"), ("nbf", SKEW + 5, "not yet valid"),
     ("iat", SKEW + 5, "not yet valid")],
)
async def test_time_claims_beyond_skew_are_rejected(
    verifier: TokenVerifier, signing_key: KeyPair, field: str, offset: int, message: str
) -> None:
    token = sign(signing_key, claims(**{field: int(time.time()) + offset}))
    assert message in await rejected(verifier, token)


@pytest.mark.parametrize(
    ("field", "offset"), [("exp", -(SKEW - 10)), ("nbf", SKEW - 10), ("iat", SKEW - 10)]
)
async def test_time_claims_within_skew_are_accepted(
    verifier: TokenVerifier, signing_key: KeyPair, field: str, offset: int
) -> None:
    await verifier.verify(sign(signing_key, claims(**{field: int(time.time()) + offset})))


@pytest.mark.parametrize(("exp", "reason"), [
    (None, "missing_claim"), ("2000000000", "time_claim"),
    (float(int(time.time()) + 300), "time_claim"), ("NaN", "time_claim"), (True, "time_claim")])
async def test_malformed_exp_is_rejected(
    verifier: TokenVerifier, signing_key: KeyPair, exp: object, reason: str
) -> None:
    payload = claims(exp=None)
    if exp == "NaN":
        token = sign(signing_key, payload)  # re-sign by hand below with a literal NaN
        header = jwt.get_unverified_header(token)
        body = json.dumps(payload)[:-1] + ', "exp": NaN}'
        signing_input = b64(json.dumps(header).encode()) + "." + b64(body.encode())
        signature = jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256).sign(
            signing_input.encode(), signing_key.private
        )
        token = signing_input + "." + b64(signature)
    else:
        if exp is not None:
            payload["exp"] = exp
        token = sign(signing_key, payload)
    assert await refusal_reason(verifier, token) == reason


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [({"iss": "https://evil.example"}, "audience"), ({"iss": ISSUER + "/"}, "audience"),
     ({"iss": None}, "missing_claim"), ({"aud": "https://other.example/mcp"}, "audience"),
     ({"aud": None}, "missing_claim"), ({"aud": ""}, "missing_claim"),
     ({"aud": []}, "missing_claim")],
)
async def test_wrong_issuer_or_audience_is_rejected(
    verifier: TokenVerifier, signing_key: KeyPair, overrides: dict[str, Any], reason: str
) -> None:
    payload = claims(**{k: v for k, v in overrides.items() if v is not None})
    for key, value in overrides.items():
        if value is None:
            payload.pop(key)
    assert await refusal_reason(verifier, sign(signing_key, payload)) == reason


async def test_unknown_crit_header_is_rejected(
    verifier: TokenVerifier, signing_key: KeyPair
) -> None:
    token = sign(signing_key, claims(), crit=["urn:example:unknown"], **{"urn:example:unknown": 1})
    assert await rejected(verifier, token) in ("token malformed", "token has critical header "
                                                "parameters this server does not know")


async def test_oversized_token_is_rejected_before_parsing(verifier: TokenVerifier) -> None:
    assert await rejected(verifier, "x" * 9000) == "token too large"


@pytest.mark.parametrize("typ", ["JWT", None, "id_token+jwt"])
async def test_other_token_types_are_rejected(
    verifier: TokenVerifier, signing_key: KeyPair, typ: str | None
) -> None:
    header = {"alg": "RS256", "kid": signing_key.kid}
    if typ:
        header["typ"] = typ
    token = jwt.encode(claims(), signing_key.private, algorithm="RS256", headers=header)
    assert "type" in await rejected(verifier, token)


def test_symmetric_algorithms_cannot_be_configured() -> None:
    with pytest.raises(ValueError, match="HS256"):
        TokenVerifier(
            None,  # type: ignore[arg-type]
            issuer=ISSUER, audience=AUDIENCE, algorithms=["RS256", "HS256"],
            token_types=["at+jwt"], skew=0, max_bytes=8192,
        )


async def test_remembered_token_still_expires_and_loses_trust_with_its_key(
    jwks_server: JwksServer, signing_key: KeyPair
) -> None:
    now = [time.time()]
    async with aiohttp.ClientSession() as http:
        jwks = JwksCache(jwks_server.url, http, ttl=60, cooldown=30, fetch_timeout=1,
                         clock=lambda: now[0])
        verifier = TokenVerifier(
            jwks, issuer=ISSUER, audience=AUDIENCE, algorithms=["RS256"],
            token_types=["at+jwt"], skew=0, max_bytes=8192, clock=lambda: now[0],
        )
        token = sign(signing_key, claims(exp=int(now[0]) + 30))
        await verifier.verify(token)
        await verifier.verify(token)  # remembered
        now[0] += 31
        assert await rejected(verifier, token) == "token expired"

        fresh = sign(signing_key, claims(exp=int(now[0]) + 300))
        await verifier.verify(fresh)
        jwks_server.keys = []
        now[0] += 61  # past the JWKS TTL: the key is gone, so is the remembered token
        assert await rejected(verifier, fresh) == "token signed by an unknown key"
