"""SECURITY.md 1-13 against every use of the shared JWT rules (:mod:`oauth.jwt_rules`): inbound
access tokens, ID tokens at sign-in, and the internal assertion. Each forgery must be refused by
every use it applies to, for the specific reason, so a defence removed from the core fails here
once per use.

Access and ID tokens are verified against a real HTTP JWKS endpoint; tokens are forged with
PyJWT and by hand.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.connect.signin_oidc import validate_id_token
from gateway.errors import SigninError, Unauthenticated
from gateway.jwks import JwksCache
from gateway.tokens import TokenVerifier
from oauth import assertion
from oauth.errors import AssertionRejected
from tests.support.jwks_server import JwksServer, KeyPair

ISSUER = "https://idp.example.test"
AUDIENCE = "https://gatehouse.example.test/mcp"
CLIENT_ID = "gatehouse-signin"
NONCE = "expected-nonce"
SKEW = 60
ACCESS, ID_TOKEN, ASSERTION = "access_token", "id_token", "assertion"
JWKS_USES = (ACCESS, ID_TOKEN)


@dataclass
class Use:
    """One use of the rules: how to sign a genuine token, and why it refuses one (None: it
    accepts). Cases about key ids and JWKs take ``jwks_use``: the assertion's key is fixed."""

    name: str
    key: Any  # private key
    public_pem: bytes
    alg: str
    header: dict[str, Any]
    claims: Callable[[], dict[str, Any]]
    refusal: Callable[[str], Awaitable[str | None]]

    def sign(self, payload: dict[str, Any], *, key: Any = None, alg: str | None = None,
             **header: Any) -> str:
        headers = {**self.header, **header}
        headers = {k: v for k, v in headers.items() if v is not None}
        return jwt.encode(payload, key or self.key, algorithm=alg or self.alg, headers=headers)

    def genuine(self, **overrides: Any) -> str:
        payload = {**self.claims(), **overrides}
        return self.sign({k: v for k, v in payload.items() if v is not None})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw(header: dict[str, Any], payload: str | dict[str, Any], signature: bytes = b"") -> str:
    body = payload if isinstance(payload, str) else json.dumps(payload)
    return ".".join([b64(json.dumps(header).encode()), b64(body.encode()), b64(signature)])


def now() -> int:
    return int(time.time())


@pytest.fixture(scope="module")
def rsa_key() -> KeyPair:
    return KeyPair("signing-1")


@pytest.fixture(scope="module")
def jwks_server(rsa_key: KeyPair) -> Iterator[JwksServer]:
    with JwksServer() as server:
        server.keys = [rsa_key.jwk(), KeyPair("pss-key").jwk("PS256")]
        yield server


@pytest.fixture
async def jwks(jwks_server: JwksServer) -> AsyncIterator[JwksCache]:
    async with aiohttp.ClientSession() as http:
        yield JwksCache(jwks_server.url, http, ttl=300, cooldown=30, fetch_timeout=1)


def _pem(private: Any) -> bytes:
    return bytes(private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def access_use(jwks: JwksCache, key: KeyPair) -> Use:
    verifier = TokenVerifier(jwks, issuer=ISSUER, audience=AUDIENCE, algorithms=["RS256", "PS256"],
                             token_types=["at+jwt"], skew=SKEW, max_bytes=8192)

    async def refusal(token: str) -> str | None:
        try:
            await verifier.verify(token)
        except Unauthenticated as exc:
            return exc.reason
        return None

    return Use(ACCESS, key.private, _pem(key.private), "RS256", {"kid": key.kid, "typ": "at+jwt"},
               lambda: {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now(),
                        "nbf": now(), "exp": now() + 300}, refusal)


def id_token_use(jwks: JwksCache, key: KeyPair) -> Use:
    async def refusal(token: str) -> str | None:
        try:
            await validate_id_token(token, jwks=jwks, issuer=ISSUER, client_id=CLIENT_ID,
                                    nonce=NONCE, algorithms=["RS256", "PS256"], skew=SKEW,
                                    max_bytes=8192)
        except SigninError as exc:
            return exc.reason
        return None

    return Use(ID_TOKEN, key.private, _pem(key.private), "RS256", {"kid": key.kid},
               lambda: {"iss": ISSUER, "aud": CLIENT_ID, "sub": "alice", "iat": now(),
                        "nbf": now(), "exp": now() + 300, "nonce": NONCE}, refusal)


def assertion_use() -> Use:
    key = Ed25519PrivateKey.generate()
    verifier = assertion.AssertionVerifier(key.public_key())

    async def refusal(token: str) -> str | None:
        try:
            verifier.verify(token)
        except AssertionRejected as exc:
            return exc.reason
        return None

    return Use(ASSERTION, key, _pem(key), assertion.ALGORITHM, {"typ": assertion.TOKEN_TYPE},
               lambda: {"iss": assertion.ISSUER, "aud": assertion.AUDIENCE, "sub": "alice",
                        "org": "acme", "rid": "r1", "iat": now(), "exp": now() + 30}, refusal)


@pytest.fixture(params=[ACCESS, ID_TOKEN, ASSERTION])
def use(request: pytest.FixtureRequest, jwks: JwksCache, rsa_key: KeyPair) -> Use:
    if request.param == ASSERTION:
        return assertion_use()
    return (access_use if request.param == ACCESS else id_token_use)(jwks, rsa_key)


@pytest.fixture(params=JWKS_USES)
def jwks_use(request: pytest.FixtureRequest, jwks: JwksCache, rsa_key: KeyPair) -> Use:
    factory = access_use if request.param == ACCESS else id_token_use
    return factory(jwks, rsa_key)


async def test_a_genuine_token_is_accepted(use: Use) -> None:
    assert await use.refusal(use.genuine()) is None


@pytest.mark.parametrize("signature", [b"", b"anything"])
async def test_1_alg_none(use: Use, signature: bytes) -> None:
    token = raw({**use.header, "alg": "none"}, use.claims(), signature)
    assert await use.refusal(token) == "algorithm"


async def test_2_hs256_with_the_public_key_as_secret(use: Use) -> None:
    header = {**use.header, "alg": "HS256"}
    signing_input = raw(header, use.claims()).rsplit(".", 1)[0]
    mac = hmac.new(use.public_pem, signing_input.encode(), hashlib.sha256).digest()
    assert await use.refusal(signing_input + "." + b64(mac)) == "algorithm"


async def test_3_algorithm_outside_the_allow_list(use: Use) -> None:
    other = KeyPair("other").private
    assert await use.refusal(use.sign(use.claims(), key=other, alg="RS512")) == "algorithm"


async def test_3_header_alg_differing_from_the_jwks_alg(jwks_use: Use) -> None:
    # The JWK "pss-key" says PS256; a token claiming RS256 for it must not verify.
    token = jwks_use.sign(jwks_use.claims(), kid="pss-key")
    assert await jwks_use.refusal(token) == "key_mismatch"


async def test_4_flipped_signature_byte(use: Use) -> None:
    head, body, signature = use.genuine().split(".")
    raw_signature = bytearray(base64.urlsafe_b64decode(signature + "=="))
    raw_signature[5] ^= 0x01
    assert await use.refusal(f"{head}.{body}.{b64(bytes(raw_signature))}") == "signature"


async def test_4_payload_edited_without_resigning(use: Use) -> None:
    head, _, signature = use.genuine().split(".")
    body = b64(json.dumps({**use.claims(), "sub": "mallory"}).encode())
    assert await use.refusal(f"{head}.{body}.{signature}") == "signature"


@pytest.mark.parametrize("kid", ["../../etc/passwd", "1' OR '1'='1", "k" * 10_000])
async def test_5_hostile_kid(jwks_use: Use, jwks_server: JwksServer, kid: str) -> None:
    await jwks_use.refusal(jwks_use.genuine())  # the key set is cached
    fetches = jwks_server.fetches
    for _ in range(20):
        assert await jwks_use.refusal(jwks_use.sign(jwks_use.claims(), kid=kid)) in (
            "key_id", "unknown_key", "too_large")
    assert jwks_server.fetches <= fetches + 1  # at most one refetch per cooldown


@pytest.mark.parametrize("param", ["jku", "x5u", "jwk"])
async def test_6_key_location_headers_are_ignored(use: Use, param: str) -> None:
    attacker = Ed25519PrivateKey.generate() if use.alg == "EdDSA" else KeyPair("k").private
    value: Any = "https://attacker.example/keys"
    if param == "jwk":
        value = json.loads(jwt.algorithms.get_default_algorithms()[use.alg].to_jwk(
            attacker.public_key()))
    assert await use.refusal(use.sign(use.claims(), key=attacker, **{param: value})) == "signature"


@pytest.mark.parametrize(("claim", "offset", "reason"), [
    ("exp", -(SKEW + 5), "expired"), ("nbf", SKEW + 5, "not_yet_valid"),
    ("iat", SKEW + 5, "issued_in_future")])
async def test_8_time_claims_beyond_the_skew(
    use: Use, claim: str, offset: int, reason: str
) -> None:
    skew = SKEW if use.name in JWKS_USES else assertion.POLICY.skew
    moved = offset - SKEW + skew if offset > 0 else offset + SKEW - skew
    assert await use.refusal(use.genuine(**{claim: now() + moved})) == reason


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
async def test_8_time_claims_within_the_skew(use: Use, claim: str) -> None:
    skew = SKEW if use.name in JWKS_USES else assertion.POLICY.skew
    shift = -(skew - 3) if claim == "exp" else skew - 3
    assert await use.refusal(use.genuine(**{claim: now() + 30 + shift if claim == "exp"
                                            else now() + shift})) is None


@pytest.mark.parametrize(("exp", "reason"), [
    (None, "missing_claim"), ("2000000000", "time_claim"), (float(now() + 30), "time_claim"),
    (True, "time_claim"), ("NaN", "time_claim")])
async def test_9_malformed_exp(use: Use, exp: object, reason: str) -> None:
    payload = {k: v for k, v in use.claims().items() if k != "exp"}
    if exp == "NaN":
        body = json.dumps(payload)[:-1] + ', "exp": NaN}'
        signing_input = raw({**use.header, "alg": use.alg}, body).rsplit(".", 1)[0]
        algorithm = jwt.algorithms.get_default_algorithms()[use.alg]
        token = signing_input + "." + b64(algorithm.sign(signing_input.encode(), use.key))
    else:
        token = use.sign(payload if exp is None else {**payload, "exp": exp})
    assert await use.refusal(token) == reason


def _audience_of(use: Use) -> str:
    return {ACCESS: AUDIENCE, ID_TOKEN: CLIENT_ID, ASSERTION: assertion.AUDIENCE}[use.name]


@pytest.mark.parametrize(("claim", "value", "reason"), [
    ("iss", "https://evil.example", "audience"), ("iss", "TRAILING_SLASH", "audience"),
    ("iss", None, "missing_claim"), ("aud", "https://other.example/mcp", "audience"),
    ("aud", None, "missing_claim"), ("aud", "", "missing_claim"), ("aud", [], "missing_claim")])
async def test_10_wrong_issuer_or_audience(use: Use, claim: str, value: Any, reason: str) -> None:
    payload = use.claims()
    if value == "TRAILING_SLASH":
        value = payload["iss"] + "/"
    if value is None:
        del payload[claim]
    else:
        payload[claim] = value
    assert await use.refusal(use.sign(payload)) == reason


async def test_11_unknown_crit_header(use: Use) -> None:
    extension: dict[str, Any] = {"urn:example:unknown": 1}
    token = use.sign(use.claims(), crit=["urn:example:unknown"], **extension)
    assert await use.refusal(token) in ("crit", "malformed")


async def test_12_oversized_token_is_refused_before_parsing(use: Use) -> None:
    assert await use.refusal("x" * 20_000) == "too_large"


async def test_13_a_token_of_another_type(use: Use) -> None:
    typ = {ACCESS: "JWT", ID_TOKEN: "at+jwt", ASSERTION: "JWT"}[use.name]
    assert await use.refusal(use.sign(use.claims(), typ=typ)) == "type"
