"""Bearer-token authentication as pure ASGI middleware, and the 401/403 answers.

Protected paths (``/mcp``, ``/v1``) require ``Authorization: Bearer <jwt>``. A verified token
becomes a :class:`Principal` in ``scope["state"]["principal"]`` after its organisation and user
are provisioned. Every 401 carries ``WWW-Authenticate: Bearer resource_metadata=...`` (RFC 9728)
so MCP clients can discover the issuer.
"""

from __future__ import annotations

import logging

import jwt
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway import tracing
from gateway.audit import FailureSource
from gateway.errors import Unauthenticated
from gateway.principal import Principal
from gateway.problem import error_response
from gateway.services import Services, services_of
from telemetry.logs import bind

log = logging.getLogger(__name__)

PROTECTED_PREFIXES = ("/mcp", "/v1")
MAX_KID_SOURCE_TOKEN = 16384  # longer tokens are not even parsed for their key id


def is_protected(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in PROTECTED_PREFIXES)


def metadata_url(services: Services) -> str:
    return services.settings.public_url.rstrip("/") + "/.well-known/oauth-protected-resource/mcp"


def _bearer(scope: Scope) -> str | None:
    values = [v for k, v in scope["headers"] if k == b"authorization"]
    if len(values) != 1:
        return None
    scheme, _, token = values[0].decode("latin-1").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def challenge(services: Services, error: Unauthenticated | None) -> str:
    value = f'Bearer resource_metadata="{metadata_url(services)}"'
    if error is not None:
        value += f', error="invalid_token", error_description="{error.detail}"'
    return value


class AuthenticationMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_protected(scope["path"]):
            await self.app(scope, receive, send)
            return
        services = services_of(scope)
        try:
            principal = await self._authenticate(services, scope)
        except Unauthenticated as exc:
            services.metrics.auth_failures.labels(exc.code).inc()
            await _audit_failure(services, exc.code, scope)
            token_given = exc.code != "missing_token"
            exc.headers["WWW-Authenticate"] = challenge(services, exc if token_given else None)
            response = error_response(exc, request_id=scope["state"].get("request_id"))
            await response(scope, receive, send)
            return
        scope["state"]["principal"] = principal
        bind(org_id=principal.org_id, user_id=principal.user_id)
        tracing.tag_tenant(principal.org_id)
        await self.app(scope, receive, send)

    async def _authenticate(self, services: Services, scope: Scope) -> Principal:
        token = _bearer(scope)
        if token is None:
            raise Unauthenticated("a bearer token is required", code="missing_token")
        claims = await services.verifier.verify(token)
        return await services.provisioner.ensure(services.claims.principal(claims))


async def _audit_failure(services: Services, code: str, scope: Scope) -> None:
    try:
        await services.audit.auth_failure(
            code, scope["state"].get("request_id", ""), _failure_source(scope))
    except Exception:  # the 401 matters more than its audit row
        log.warning("could not audit an authentication failure", exc_info=True)


def _failure_source(scope: Scope) -> FailureSource:
    """Who failed, so one flooding source cannot use up everyone's failure audit budget."""
    client = scope.get("client")
    token = _bearer(scope) or ""
    kid: object = ""
    if 0 < len(token) <= MAX_KID_SOURCE_TOKEN:
        try:
            kid = jwt.get_unverified_header(token).get("kid", "")
        except (jwt.PyJWTError, AttributeError):
            kid = ""
    return FailureSource(str(client[0]) if client else "", kid if isinstance(kid, str) else "")


def principal_of(scope: Scope) -> Principal:
    principal = scope["state"].get("principal")
    if not isinstance(principal, Principal):
        raise Unauthenticated("a bearer token is required", code="missing_token")
    return principal
