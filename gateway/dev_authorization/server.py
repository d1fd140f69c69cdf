"""The development authorization server, assembled from authlib's components.

authlib ships no Starlette *server* integration, so this module is that integration, kept thin:
:class:`OAuthRequest` carries an already-read Starlette request (query and form, or JSON) in the
shapes authlib's grants and endpoints read (``create_oauth2_request`` / ``create_json_request``),
and ``handle_response`` returns authlib's ``(status, body, headers)`` as an :class:`Answer` that
the routes send. Everything OAuth is authlib's: the authorization code grant, PKCE
(``CodeChallenge``, narrowed to S256 and required), refresh tokens (rotated), RFC 7591
registration, RFC 9068 ``at+jwt`` access tokens, the RFC 9207 ``iss`` response parameter.

authlib's grants are synchronous and call storage hooks in the middle of their work, while
storage here is asyncio Redis. The routes therefore run each authlib call in a worker thread and
every hook hops back to the event loop for its I/O (``anyio.from_thread.run``).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import anyio.from_thread
from authlib.common.security import generate_token  # type: ignore[import-untyped]
from authlib.oauth2 import OAuth2Error  # type: ignore[import-untyped]
from authlib.oauth2.rfc6749 import (  # type: ignore[import-untyped]
    AuthorizationServer,
    InvalidClientError,
    InvalidRequestError,
    JsonPayload,
    JsonRequest,
    OAuth2Payload,
    OAuth2Request,
)
from authlib.oauth2.rfc6749.grants import (  # type: ignore[import-untyped]
    AuthorizationCodeGrant,
    RefreshTokenGrant,
)
from authlib.oauth2.rfc7591 import (  # type: ignore[import-untyped]
    ClientRegistrationEndpoint,
    InvalidRedirectURIError,
)
from authlib.oauth2.rfc7636 import CodeChallenge  # type: ignore[import-untyped]
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator  # type: ignore[import-untyped]
from authlib.oauth2.rfc9207 import IssuerParameter  # type: ignore[import-untyped]
from joserfc.jwk import KeySet, RSAKey

from gateway.dev_authorization.cimd import fetch_client, is_document_url
from gateway.dev_authorization.models import (
    AUTH_METHODS,
    SCOPES_SUPPORTED,
    AuthorizationCode,
    Client,
    DevUser,
    RefreshRecord,
    acceptable_redirect_uri,
)
from gateway.dev_authorization.store import DevStore, digest
from gateway.dev_issuer_keys import KID
from gateway.errors import ClientDocumentError

ACCESS_TOKEN_LIFETIME = 3600
T = TypeVar("T")


@dataclass(frozen=True)
class DevConfig:
    issuer: str
    audience: str
    resources: frozenset[str]  # RFC 8707 resource values that name the gateway
    key_file: Path
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Answer:
    """authlib's ``(status, body, headers)``; ``location`` is what authlib's RFC 9207 extension
    reads and rewrites on a redirect."""

    status: int
    body: Any
    headers: list[tuple[str, str]]

    @property
    def location(self) -> str | None:
        return next((v for k, v in self.headers if k.lower() == "location"), None)

    @location.setter
    def location(self, value: str) -> None:
        self.headers = [(k, v) for k, v in self.headers if k.lower() != "location"]
        self.headers.append(("Location", value))


class _InvalidTarget(OAuth2Error):  # type: ignore[misc]  # authlib is untyped
    """RFC 8707: the requested resource is not one this server issues tokens for.

    One of authlib's protocol errors, which authlib answers itself (``error=invalid_target``);
    raised by this module's grant hooks and never caught by name outside it."""

    error = "invalid_target"


class _Payload(OAuth2Payload):  # type: ignore[misc]
    def __init__(self, items: Sequence[tuple[str, str]]) -> None:
        self._datalist: defaultdict[str, list[str]] = defaultdict(list)
        for key, value in items:
            self._datalist[key].append(value)
        self._data = {key: values[0] for key, values in self._datalist.items()}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._datalist


class OAuthRequest(OAuth2Request):  # type: ignore[misc]
    """A Starlette request, read beforehand, as authlib's grants read a request."""

    def __init__(self, method: str, uri: str, headers: Mapping[str, str],
                 query: Sequence[tuple[str, str]], form: Sequence[tuple[str, str]]) -> None:
        super().__init__(method, uri, headers=headers)
        self.payload = _Payload([*query, *form])
        self._args, self._form = dict(query), dict(form)

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


class _JsonPayload(JsonPayload):  # type: ignore[misc]
    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    @property
    def data(self) -> dict[str, Any]:
        return self._data


class OAuthJsonRequest(JsonRequest):  # type: ignore[misc]
    def __init__(self, method: str, uri: str, headers: Mapping[str, str],
                 data: dict[str, Any]) -> None:
        super().__init__(method, uri, headers)
        self.payload = _JsonPayload(data)


def _on_loop(call: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
    """Run an async storage call on the event loop from authlib's worker thread."""
    return anyio.from_thread.run(call, *args)


def check_resource(request: OAuth2Request, config: DevConfig, redirect_uri: str | None) -> None:
    if any(r not in config.resources for r in request.payload.datalist.get("resource", [])):
        raise _InvalidTarget("tokens are issued for the Gatehouse MCP endpoint only",
                             redirect_uri=redirect_uri)


class S256Only(CodeChallenge):  # type: ignore[misc]
    """PKCE is required and only S256 is accepted (OAuth 2.1; the MCP authorization spec)."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant: AuthorizationCodeGrant, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: send code_challenge with method S256")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("code_challenge_method must be S256")
        super().validate_code_challenge(grant, redirect_uri)


class CodeGrant(AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = list(AUTH_METHODS)
    server: DevAuthorizationServer

    def validate_authorization_request(self) -> str:
        redirect_uri: str = super().validate_authorization_request()
        check_resource(self.request, self.server.config, redirect_uri)
        return redirect_uri

    def validate_token_request(self) -> None:
        check_resource(self.request, self.server.config, None)
        super().validate_token_request()

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        data = request.payload.data
        record = AuthorizationCode(
            client_id=request.client.client_id, redirect_uri=data.get("redirect_uri", ""),
            scope=request.scope or "", user=request.user,
            code_challenge=data["code_challenge"], code_challenge_method="S256",
            family=digest(code)[:32],
        )
        _on_loop(self.server.store.save_code, code, record)

    def query_authorization_code(self, code: str, client: Client) -> AuthorizationCode | None:
        # Taken, not read: a code is good for one attempt, right or wrong.
        record = _on_loop(self.server.store.take_code, code)
        return record if record is not None and record.client_id == client.client_id else None

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        return None  # already taken by query_authorization_code

    def authenticate_user(self, authorization_code: AuthorizationCode) -> DevUser:
        return authorization_code.user


class RotatingRefreshGrant(RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = list(AUTH_METHODS)
    INCLUDE_NEW_REFRESH_TOKEN = True  # rotation: every use answers a new refresh token
    server: DevAuthorizationServer

    def validate_token_request(self) -> None:
        check_resource(self.request, self.server.config, None)
        super().validate_token_request()

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshRecord | None:
        return _on_loop(self.server.store.take_refresh, refresh_token)

    def authenticate_user(self, refresh_token: RefreshRecord) -> DevUser:
        return refresh_token.user

    def revoke_old_credential(self, refresh_token: RefreshRecord) -> None:
        return None  # already taken by authenticate_refresh_token


class AccessTokens(JWTBearerTokenGenerator):  # type: ignore[misc]
    """RFC 9068 access tokens with the claims ``gatehouse token`` mints, for the gateway."""

    def __init__(self, config: DevConfig) -> None:
        super().__init__(issuer=config.issuer, alg="RS256",
                         refresh_token_generator=lambda **_: generate_token(48),
                         expires_generator=ACCESS_TOKEN_LIFETIME)
        self._config = config

    def get_jwks(self) -> KeySet:
        key = RSAKey.import_key(self._config.key_file.read_bytes(),
                                parameters={"kid": KID, "alg": "RS256", "use": "sig"})
        return KeySet([key])

    def get_audiences(self, client: Client, user: DevUser, scope: str) -> str:
        return self._config.audience

    def get_extra_claims(self, client: Client, grant_type: str, user: DevUser,
                         scope: str) -> dict[str, Any]:
        return {**user.claims(), "nbf": int(time.time())}


class Registration(ClientRegistrationEndpoint):  # type: ignore[misc]
    """RFC 7591, open (development only): public clients get no secret."""

    server: DevAuthorizationServer

    def authenticate_token(self, request: JsonRequest) -> bool:
        return True

    def get_server_metadata(self) -> Mapping[str, Any]:
        return self.server.config.metadata

    def generate_client_info(self, request: JsonRequest) -> dict[str, Any]:
        info: dict[str, Any] = super().generate_client_info(request)
        if request.payload.data.get("token_endpoint_auth_method") == "none":
            del info["client_secret"], info["client_secret_expires_at"]
        return info

    def save_client(self, client_info: dict[str, Any], client_metadata: dict[str, Any],
                    request: JsonRequest) -> Client:
        uris = client_metadata.get("redirect_uris") or []
        if not uris or not all(acceptable_redirect_uri(uri) for uri in uris):
            raise InvalidRedirectURIError(
                "redirect_uris must be https, or http on a loopback address")
        client = Client(
            client_id=client_info["client_id"], redirect_uris=tuple(uris),
            token_endpoint_auth_method=client_metadata["token_endpoint_auth_method"],
            client_secret=client_info.get("client_secret"),
            grant_types=tuple(client_metadata.get("grant_types") or ["authorization_code"]),
            response_types=tuple(client_metadata.get("response_types") or ["code"]),
            scope=client_metadata.get("scope") or "",
            client_name=str(client_metadata.get("client_name") or "")[:200],
        )
        _on_loop(self.server.store.save_client, client)
        return client


class Issuer(IssuerParameter):  # type: ignore[misc]
    def __init__(self, issuer: str) -> None:
        self._issuer = issuer

    def get_issuer(self) -> str:
        return self._issuer


class DevAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    """One per request (it memoises the clients it looked up); see the module docstring."""

    def __init__(self, config: DevConfig, store: DevStore, http: aiohttp.ClientSession) -> None:
        super().__init__(scopes_supported=list(SCOPES_SUPPORTED))
        self.config, self.store, self._http = config, store, http
        self._clients: dict[str, Client | None] = {}
        self.issuer = Issuer(config.issuer)
        self.register_grant(CodeGrant, [S256Only(required=True)])
        self.register_grant(RotatingRefreshGrant)
        self.register_endpoint(Registration)
        self.register_token_generator("default", AccessTokens(config))
        self.register_extension(self.issuer)

    def query_client(self, client_id: str) -> Client | None:
        if client_id not in self._clients:
            self._clients[client_id] = self._lookup(client_id)
        return self._clients[client_id]

    def _lookup(self, client_id: str) -> Client | None:
        if not is_document_url(client_id):
            return _on_loop(self.store.client, client_id)
        try:
            return _on_loop(fetch_client, self._http, client_id)
        except ClientDocumentError as exc:
            raise InvalidClientError(description=str(exc)) from None

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        if "refresh_token" not in token:
            return
        source = request.authorization_code or request.refresh_token
        _on_loop(self.store.save_refresh, token["refresh_token"], request.client.client_id,
                 token.get("scope", ""), request.user, source.family)

    def create_oauth2_request(self, request: OAuth2Request) -> OAuth2Request:
        return request  # the routes build it, already read, before entering authlib

    def create_json_request(self, request: JsonRequest) -> JsonRequest:
        return request

    def handle_response(self, status: int, body: Any, headers: Any) -> Answer:
        return Answer(status, body, list(headers))

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None

    def consent(self, request: OAuthRequest) -> tuple[AuthorizationCodeGrant | None, Answer | None]:
        """The grant of a valid authorization request, or the error answer (a redirect back to
        the client, with ``iss``, once the client and its redirect URI are known to be good)."""
        try:
            return self.get_consent_grant(request), None
        except OAuth2Error as error:
            answer: Answer = self.handle_error_response(request, error)
            self.issuer.add_issuer_parameter(self, answer)
            return None, answer

    def authorize(self, request: OAuthRequest, user: DevUser | None) -> Answer:
        grant, answer = self.consent(request)
        if answer is not None:
            return answer
        result: Answer = self.create_authorization_response(request, grant_user=user, grant=grant)
        return result
