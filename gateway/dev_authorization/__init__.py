"""The development authorization server: OAuth 2.1 for ``gatehouse up`` without an issuer.

With it, any MCP client connects by URL alone: the gateway's RFC 9728 metadata names the
development issuer (``PUBLIC_URL/dev``), whose RFC 8414 metadata (also at the OpenID discovery
locations) leads to authorization code + PKCE S256, RFC 7591 registration or a Client ID
Metadata Document, a sign-in page where the developer picks organisation, user, roles and
profile (no password), and ``at+jwt`` access tokens signed with the key ``gatehouse token``
uses, so the gateway verifies them like any other issuer's.

It exists only in development mode (the gateway serves the development JWKS) and refuses to
run when an issuer is configured.

Modules: ``models`` (clients, codes, refresh tokens), ``store`` (Redis), ``cimd`` (client
metadata documents), ``server`` (authlib's server and the Starlette adapter), ``pages``
(sign-in), ``routes`` (endpoints).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from authlib.oauth2 import rfc8414, rfc9207  # type: ignore[import-untyped]
from starlette.routing import BaseRoute

from gateway.dev_authorization.models import AUTH_METHODS, GRANT_TYPES, SCOPES_SUPPORTED
from gateway.dev_authorization.routes import build_routes
from gateway.dev_authorization.server import DevConfig
from gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

DEV_ISSUER_PATH = "/dev"  # as gatehouse up configures it (gateway.cli.devissuer.ISSUER_PATH)


def development_issuer(settings: GatewaySettings) -> str:
    return settings.public_url.rstrip("/") + DEV_ISSUER_PATH


def metadata(settings: GatewaySettings) -> dict[str, Any]:
    """RFC 8414 metadata, with RFC 9207 and Client ID Metadata Document support declared."""
    issuer = settings.issuer
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "registration_endpoint": f"{issuer}/register",
        "jwks_uri": settings.jwks_url,
        "scopes_supported": list(SCOPES_SUPPORTED),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": list(GRANT_TYPES),
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": True,
        "client_id_metadata_document_supported": True,
    }


def routes(settings: GatewaySettings) -> list[BaseRoute]:
    """The server's routes in development mode; none otherwise."""
    if settings.dev_issuer_key_file is None:
        return []
    if settings.issuer != development_issuer(settings):
        log.warning("development authorization server off: an issuer is configured (%s)",
                    settings.issuer)
        return []
    document = metadata(settings)
    try:
        rfc8414.AuthorizationServerMetadata(document).validate(
            metadata_classes=[rfc9207.AuthorizationServerMetadata])
    except ValueError as exc:
        log.warning("development authorization server off: %s (PUBLIC_URL must be https or "
                    "loopback)", exc)
        return []
    logging.getLogger("authlib").setLevel(logging.INFO)  # its debug lines carry issued tokens
    config = DevConfig(
        issuer=settings.issuer, audience=settings.audience,
        resources=frozenset({settings.resource_url, settings.audience}),
        key_file=settings.dev_issuer_key_file, metadata=document,
    )
    return build_routes(config, settings.public_url, urlsplit(settings.issuer).path)
