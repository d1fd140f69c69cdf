"""The OAuth connect flow, with Gatehouse as the client: authorization code + PKCE S256.

mcp_server runs this (it alone holds client secrets and token keys); the gateway only passes
the browser through. :meth:`ConnectFlow.start` makes a one-time ``state`` and a PKCE verifier
and keeps them in Redis under the SHA-256 of the state, with a TTL, bound to the browser (a hash
of its session cookie, supplied by the gateway), the organisation, the user and the provider.
:meth:`ConnectFlow.complete` consumes that record with ``GETDEL`` before anything else, so a
state works once whatever happens next, then checks binding, tenant, provider and RFC 9207
``iss``, exchanges the code with the verifier at the exact ``redirect_uri`` it was issued for,
and stores the grant. A provider's ``error`` answer (e.g. ``access_denied``) stores nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlencode

import aiohttp
import jwt
from redis.asyncio import Redis

from oauth.catalogue import ConfiguredProvider
from oauth.disconnect import Disconnected, disconnect
from oauth.errors import ConnectRejected, OAuthError
from oauth.revocation import revoker
from oauth.store import ConnectionInfo, TokenStore
from oauth.token_endpoint import TokenEndpoint, TokenResponse
from oauth.vault import TokenBundle
from sql import Tenant

STATE_PREFIX = "gatehouse:connect:state:"
_MAX_ACCOUNT = 320
_MAX_USERINFO_BYTES = 65_536


@dataclass(frozen=True)
class CallbackParams:
    """What the provider sent back to the redirect URI (all optional: attackers send anything)."""

    state: str = ""
    code: str = ""
    iss: str | None = None
    error: str = ""
    error_description: str = ""


@dataclass(frozen=True)
class Connected:
    provider: str
    account: str
    scopes: tuple[str, ...]


@dataclass(frozen=True)
class Denied:
    """The provider answered an error (e.g. the user declined); nothing was stored."""

    provider: str
    error: str
    description: str


class CodeEndpoint(TokenEndpoint):
    """The token endpoint, also for the authorization-code grant (RFC 6749 §4.1.3, RFC 7636)."""

    async def exchange(
        self, code: str, verifier: str, redirect_uri: str
    ) -> tuple[TokenResponse, str | None]:
        """The token response and the ID token if any; :class:`TokenEndpointError` if refused."""
        form = {"grant_type": "authorization_code", "code": code,
                "redirect_uri": redirect_uri, "code_verifier": verifier}
        status, document = await self._post(self._token_url, form)
        # Slack (and GitHub) refuse with HTTP 200 and an ``error`` member.
        if status != 200 or (isinstance(document, dict) and "error" in document):
            raise ConnectRejected("exchange_failed", "The provider did not accept the sign-in.")
        id_token = document.get("id_token") if isinstance(document, dict) else None
        return TokenResponse.parse(document), id_token if isinstance(id_token, str) else None


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def state_key(state: str) -> str:
    """Redis key of a state: its hash, so a Redis dump does not hold usable states."""
    return STATE_PREFIX + hashlib.sha256(state.encode("utf-8", "replace")).hexdigest()


class ConnectFlow:
    def __init__(
        self,
        redis: Redis,
        store: TokenStore,
        http: aiohttp.ClientSession,
        providers: Mapping[str, ConfiguredProvider],
        *,
        public_url: str,
        state_ttl: int = 600,
    ) -> None:
        self._redis = redis
        self._store = store
        self._http = http
        self._providers = dict(providers)
        self._public_url = public_url.rstrip("/")
        self._state_ttl = state_ttl

    @property
    def providers(self) -> Mapping[str, ConfiguredProvider]:
        return self._providers

    def redirect_uri(self, provider: str) -> str:
        """Exact, built from configuration only: never from anything the request carries."""
        return f"{self._public_url}/oauth/{quote(provider, safe='')}/callback"

    def provider(self, name: str) -> ConfiguredProvider:
        found = self._providers.get(name)
        if found is None:
            raise ConnectRejected("unknown_provider", "This provider is not available.")
        return found

    async def connections(
        self, tenant: Tenant
    ) -> list[tuple[ConfiguredProvider, ConnectionInfo | None]]:
        return [(p, await self._store.info(tenant, p.name)) for p in self._providers.values()]

    async def start(self, tenant: Tenant, provider_name: str, binding: str) -> str:
        """The provider's authorization URL for a new one-time state bound to ``binding``."""
        provider = self.provider(provider_name)
        state, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(64)
        record = {"org": tenant.org_id, "user": tenant.user_id, "provider": provider.name,
                  "binding": binding, "verifier": verifier,
                  "redirect_uri": self.redirect_uri(provider.name)}
        await self._redis.set(state_key(state), json.dumps(record), ex=self._state_ttl)
        spec = provider.spec
        extras = dict(spec.authorization_params)
        if "offline_access" in provider.scopes:  # OpenID Connect Core §11: needs consent
            extras.setdefault("prompt", "consent")
        query = {  # the flow's own parameters win over the catalogue's fixed extras
            **extras,
            "response_type": "code", "client_id": provider.client.client_id,
            "redirect_uri": record["redirect_uri"],
            spec.scope_parameter: spec.scope_separator.join(provider.scopes),
            "state": state, "code_challenge": s256(verifier), "code_challenge_method": "S256",
        }
        sep = "&" if "?" in spec.authorization_endpoint else "?"
        return spec.authorization_endpoint + sep + urlencode(query)

    async def complete(
        self, tenant: Tenant, provider_name: str, binding: str, params: CallbackParams
    ) -> Connected | Denied:
        record = await self._consume_state(params.state)
        if not binding or not hmac.compare_digest(str(record.get("binding", "")), binding):
            raise ConnectRejected("state_mismatch", "This sign-in was started in another browser.")
        if (record.get("org"), record.get("user")) != (tenant.org_id, tenant.user_id):
            raise ConnectRejected("state_mismatch", "This sign-in was started by someone else.")
        if record.get("provider") != provider_name:
            raise ConnectRejected("provider_mismatch", "This sign-in was for another provider.")
        provider = self.provider(provider_name)
        _check_iss(provider, params.iss)
        if params.error:
            return Denied(provider.name, params.error[:100], params.error_description[:500])
        if not params.code:
            raise ConnectRejected("missing_code", "The provider sent no authorization code.")
        endpoint = _endpoint(self._http, provider)
        try:
            response, id_token = await endpoint.exchange(
                params.code, str(record["verifier"]), str(record["redirect_uri"]))
        except OAuthError as exc:
            if isinstance(exc, ConnectRejected):
                raise
            raise ConnectRejected("exchange_failed", "The provider did not complete it.") from None
        bundle = _bundle(provider, response)
        account = await self._account(provider, response.access_token, id_token)
        await self._store.save(tenant, provider.name, bundle, account=account)
        return Connected(provider.name, account, bundle.scopes)

    async def disconnect(self, tenant: Tenant, provider_name: str) -> Disconnected:
        """Revocation at the provider (when it offers a way), then local delete."""
        provider = self.provider(provider_name)
        return await disconnect(self._store, revoker(self._http, provider), tenant,
                                provider.name)

    async def _consume_state(self, state: str) -> dict[str, object]:
        if not state or len(state) > 512:
            raise ConnectRejected("missing_state", "The sign-in answer carried no valid state.")
        raw = await self._redis.getdel(state_key(state))
        if raw is None:
            raise ConnectRejected(
                "unknown_state", "This sign-in has expired or was already completed.")
        record = json.loads(raw)
        assert isinstance(record, dict)
        return record

    async def _account(
        self, provider: ConfiguredProvider, access: str, id_token: str | None
    ) -> str:
        """Whom the grant is for, for display only (never used to authorise anything)."""
        claims: dict[str, object] = {}
        if provider.spec.userinfo_endpoint:
            claims = await self._userinfo(provider.spec.userinfo_endpoint, access,
                                          provider.spec.api_headers)
        if not claims and id_token:
            # Received straight from the token endpoint over the back channel; display only.
            try:
                claims = jwt.decode(id_token, options={"verify_signature": False})
            except jwt.PyJWTError:
                claims = {}
        fields = (provider.spec.account_field, "email", "preferred_username", "name", "sub")
        for name in fields:
            value = claims.get(name)
            if isinstance(value, str | int) and str(value):
                return str(value)[:_MAX_ACCOUNT]
        return ""

    async def _userinfo(self, url: str, access: str, api_headers: Mapping[str, str]
                        ) -> dict[str, object]:
        """The provider's API headers too (Notion's ``/v1/users/me`` needs Notion-Version)."""
        headers = {"Accept": "application/json", **api_headers,
                   "Authorization": f"Bearer {access}"}
        try:
            async with self._http.get(url, headers=headers, allow_redirects=False) as response:
                body = await response.content.read(_MAX_USERINFO_BYTES)
                if response.status != 200:
                    return {}
            document = json.loads(body)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            return {}
        return document if isinstance(document, dict) else {}


def _check_iss(provider: ConfiguredProvider, iss: str | None) -> None:
    """RFC 9207: an ``iss`` present must equal the issuer; absent is refused where advertised."""
    if iss is None:
        if provider.spec.returns_iss:
            raise ConnectRejected("iss_missing", "The sign-in answer did not name its issuer.")
        return
    issuer = provider.spec.issuer
    if issuer is None or not hmac.compare_digest(iss, issuer):
        raise ConnectRejected("iss_mismatch", "The sign-in answer came from another issuer.")


def _endpoint(http: aiohttp.ClientSession, provider: ConfiguredProvider) -> CodeEndpoint:
    return CodeEndpoint(http, provider.spec.token_endpoint, provider.client)


def _bundle(provider: ConfiguredProvider, response: TokenResponse) -> TokenBundle:
    expires = None
    if response.expires_in is not None:
        expires = datetime.now(UTC) + timedelta(seconds=response.expires_in)
    # No (or an empty) ``scope``: as requested (RFC 6749 §5.1). oidc-provider sends "" when the
    # access token is for a resource server while openid/offline_access were still granted.
    granted = response.scope
    scopes = tuple(granted.replace(",", " ").split()) if granted else provider.scopes
    return TokenBundle(response.access_token, response.refresh_token, expires, scopes)
