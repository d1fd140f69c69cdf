"""A provider's token and revocation endpoints over HTTP (RFC 6749 §6, RFC 7009).

:meth:`TokenEndpoint.refresh` POSTs ``grant_type=refresh_token`` and is the production
``refresh_grant`` of :class:`oauth.refresh.Refresher`. Provider answers are size-capped and never
echoed into errors beyond the OAuth ``error`` code; request bodies (the tokens) are never logged.
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import quote_plus

import aiohttp

from oauth.errors import RefreshFailed, TokenEndpointError

MAX_RESPONSE_BYTES = 65_536
AuthMethod = Literal["client_secret_basic", "client_secret_post", "none"]


@dataclass(frozen=True)
class TokenResponse:
    """A successful token response (RFC 6749 §5.1); ``repr`` shows no token."""

    access_token: str = field(repr=False)
    expires_in: float | None = None
    refresh_token: str | None = field(default=None, repr=False)  # None: keep the current one
    scope: str | None = None  # None: unchanged

    @classmethod
    def parse(cls, document: object) -> TokenResponse:
        """RFC 6749 §5.1, or Slack's user-token answer: with only ``user_scope`` requested,
        ``oauth.v2.access`` puts the user's token under ``authed_user`` and none at the top."""
        if not isinstance(document, dict):
            raise TokenEndpointError("invalid_response")
        nested = document.get("authed_user")
        if "access_token" not in document and isinstance(nested, dict):
            document = nested
        access, refresh = document.get("access_token"), document.get("refresh_token")
        expires_in, scope = document.get("expires_in"), document.get("scope")
        if not isinstance(access, str) or not access:
            raise TokenEndpointError("invalid_response")
        if refresh is not None and not isinstance(refresh, str):
            raise TokenEndpointError("invalid_response")
        if expires_in is not None and not isinstance(expires_in, int | float | str):
            raise TokenEndpointError("invalid_response")
        try:
            seconds = None if expires_in is None else float(expires_in)
        except ValueError:
            raise TokenEndpointError("invalid_response") from None
        return cls(access, seconds, refresh or None, scope if isinstance(scope, str) else None)


@dataclass(frozen=True)
class ClientCredentials:
    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    auth_method: AuthMethod = "client_secret_basic"


class TokenEndpoint:
    """One provider's endpoints, using a shared ``aiohttp`` session owned by the caller."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        token_url: str,
        client: ClientCredentials,
        *,
        revocation_url: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._session = session
        self._token_url = token_url
        self._revocation_url = revocation_url
        self._client = client
        self._timeout = timeout

    async def refresh(self, refresh_token: str) -> TokenResponse:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        status, document = await self._post(self._token_url, form)
        # Some providers (GitHub) answer a refused refresh with 200 and an ``error`` member.
        if status != 200 or (isinstance(document, dict) and "error" in document):
            raise _error(status, document)
        return TokenResponse.parse(document)

    async def revoke(self, token: str, hint: str = "refresh_token") -> None:
        """RFC 7009: a 200 means revoked, or unknown to the provider (also fine)."""
        if self._revocation_url is None:
            raise TokenEndpointError("unsupported_revocation")
        status, document = await self._post(
            self._revocation_url, {"token": token, "token_type_hint": hint}
        )
        if status != 200:
            raise _error(status, document)

    async def _post(self, url: str, form: dict[str, str]) -> tuple[int, object]:
        headers = {"Accept": "application/json"}
        client = self._client
        if client.auth_method == "client_secret_basic" and client.client_secret is not None:
            pair = f"{quote_plus(client.client_id)}:{quote_plus(client.client_secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form = {**form, "client_id": client.client_id}
            if client.auth_method == "client_secret_post" and client.client_secret is not None:
                form["client_secret"] = client.client_secret
        try:
            async with (
                asyncio.timeout(self._timeout),
                self._session.post(
                    url, data=form, headers=headers, allow_redirects=False
                ) as response,
            ):
                body = await response.content.read(MAX_RESPONSE_BYTES + 1)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise RefreshFailed(f"token endpoint unreachable: {type(exc).__name__}") from None
        if len(body) > MAX_RESPONSE_BYTES:
            raise TokenEndpointError("invalid_response", status)
        try:
            return status, json.loads(body)
        except ValueError:
            return status, None


def _error(status: int, document: object) -> TokenEndpointError:
    code = document.get("error") if isinstance(document, dict) else None
    if isinstance(code, str) and code:
        return TokenEndpointError(code, status)
    return TokenEndpointError(
        "temporarily_unavailable" if status >= 500 else "invalid_response", status
    )
