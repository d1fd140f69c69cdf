"""The gateway as an OpenID Connect client of its own issuer: discovery, code exchange and ID
token validation for signing people in to ``/connect`` (:mod:`gateway.connect.signin`).

Why a separate validator rather than :class:`gateway.tokens.TokenVerifier`: an ID token is
addressed to the gateway's *client id*, carries a ``nonce`` and has no ``at+jwt`` type, so the
bearer-token policy does not fit. What is shared is the trust anchor: keys come only from the
issuer's JWKS through the same :class:`gateway.jwks.JwksCache`, never from token headers.
Every failure is a :class:`SigninError` whose message is safe to show (it is escaped anyway).
"""

from __future__ import annotations

import hmac
import json
import math
import re
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import jwt

from gateway.jwks import JwksCache, JwksUnavailable
from gateway.settings import GatewaySettings

_MAX_DOCUMENT = 65_536
_DISCOVERY_TTL = 3600.0
_EXCHANGE_TIMEOUT = 10.0
_KID = re.compile(r"^[A-Za-z0-9._~+/=-]{1,128}$")
_ERROR_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_UNSAFE_ALGS = frozenset({"none", "HS256", "HS384", "HS512"})
_KEY_TYPES = {"RSA": ("RS", "PS"), "EC": ("ES",), "OKP": ("EdDSA", "Ed")}
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


class SigninError(Exception):
    """The sign-in cannot complete; the message explains why to the person signing in."""


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
    """OpenID Connect Core 3.1.3.7: signature by the issuer's key with an allowed asymmetric
    algorithm, ``iss`` exact, ``aud`` holding the client id (``azp`` when several), integer
    ``exp``/``iat`` within the skew, and the ``nonce`` this browser's request stored."""
    refused = "The identity provider's ID token was not accepted"
    if len(token) > max_bytes:
        raise SigninError(f"{refused}: it is too large.")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise SigninError(f"{refused}: it is malformed.") from None
    alg, kid, typ = header.get("alg"), header.get("kid"), header.get("typ")
    if not isinstance(alg, str) or alg not in algorithms or alg in _UNSAFE_ALGS:
        raise SigninError(f"{refused}: its algorithm is not allowed.")
    if "crit" in header:
        raise SigninError(f"{refused}: it has critical header parameters.")
    if isinstance(typ, str) and typ.lower() in {t.lower() for t in access_token_types}:
        raise SigninError(f"{refused}: it is an access token.")
    if not isinstance(kid, str) or not _KID.match(kid):
        raise SigninError(f"{refused}: its key id is missing or malformed.")
    try:
        jwk = await jwks.get(kid)
    except JwksUnavailable:
        raise SigninError("The identity provider's keys are unavailable; try again.") from None
    prefixes = _KEY_TYPES.get(str(jwk.get("kty")), ()) if jwk else ()
    if jwk is None or jwk.get("alg", alg) != alg or not any(map(alg.startswith, prefixes)):
        raise SigninError(f"{refused}: it is not signed by the issuer's key.")
    try:
        key = jwt.PyJWK(jwk, algorithm=alg)
        claims: dict[str, Any] = jwt.decode(
            token, key.key, algorithms=[alg], audience=client_id, issuer=issuer, leeway=skew,
            options={"require": ["exp", "iat", "iss", "aud", "sub"]},
        )
    except jwt.InvalidSignatureError:
        raise SigninError(f"{refused}: its signature is wrong.") from None
    except (jwt.InvalidAudienceError, jwt.InvalidIssuerError):
        raise SigninError(f"{refused}: it was issued for someone else.") from None
    except jwt.ExpiredSignatureError:
        raise SigninError(f"{refused}: it has expired.") from None
    except jwt.PyJWTError:
        raise SigninError(f"{refused}: it is invalid.") from None
    _check_claims(claims, client_id, nonce, skew, time.time() if now is None else now, refused)
    return claims


def _check_claims(claims: dict[str, Any], client_id: str, nonce: str, skew: int, now: float,
                  refused: str) -> None:
    for name in ("exp", "iat", "nbf"):
        value = claims.get(name)
        if (value is not None or name != "nbf") and (
            type(value) is not int or not math.isfinite(value)
        ):
            raise SigninError(f"{refused}: its {name} is not an integer time.")
    if claims["exp"] + skew <= now or claims["iat"] - skew > now:
        raise SigninError(f"{refused}: it is outside its validity period.")
    if claims.get("nbf", 0) - skew > now:
        raise SigninError(f"{refused}: it is not yet valid.")
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    azp = claims.get("azp")
    if (len(audiences) > 1 or azp is not None) and azp != client_id:
        raise SigninError(f"{refused}: it was issued for someone else.")
    found = claims.get("nonce")
    if not isinstance(found, str) or not hmac.compare_digest(found.encode(), nonce.encode()):
        raise SigninError(f"{refused}: it does not answer this sign-in (nonce).")
