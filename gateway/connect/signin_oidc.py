"""The gateway as an OpenID Connect client of its own issuer: discovery, code exchange and ID
token validation for signing people in to ``/connect`` (:mod:`gateway.connect.signin`).

ID tokens are held to the same JWT rules as access tokens (:mod:`oauth.jwt_rules`) under their
own policy: addressed to the gateway's *client id*, never an ``at+jwt`` access token; then the
``azp`` and ``nonce`` checks of OpenID Connect. Keys come only from the issuer's JWKS through the
same :class:`gateway.jwks.JwksCache`, never from token headers.
Every failure is a :class:`gateway.errors.SigninError` whose message is safe to show (it is
escaped anyway).
"""

from __future__ import annotations

import hmac
import json
import re
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from gateway.errors import JwksUnavailable, SigninError
from gateway.jwks import JwksCache
from gateway.settings import GatewaySettings
from oauth.errors import JwtRejected
from oauth.jwt_rules import SYMMETRIC_ALGORITHMS, JwtPolicy, decode, key_from_jwk, read_header

_MAX_DOCUMENT = 65_536
_DISCOVERY_TTL = 3600.0
_EXCHANGE_TIMEOUT = 10.0
_ERROR_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_REFUSED = "The identity provider's ID token was not accepted"
# What each refusal of the shared JWT rules means to the person signing in.
_SIGNIN_PHRASES = {
    "too_large": "it is too large.",
    "malformed": "it is malformed.",
    "algorithm": "its algorithm is not allowed.",
    "crit": "it has critical header parameters.",
    "type": "it is an access token.",
    "key_id": "its key id is missing or malformed.",
    "unknown_key": "it is not signed by the issuer's key.",
    "key_mismatch": "it is not signed by the issuer's key.",
    "signature": "its signature is wrong.",
    "audience": "it was issued for someone else.",
    "expired": "it has expired.",
    "not_yet_valid": "it is not yet valid.",
    "issued_in_future": "it is outside its validity period.",
    "time_claim": "its time claims are not integer times.",
}
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True)
class ProviderMetadata:
    authorization_endpoint: str
    token_endpoint: str
    iss_parameter_supported: bool  # RFC 9207: the callback must then carry ``iss``


@dataclass(frozen=True)
class TokenAnswer:
    id_token: str
    access_token: str | None


def _endpoint(document: dict[str, Any], name: str) -> str:
    """An absolute HTTPS URL (plain HTTP only on loopback, for development and tests)."""
    value = document.get(name)
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or not parts.netloc or parts.fragment or not (
        parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK)
    ):
        raise SigninError("The identity provider's configuration is not usable.")
    assert isinstance(value, str)
    return value


async def _read_json(response: aiohttp.ClientResponse) -> Any:
    body = await response.content.read(_MAX_DOCUMENT + 1)
    if len(body) > _MAX_DOCUMENT:
        raise ValueError("answer too large")
    return json.loads(body)


class SigninClient:
    """One per application: caches the discovery document (only successful fetches)."""

    def __init__(self, settings: GatewaySettings, http: aiohttp.ClientSession,
                 jwks: JwksCache) -> None:
        self._settings = settings
        self._http = http
        self._jwks = jwks
        self._metadata: tuple[float, ProviderMetadata] | None = None

    @property
    def redirect_uri(self) -> str:
        """Exact, derived from configuration only: nothing in a request can change it."""
        return self._settings.public_url.rstrip("/") + "/connect/signin/callback"

    async def metadata(self) -> ProviderMetadata:
        cached = self._metadata
        if cached is not None and time.monotonic() - cached[0] < _DISCOVERY_TTL:
            return cached[1]
        issuer = self._settings.issuer
        url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        timeout = aiohttp.ClientTimeout(total=self._settings.jwks_fetch_timeout_seconds)
        try:
            async with self._http.get(url, timeout=timeout, allow_redirects=False) as response:
                if response.status != 200:
                    raise ValueError(f"discovery answered {response.status}")
                document = await _read_json(response)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            raise SigninError("The identity provider cannot be reached; try again "
                              "shortly.") from None
        if not isinstance(document, dict) or document.get("issuer") != issuer:
            raise SigninError("The identity provider's configuration names another issuer.")
        metadata = ProviderMetadata(
            _endpoint(document, "authorization_endpoint"),
            _endpoint(document, "token_endpoint"),
            document.get("authorization_response_iss_parameter_supported") is True,
        )
        self._metadata = (time.monotonic(), metadata)
        return metadata

    async def exchange(self, code: str, verifier: str) -> TokenAnswer:
        """The token endpoint's answer to the code and its PKCE verifier."""
        settings = self._settings
        form = {"grant_type": "authorization_code", "code": code,
                "redirect_uri": self.redirect_uri, "code_verifier": verifier}
        if settings.signin_resource:
            form["resource"] = settings.signin_resource
        auth = None
        if settings.signin_client_secret is None:
            form["client_id"] = settings.signin_client_id  # public client: PKCE is the proof
        else:  # RFC 6749 2.3.1: both parts form-encoded before Basic
            auth = aiohttp.BasicAuth(quote(settings.signin_client_id, safe=""),
                                     quote(settings.signin_client_secret.get_secret_value(),
                                           safe=""))
        endpoint = (await self.metadata()).token_endpoint
        try:
            async with self._http.post(
                endpoint, data=form, auth=auth, allow_redirects=False,
                headers={"Accept": "application/json"},
                timeout=aiohttp.ClientTimeout(total=_EXCHANGE_TIMEOUT),
            ) as response:
                status = response.status
                answer = await _read_json(response)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            raise SigninError("The identity provider did not answer the sign-in; try "
                              "again.") from None
        if not isinstance(answer, dict):
            raise SigninError("The identity provider answered oddly.")
        if status != 200:
            error = answer.get("error")
            code_text = error if isinstance(error, str) and _ERROR_CODE.match(error) else "error"
            raise SigninError(f"The identity provider refused the sign-in ({code_text}).")
        id_token, access_token = answer.get("id_token"), answer.get("access_token")
        if not isinstance(id_token, str):
            raise SigninError("The identity provider did not return an ID token.")
        return TokenAnswer(id_token, access_token if isinstance(access_token, str) else None)

    async def validate(self, id_token: str, nonce: str) -> dict[str, Any]:
        settings = self._settings
        return await validate_id_token(
            id_token, jwks=self._jwks, issuer=settings.issuer,
            client_id=settings.signin_client_id, nonce=nonce,
            algorithms=settings.algorithms, skew=settings.clock_skew_seconds,
            max_bytes=settings.max_token_bytes,
            access_token_types=settings.accepted_token_types,
        )


async def validate_id_token(
    token: str, *, jwks: JwksCache, issuer: str, client_id: str, nonce: str,
    algorithms: Collection[str], skew: int, max_bytes: int,
    access_token_types: Collection[str] = ("at+jwt", "application/at+jwt"),
    now: float | None = None,
) -> dict[str, Any]:
    """OpenID Connect Core 3.1.3.7: the shared JWT rules (:mod:`oauth.jwt_rules`: allowed
    asymmetric algorithm, the issuer's key, ``iss`` exact, integer ``exp``/``iat`` within the
    skew), then ``aud`` holding the client id (``azp`` when several), and the ``nonce`` this
    browser's request stored."""
    policy = JwtPolicy(
        issuer=issuer, audience=client_id, skew=skew, max_bytes=max_bytes,
        algorithms=frozenset(algorithms) - SYMMETRIC_ALGORITHMS,
        refused_types=frozenset(t.lower() for t in access_token_types),
        required_claims=("exp", "iat", "iss", "aud", "sub"),
    )
    try:
        header = read_header(token, policy)
        assert header.kid is not None  # the policy looks keys up by id
        key = key_from_jwk(await jwks.get(header.kid), header.alg)
        claims = decode(token, key, header, policy, time.time() if now is None else now)
    except JwksUnavailable:
        raise SigninError("The identity provider's keys are unavailable; try again.") from None
    except JwtRejected as exc:
        phrase = _SIGNIN_PHRASES.get(exc.reason, "it is invalid.")
        raise SigninError(f"{_REFUSED}: {phrase}", reason=exc.reason) from None
    _check_audience_and_nonce(claims, client_id, nonce)
    return claims


def _check_audience_and_nonce(claims: dict[str, Any], client_id: str, nonce: str) -> None:
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    azp = claims.get("azp")
    if (len(audiences) > 1 or azp is not None) and azp != client_id:
        raise SigninError(f"{_REFUSED}: it was issued for someone else.")
    found = claims.get("nonce")
    if not isinstance(found, str) or not hmac.compare_digest(found.encode(), nonce.encode()):
        raise SigninError(f"{_REFUSED}: it does not answer this sign-in (nonce).")
