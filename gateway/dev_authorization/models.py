"""What the development authorization server stores, as the mixins authlib's grants expect.

Each record is a frozen dataclass with a JSON form, because Redis holds them and any gateway
replica may read back what another wrote.
"""

from __future__ import annotations

import hmac
import json
import time
from dataclasses import asdict, dataclass, field
from ipaddress import ip_address
from typing import TYPE_CHECKING, Any, Self, cast
from urllib.parse import urlsplit

from authlib.oauth2.rfc6749 import (  # type: ignore[import-untyped]
    AuthorizationCodeMixin,
    ClientMixin,
    TokenMixin,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

SCOPES_SUPPORTED = ("mcp", "offline_access")
GRANT_TYPES = ("authorization_code", "refresh_token")
AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post")


def is_loopback_host(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return host is not None and ip_address(host).is_loopback
    except ValueError:
        return False


def acceptable_redirect_uri(uri: str) -> bool:
    """https anywhere, or http on a loopback address (RFC 8252 §7.3); never a fragment."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return False
    if parts.fragment or not parts.hostname:
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and is_loopback_host(parts.hostname))


def _same_loopback_target(registered: str, requested: str) -> bool:
    """RFC 8252 §7.3: a native app's loopback redirect may use any port."""
    a, b = urlsplit(registered), urlsplit(requested)
    if a.scheme != "http" or not is_loopback_host(a.hostname):
        return False
    return (a.scheme, a.hostname, a.path, a.query) == (b.scheme, b.hostname, b.path, b.query)


def granted_scope(requested: str | None, registered: str | None) -> str:
    allowed = set((registered or "").split()) or set(SCOPES_SUPPORTED)
    return " ".join(s for s in (requested or "").split() if s in allowed)


@dataclass(frozen=True)
class Client(ClientMixin):  # type: ignore[misc]  # authlib is untyped
    client_id: str
    redirect_uris: tuple[str, ...]
    token_endpoint_auth_method: str = "none"
    client_secret: str | None = None
    grant_types: tuple[str, ...] = ("authorization_code",)
    response_types: tuple[str, ...] = ("code",)
    scope: str = ""
    client_name: str = ""
    metadata_document: bool = False  # the client_id is the URL of its own metadata document

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return self.redirect_uris[0] if len(self.redirect_uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str:
        return granted_scope(scope, self.scope)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return any(redirect_uri == uri or _same_loopback_target(uri, redirect_uri)
                   for uri in self.redirect_uris)

    def check_client_secret(self, client_secret: str) -> bool:
        return self.client_secret is not None and hmac.compare_digest(
            self.client_secret.encode(), client_secret.encode())

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.token_endpoint_auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type in self.response_types

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Client:
        data = json.loads(raw)
        for name in ("redirect_uris", "grant_types", "response_types"):
            data[name] = tuple(data[name])
        return cls(**data)


@dataclass(frozen=True)
class DevUser:
    """Who the developer chose to be on the sign-in page (no password: development only)."""

    org_id: str
    user_id: str
    roles: tuple[str, ...]
    name: str = ""
    email: str = ""

    def get_user_id(self) -> str:
        return self.user_id

    def claims(self) -> dict[str, Any]:
        """The claims ``gatehouse token`` puts in its tokens, plus the profile if given."""
        profile = {k: v for k, v in (("name", self.name), ("email", self.email)) if v}
        return {"org_id": self.org_id, "roles": list(self.roles), **profile}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DevUser:
        return cls(**{**data, "roles": tuple(data["roles"])})


class _IssuedToUser:
    """A record issued to a ``DevUser``; its JSON form nests the user as an object."""

    def to_json(self) -> str:
        return json.dumps(asdict(cast("DataclassInstance", self)))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Self:
        data = json.loads(raw)
        return cls(**{**data, "user": DevUser.from_dict(data["user"])})


@dataclass(frozen=True)
class AuthorizationCode(_IssuedToUser, AuthorizationCodeMixin):  # type: ignore[misc]
    client_id: str
    redirect_uri: str
    scope: str
    user: DevUser
    code_challenge: str
    code_challenge_method: str
    family: str  # refresh tokens descending from this code; all revoked if the code is replayed
    issued_at: float = field(default_factory=time.time)

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope


@dataclass(frozen=True)
class RefreshRecord(_IssuedToUser, TokenMixin):  # type: ignore[misc]
    client_id: str
    scope: str
    user: DevUser
    family: str
    expires_at: float

    def check_client(self, client: Client) -> bool:
        return bool(client.client_id == self.client_id)

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return max(0, int(self.expires_at - time.time()))

    def is_expired(self) -> bool:
        return time.time() >= self.expires_at

    def is_revoked(self) -> bool:
        return False  # a revoked or used refresh token is deleted, never kept and flagged
