"""Revoking a user's grant at the provider when they disconnect.

The catalogue's ``revocation_style`` says how a provider does it:

* ``rfc7009`` — POST the refresh token (else the access token) with its ``token_type_hint`` to
  the revocation endpoint, the client authenticated as at the token endpoint; 200 means revoked
  or already unknown (RFC 7009 §2.2).
* ``github`` — GitHub has no RFC 7009 endpoint. ``DELETE /applications/{client_id}/grant``
  with the access token in a JSON body and the client's credentials as HTTP Basic deletes the
  app's whole authorization for that user, every token with it. Only 204 counts as revoked:
  GitHub answers 404 both for a token it does not know and for wrong client credentials.
* ``notion`` — ``POST /v1/oauth/revoke`` with ``{"token": ...}`` as JSON, the client's
  credentials as HTTP Basic and the ``Notion-Version`` header; 200 means revoked.
* ``slack`` — ``auth.revoke``, called with the token itself; ``{"ok": true}`` means revoked,
  and an answer saying the token no longer works at all means it already was.

The endpoint may contain ``{client_id}``. A revoker raises an :class:`~oauth.errors.OAuthError`
when the provider did not confirm; it never puts a token or a provider body into the message.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from urllib.parse import quote

import aiohttp

from oauth.catalogue import ConfiguredProvider
from oauth.errors import TokenEndpointError
from oauth.provider_client import SLACK_AUTH_ERRORS
from oauth.token_endpoint import TokenEndpoint
from oauth.vault import TokenBundle

Revoke = Callable[[TokenBundle], Awaitable[None]]
TIMEOUT_SECONDS = 10.0
MAX_RESPONSE_BYTES = 65_536


def revoker(http: aiohttp.ClientSession, provider: ConfiguredProvider) -> Revoke | None:
    """How to revoke this provider's grants; None when it offers no way."""
    spec, client = provider.spec, provider.client
    if spec.revocation_endpoint is None:
        return None
    url = spec.revocation_endpoint.replace("{client_id}", quote(client.client_id, safe=""))
    if spec.revocation_style == "github":
        return _client_json(http, url, provider, "DELETE", "access_token", confirmed=204)
    if spec.revocation_style == "notion":
        return _client_json(http, url, provider, "POST", "token", confirmed=200)
    if spec.revocation_style == "slack":
        return _slack(http, url)
    endpoint = TokenEndpoint(http, spec.token_endpoint, client, revocation_url=url)
    return rfc7009(endpoint)


def rfc7009(endpoint: TokenEndpoint) -> Revoke:
    async def revoke(bundle: TokenBundle) -> None:
        # Revoking the refresh token also ends its access tokens (RFC 7009 §2.1).
        if bundle.refresh_token:
            await endpoint.revoke(bundle.refresh_token, "refresh_token")
        else:
            await endpoint.revoke(bundle.access_token, "access_token")

    return revoke


def _client_json(http: aiohttp.ClientSession, url: str, provider: ConfiguredProvider,
                 method: str, field: str, *, confirmed: int) -> Revoke:
    """The access token in a JSON body, the client's credentials as plain HTTP Basic (RFC 7617:
    these are REST APIs, not token endpoints, so nothing is form-encoded first)."""
    client = provider.client
    pair = f"{client.client_id}:{client.client_secret or ''}"
    headers = {**provider.spec.api_headers, "Content-Type": "application/json",
               "Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}

    async def revoke(bundle: TokenBundle) -> None:
        body = json.dumps({field: bundle.access_token}).encode()
        status, _ = await _send(http, method, url, headers, body)
        if status != confirmed:
            raise TokenEndpointError("revocation_not_confirmed", status)

    return revoke


def _slack(http: aiohttp.ClientSession, url: str) -> Revoke:
    async def revoke(bundle: TokenBundle) -> None:
        headers = {"Authorization": f"Bearer {bundle.access_token}"}
        status, document = await _send(http, "POST", url, headers, None)
        error = document.get("error") if isinstance(document, dict) else None
        confirmed = isinstance(document, dict) and document.get("ok") is True
        if status != 200 or not (confirmed or error in SLACK_AUTH_ERRORS):
            raise TokenEndpointError("revocation_not_confirmed", status)

    return revoke


async def _send(http: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str],
                body: bytes | None) -> tuple[int, object]:
    try:
        async with (
            asyncio.timeout(TIMEOUT_SECONDS),
            http.request(method, url, headers={"Accept": "application/json", **headers},
                         data=body, allow_redirects=False) as response,
        ):
            raw = await response.content.read(MAX_RESPONSE_BYTES + 1)
            status = response.status
    except (aiohttp.ClientError, TimeoutError, OSError):
        raise TokenEndpointError("temporarily_unavailable") from None
    try:
        return status, json.loads(raw) if raw and len(raw) <= MAX_RESPONSE_BYTES else None
    except ValueError:
        return status, None
