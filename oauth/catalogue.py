"""The provider catalogue: what Gatehouse knows about each OAuth provider, as data.

``oauth/providers.json`` lists the built-in providers (GitHub, Google, Microsoft, Slack,
Atlassian, Notion); any OpenID provider is added from its discovery document
(:func:`discover`). Each entry becomes a frozen :class:`ProviderSpec`. Enabling a provider takes
no code: the operator gives its client id and secret (see ``mcp_server/providers.py``), giving a
:class:`ConfiguredProvider`.

Fields of a spec (JSON keys are the same names):

``display_name``; ``issuer`` (the ``iss`` an RFC 9207 callback must carry, or null);
``authorization_endpoint``, ``token_endpoint``, ``revocation_endpoint`` (or null; may contain
``{client_id}``) and ``revocation_style`` (``rfc7009``, ``github``, ``notion`` or ``slack``: see
:mod:`oauth.revocation`), ``userinfo_endpoint``; ``api_base_url`` (where the tools' paths are
resolved);
``default_scopes``; ``scope_parameter``/``scope_separator`` (Slack asks for user scopes in
``user_scope``, comma-separated); ``pkce`` (the provider supports S256); ``returns_iss`` (the
provider sends RFC 9207 ``iss`` on its callbacks: the connect flow must then require it);
``token_auth_method``; ``account_field`` (the userinfo member naming the account);
``authorization_params`` (extra, fixed authorization request parameters); ``api_headers``
(sent on every API call); ``error_style`` (``http``: status codes carry errors; ``slack``:
HTTP 200 with ``{"ok": false, "error": ...}``).

Every endpoint must be ``https://`` or ``http://`` to a loopback address (tests, stand-ins);
anything else is refused when the catalogue or a discovery document is loaded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp

from oauth.errors import CatalogueError
from oauth.token_endpoint import AuthMethod, ClientCredentials

MAX_DISCOVERY_BYTES = 65_536
DISCOVERY_SUFFIX = "/.well-known/openid-configuration"
ErrorStyle = Literal["http", "slack"]
RevocationStyle = Literal["rfc7009", "github", "notion", "slack"]
_ENDPOINTS = (
    "authorization_endpoint", "token_endpoint", "revocation_endpoint", "userinfo_endpoint",
    "api_base_url",
)  # fmt: skip
_AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    display_name: str
    authorization_endpoint: str
    token_endpoint: str
    userinfo_endpoint: str | None
    api_base_url: str
    issuer: str | None = None
    revocation_endpoint: str | None = None
    revocation_style: RevocationStyle = "rfc7009"
    default_scopes: tuple[str, ...] = ()
    scope_parameter: str = "scope"
    scope_separator: str = " "
    pkce: bool = True
    returns_iss: bool = False
    token_auth_method: AuthMethod = "client_secret_basic"
    account_field: str = "sub"
    authorization_params: Mapping[str, str] = field(default_factory=dict)
    api_headers: Mapping[str, str] = field(default_factory=dict)
    error_style: ErrorStyle = "http"

    def __post_init__(self) -> None:
        for name in _ENDPOINTS:
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, check_url(value, f"{self.name}.{name}"))
        object.__setattr__(self, "api_base_url", self.api_base_url.rstrip("/"))
        if self.token_auth_method not in _AUTH_METHODS:
            raise CatalogueError(f"{self.name}: unknown token_auth_method")
        if self.error_style not in ("http", "slack"):
            raise CatalogueError(f"{self.name}: unknown error_style")
        if self.revocation_style not in ("rfc7009", "github", "notion", "slack"):
            raise CatalogueError(f"{self.name}: unknown revocation_style")
        object.__setattr__(self, "authorization_params",
                           MappingProxyType(dict(self.authorization_params)))
        object.__setattr__(self, "api_headers", MappingProxyType(dict(self.api_headers)))


@dataclass(frozen=True)
class ConfiguredProvider:
    """A catalogue provider the operator enabled: its spec, client and the scopes to ask for."""

    spec: ProviderSpec
    client: ClientCredentials
    scopes: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.spec.name


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url(url: str, what: str) -> str:
    """``url`` if it is https, or http to a loopback host; else :class:`CatalogueError`."""
    if not isinstance(url, str):
        raise CatalogueError(f"{what} must be a URL string")
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.username or parts.password or not host or parts.fragment:
        raise CatalogueError(f"{what} must be an absolute URL without credentials or fragment")
    if parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(host)):
        return url
    raise CatalogueError(f"{what} must be https (or http to a loopback address)")


def spec_from_mapping(name: str, entry: Mapping[str, Any]) -> ProviderSpec:
    """Build a spec from a JSON object; unknown keys are refused (typos are not ignored)."""
    known = {f.name for f in dataclasses.fields(ProviderSpec)} - {"name"}
    unknown = set(entry) - known
    if unknown:
        raise CatalogueError(f"{name}: unknown catalogue fields {sorted(unknown)}")
    values = dict(entry)
    values["default_scopes"] = tuple(values.get("default_scopes", ()))
    try:
        return ProviderSpec(name=name, **values)
    except TypeError as exc:
        raise CatalogueError(f"{name}: incomplete catalogue entry ({exc})") from None


def load_catalogue(text: str | None = None) -> Mapping[str, ProviderSpec]:
    """The built-in catalogue (or the one in ``text``), by provider name."""
    if text is None:
        text = resources.files("oauth").joinpath("providers.json").read_text(encoding="utf-8")
    document = json.loads(text)
    return MappingProxyType(
        {name: spec_from_mapping(name, entry) for name, entry in document["providers"].items()}
    )


def with_overrides(spec: ProviderSpec, overrides: Mapping[str, str | None]) -> ProviderSpec:
    """The spec with some endpoints replaced (tests, sovereign clouds, enterprise servers).

    Userinfo and revocation endpoints under the old API base URL move with a new
    ``api_base_url`` (GitHub's are both under api.github.com)."""
    unknown = set(overrides) - {*_ENDPOINTS, "issuer"}
    if unknown:
        raise CatalogueError(f"{spec.name}: cannot override {sorted(unknown)}")
    changes = dict(overrides)
    new_base = changes.get("api_base_url")
    for name in ("userinfo_endpoint", "revocation_endpoint"):
        url = getattr(spec, name)
        if new_base and name not in changes and url and url.startswith(spec.api_base_url + "/"):
            changes[name] = new_base.rstrip("/") + url[len(spec.api_base_url):]
    return dataclasses.replace(spec, **changes)  # type: ignore[arg-type]


def spec_from_discovery(name: str, discovery_url: str, document: object) -> ProviderSpec:
    """A spec from an OpenID Provider's metadata (OpenID Connect Discovery 1.0, RFC 8414)."""
    if not isinstance(document, dict):
        raise CatalogueError(f"{name}: discovery document is not a JSON object")
    issuer = document.get("issuer")
    expected = discovery_url.removesuffix(DISCOVERY_SUFFIX)
    if not isinstance(issuer, str) or issuer.rstrip("/") != expected.rstrip("/"):
        raise CatalogueError(f"{name}: discovery issuer does not match the discovery URL")
    methods = document.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    auth: AuthMethod = (
        "client_secret_basic" if "client_secret_basic" in methods else "client_secret_post"
    )
    scopes = [s for s in ("openid", "profile", "email", "offline_access")
              if s in (document.get("scopes_supported") or ["openid"])]
    userinfo = document.get("userinfo_endpoint")
    return ProviderSpec(
        name=name,
        display_name=name,
        issuer=issuer,
        authorization_endpoint=_required(document, "authorization_endpoint", name),
        token_endpoint=_required(document, "token_endpoint", name),
        revocation_endpoint=document.get("revocation_endpoint"),
        userinfo_endpoint=userinfo,
        api_base_url=issuer,
        default_scopes=tuple(scopes),
        pkce="S256" in (document.get("code_challenge_methods_supported") or []),
        returns_iss=document.get("authorization_response_iss_parameter_supported") is True,
        token_auth_method=auth,
        account_field="sub",
    )


def _required(document: Mapping[str, Any], key: str, name: str) -> str:
    value = document.get(key)
    if not isinstance(value, str):
        raise CatalogueError(f"{name}: discovery document has no {key}")
    return value


async def discover(
    session: aiohttp.ClientSession,
    name: str,
    discovery_url: str,
    *,
    fetch_seconds: float = 5.0,
    max_bytes: int = MAX_DISCOVERY_BYTES,
) -> ProviderSpec:
    """Fetch and parse a discovery document: bounded in time and size, no redirects."""
    check_url(discovery_url, f"{name}.discovery_url")
    try:
        async with (
            asyncio.timeout(fetch_seconds),
            session.get(discovery_url, allow_redirects=False,
                        headers={"Accept": "application/json"}) as response,
        ):
            body = await response.content.read(max_bytes + 1)
            status = response.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise CatalogueError(f"{name}: discovery failed ({type(exc).__name__})") from None
    if status != 200:
        raise CatalogueError(f"{name}: discovery answered HTTP {status}")
    if len(body) > max_bytes:
        raise CatalogueError(f"{name}: discovery document larger than {max_bytes} bytes")
    try:
        document = json.loads(body)
    except ValueError:
        raise CatalogueError(f"{name}: discovery document is not JSON") from None
    return spec_from_discovery(name, discovery_url, document)


def configure(
    spec: ProviderSpec,
    client_id: str,
    client_secret: str | None,
    *,
    scopes: tuple[str, ...] | None = None,
    auth_method: AuthMethod | None = None,
) -> ConfiguredProvider:
    if not client_id:
        raise CatalogueError(f"{spec.name}: client_id is required")
    method = auth_method or spec.token_auth_method
    credentials = ClientCredentials(client_id, client_secret, method)
    return ConfiguredProvider(spec, credentials, spec.default_scopes if scopes is None else scopes)
