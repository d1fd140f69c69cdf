"""Composition root of the gateway: builds every resource in the lifespan and wires the app.

Run with ``uvicorn --factory gateway.app:create_app`` (``gatehouse up`` does this).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway import dev_authorization, ops_endpoints, tracing
from gateway.activity import SessionActivity
from gateway.api import audit as audit_api
from gateway.api import members, openapi, sessions
from gateway.api import prompts as prompts_api
from gateway.api.typed_endpoints import Endpoint
from gateway.audit import AuditTrail
from gateway.auth import AuthenticationMiddleware
from gateway.background import every
from gateway.connect import ROUTES as CONNECT_ROUTES
from gateway.connect.signin_oidc import SigninClient
from gateway.cors import open_to_every_origin
from gateway.forwarding import McpForwarder
from gateway.jwks import JwksCache
from gateway.mcp_version import McpVersionMiddleware
from gateway.metrics import Metrics
from gateway.middleware import EdgeMiddleware
from gateway.origin import allowed_origins
from gateway.principal import ClaimMapping
from gateway.problem import http_exception
from gateway.provisioning import Provisioner
from gateway.services import Services
from gateway.settings import GatewaySettings
from gateway.tokens import TokenVerifier
from gateway.upstream import Upstream
from gateway.user_limit import UserRateLimitMiddleware
from oauth.assertion import AssertionSigner
from oauth.keys import load_private_key
from prompts import PromptComposer
from resilience import FailurePolicy, RateLimiter, create_redis
from resilience.draining import Draining
from resilience.health import health_of
from sql import create_pool, verify_app_role
from telemetry import logs

API: list[Endpoint] = [
    *sessions.ENDPOINTS, *prompts_api.ENDPOINTS, *members.ENDPOINTS, *audit_api.ENDPOINTS,
]


@asynccontextmanager
async def _resources(settings: GatewaySettings) -> AsyncIterator[Services]:
    pool = await create_pool(settings.database_url, max_size=settings.database_pool_size)
    redis = create_redis(settings.redis_url)
    http = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256, limit_per_host=256, keepalive_timeout=60),
        timeout=aiohttp.ClientTimeout(
            total=None, connect=2, sock_read=settings.upstream_timeout_seconds
        ),
        auto_decompress=False,
        skip_auto_headers=("Accept-Encoding", "User-Agent"),
    )
    try:
        await verify_app_role(pool)
        jwks = JwksCache(
            settings.jwks_url,
            http,
            ttl=settings.jwks_cache_ttl_seconds,
            cooldown=settings.jwks_refresh_cooldown_seconds,
            fetch_timeout=settings.jwks_fetch_timeout_seconds,
        )
        metrics = Metrics()
        services = Services(
            settings=settings,
            pool=pool,
            redis=redis,
            http=http,
            jwks=jwks,
            verifier=TokenVerifier(
                jwks,
                issuer=settings.issuer,
                audience=settings.audience,
                algorithms=settings.algorithms,
                token_types=settings.accepted_token_types,
                skew=settings.clock_skew_seconds,
                max_bytes=settings.max_token_bytes,
            ),
            claims=ClaimMapping(
                org=settings.org_claim,
                user=settings.user_claim,
                roles=settings.roles_claim,
                platform_admin=settings.platform_admin_claim,
                default_roles=tuple(settings.default_roles),
            ),
            provisioner=Provisioner(pool, ttl=settings.provisioning_cache_seconds),
            user_limiter=RateLimiter(
                redis,
                settings.user_rate_limit,
                namespace="gatehouse-user",
                policy=FailurePolicy.OPEN
                if settings.rate_limit_fail_open
                else FailurePolicy.CLOSED,
            ),
            signer=AssertionSigner(
                load_private_key(settings.internal_key_file.read_bytes()),
                lifetime=settings.assertion_lifetime_seconds,
            ),
            metrics=metrics,
            audit=AuditTrail.from_settings(pool, redis, settings, metrics),
            activity=SessionActivity(pool),
            composer=PromptComposer(),
            signin=SigninClient(settings, http, jwks) if settings.signin_client_id else None,
            upstream=Upstream(settings.mcp_server_url, connect_timeout=2,
                              read_timeout=settings.upstream_timeout_seconds),
        )
        metrics.watch(services)
        yield services
        await services.upstream.close()
    finally:
        await http.close()
        await health_of(redis).aclose()  # a re-probe still in flight must not outlive Redis
        await redis.aclose()
        await pool.close()


def create_app(settings: GatewaySettings | None = None) -> Starlette:
    resolved = settings or GatewaySettings()  # type: ignore[call-arg]  # from the environment
    logs.configure(resolved.log_format, resolved.log_level,
                   own_loggers=("gateway", "oauth", "prompts", "sql", "resilience", "telemetry"))
    trace_provider = tracing.install()  # None unless OTEL_* asks for traces

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Services]]:
        async with (
            _resources(resolved) as services,
            every(resolved.audit_flush_seconds, services.audit.flush),
            every(resolved.session_activity_flush_seconds, services.activity.flush),
        ):
            yield {"services": services}

    forwarder = McpForwarder()
    document = openapi.document(API, server_url=resolved.public_url)

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(document)

    resource_metadata = open_to_every_origin(ops_endpoints.protected_resource_metadata, ["GET"])
    return Starlette(
        routes=[
            Route("/healthz", ops_endpoints.healthz),
            Route("/readyz", ops_endpoints.readyz),
            Route("/metrics", ops_endpoints.metrics),
            Route("/.well-known/oauth-protected-resource", resource_metadata,
                  methods=["GET", "OPTIONS"]),
            Route("/.well-known/oauth-protected-resource/{resource:path}", resource_metadata,
                  methods=["GET", "OPTIONS"]),
            Route("/dev/jwks.json", ops_endpoints.dev_jwks),
            Route("/openapi.json", openapi_json),
            Route("/mcp", forwarder, methods=["POST"]),  # stateless: no GET stream, no DELETE
            Route("/mcp/{session_id}", forwarder, methods=["POST"]),
            *(endpoint.route() for endpoint in API),
            *CONNECT_ROUTES,
            *dev_authorization.routes(resolved),  # development mode only
        ],
        middleware=[
            *tracing.middleware(trace_provider),  # the SERVER span: outermost
            # request id, 431, 403 origin on /mcp (before authentication), problems, metrics,
            # access line: one layer, one send wrapper
            Middleware(EdgeMiddleware, logger="gateway.access",
                       allowed_origins=allowed_origins(resolved.public_url,
                                                       resolved.allowed_origins)),
            # SIGTERM: /readyz answers 503 for the grace before the server stops accepting
            Middleware(Draining, probe="/readyz", grace=resolved.shutdown_grace_seconds),
            Middleware(AuthenticationMiddleware),
            Middleware(UserRateLimitMiddleware),
            Middleware(McpVersionMiddleware),  # an unsupported MCP-Protocol-Version: 400
        ],
        exception_handlers={HTTPException: http_exception},
        lifespan=lifespan,
    )
