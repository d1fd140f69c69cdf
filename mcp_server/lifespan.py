"""What mcp_server builds at start-up and shares with every tool call: no module globals.

The FastMCP lifespan yields ``{"providers": ProviderRuntime}``; tools read it through
``ctx.lifespan_context``. It owns one ``aiohttp`` session (provider APIs, token endpoints,
discovery), the asyncpg pool (as ``gatehouse_app``, checked by :func:`sql.verify_app_role`),
one Redis client (refresh locks, breakers, connect tickets), the token store and refresher, a
circuit breaker per provider (state shared across replicas through Redis) and the rate limits.
Without database, Redis or token keys the runtime has no vault: no provider is enabled then
(its tools are not registered), and everything else works.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from fastmcp import FastMCP
from redis.asyncio import Redis

from mcp_server.metrics import ServerMetrics, serve
from mcp_server.providers import configure_providers
from mcp_server.settings import McpServerSettings
from mcp_server.token_cache import ConnectionCache
from oauth.catalogue import ConfiguredProvider, load_catalogue
from oauth.keyring import Keyring
from oauth.provider_client import ProviderApi, is_breaker_failure
from oauth.refresh import Refresher
from oauth.store import TokenStore
from oauth.token_endpoint import TokenEndpoint
from resilience import CircuitBreaker, FailurePolicy, RateLimiter, create_redis
from resilience.health import health_of
from sql import create_pool, verify_app_role

log = logging.getLogger(__name__)
RUNTIME_KEY = "providers"
REFRESH_MARGIN = 60.0  # seconds before expiry that a token is refreshed


@dataclass(frozen=True)
class ToolLimits:
    """Distributed limits checked before a provider call."""

    provider: RateLimiter  # per provider, every organisation together
    org_provider: RateLimiter  # per (organisation, provider)
    user_tool: RateLimiter  # per (organisation, user, tool), unless the tool has its own
    per_tool: Mapping[str, RateLimiter] = field(default_factory=dict)

    def for_tool(self, tool: str) -> RateLimiter:
        return self.per_tool.get(tool, self.user_tool)


@dataclass(frozen=True)
class GrantAccess:
    """Users' stored provider grants and what guards their use: the encrypted store, the
    single-flight refresher, the shared Redis, the tool limits, and the sealed-row cache.
    (The AES sealer itself is :class:`oauth.vault.Vault`.)"""

    store: TokenStore
    refresher: Refresher
    redis: Redis
    limits: ToolLimits
    cache: ConnectionCache | None  # None: every call reads the database


@dataclass(frozen=True)
class ProviderRuntime:
    providers: Mapping[str, ConfiguredProvider]
    apis: Mapping[str, ProviderApi]
    grants: GrantAccess | None  # None: no token vault configured, so no provider tools
    public_url: str
    connect_link_ttl: int
    http: aiohttp.ClientSession
    metrics: ServerMetrics


def _limits(settings: McpServerSettings, redis: Redis) -> ToolLimits:
    policy = FailurePolicy.OPEN if settings.rate_limit_fail_open else FailurePolicy.CLOSED
    ns = settings.resilience_namespace

    def limiter(limit: str, name: str) -> RateLimiter:
        return RateLimiter(redis, limit, namespace=f"{ns}:tools:{name}", policy=policy)

    per_tool = {t: limiter(limit, "user-tool") for t, limit in settings.tool_rate_limits.items()}
    limits = ToolLimits(
        provider=limiter(settings.provider_rate_limit, "provider"),
        org_provider=limiter(settings.org_provider_rate_limit, "org-provider"),
        user_tool=limiter(settings.user_tool_rate_limit, "user-tool"),
        per_tool=per_tool,
    )
    share, whole = limits.org_provider, limits.provider
    if share.limit / share.window_seconds >= whole.limit / whole.window_seconds:
        log.warning("ORG_PROVIDER_RATE_LIMIT is not below PROVIDER_RATE_LIMIT: one organisation "
                    "can use a provider's whole budget")
    return limits


async def _grant_access(
    settings: McpServerSettings, stack: AsyncExitStack, http: aiohttp.ClientSession,
    providers: Mapping[str, ConfiguredProvider], metrics: ServerMetrics,
) -> GrantAccess | None:
    if not (settings.database_url and settings.redis_url and settings.token_keys):
        return None
    keyring = Keyring.parse(settings.token_keys.get_secret_value())
    pool = await create_pool(settings.database_url, max_size=settings.database_pool_size)
    stack.push_async_callback(pool.close)
    await verify_app_role(pool)
    redis = create_redis(settings.redis_url)
    stack.push_async_callback(redis.aclose)
    stack.push_async_callback(health_of(redis).aclose)  # a probe in flight ends first
    store = TokenStore(pool, keyring)
    grants = {
        name: metrics.counted_refresh(name, TokenEndpoint(http, p.spec.token_endpoint,
                                                          p.client).refresh)
        for name, p in providers.items()
    }
    refresher = Refresher(store, redis, grants, margin=REFRESH_MARGIN)
    refresher.on_wait = lambda p: metrics.refresh_lock_waits.labels(metrics.provider(p)).inc()
    ttl = settings.token_cache_seconds
    cache = ConnectionCache(pool, store.vault, ttl=ttl) if ttl > 0 else None
    return GrantAccess(store, refresher, redis, _limits(settings, redis), cache)


def _apis(
    settings: McpServerSettings, http: aiohttp.ClientSession, redis: Redis,
    providers: Mapping[str, ConfiguredProvider],
) -> dict[str, ProviderApi]:
    def breaker(name: str) -> CircuitBreaker:
        return CircuitBreaker(
            redis, f"provider:{name}",
            failure_threshold=settings.breaker_failure_threshold,
            window_seconds=settings.breaker_window_seconds,
            reset_timeout=settings.breaker_reset_seconds,
            is_failure=is_breaker_failure,
            namespace=f"{settings.resilience_namespace}:breaker",
        )

    return {
        name: ProviderApi(http, p.spec, breaker(name), timeout=settings.provider_timeout_seconds,
                          max_bytes=settings.provider_max_response_bytes)
        for name, p in providers.items()
    }


async def index_tool_schemas(server: FastMCP) -> list[str]:
    """Give the MCP SDK each tool's input schema by name, computed once.

    On protocol 2026-07-28 the SDK checks a ``tools/call``'s ``Mcp-Param-*`` headers against
    the tool's schema. Without a lookup it finds the schema by running the whole ``tools/list``
    handler (every tool, through the middleware) on every call with arguments: about 1 ms of
    CPU per call here, more than the rest of an ``echo``. The lifespan registers the enabled
    providers' tools before it calls this, and none change afterwards, so one listing serves
    every call.
    """
    tools = await server.list_tools(run_middleware=False)
    schemas = {tool.name: tool.parameters for tool in tools}
    server._mcp_server.get_tool_input_schema = schemas.get  # fastmcp 4.1.2 exposes no setter
    return list(schemas)


class RuntimeHolder:
    """Where non-tool code (custom routes) finds the runtime the lifespan built; tools get it
    from their context instead. Empty outside the lifespan."""

    def __init__(self) -> None:
        self.runtime: ProviderRuntime | None = None


ToolRegistrar = Callable[[FastMCP, Mapping[str, str]], list[str]]


def lifespan_for(
    settings: McpServerSettings, holder: RuntimeHolder, register_tools: ToolRegistrar,
    metrics: ServerMetrics,
) -> Callable[[FastMCP], AbstractAsyncContextManager[dict[str, Any]]]:
    """``register_tools(server, {provider: display name})`` adds the tools of the providers
    that came out enabled (configured, with a vault) and returns their names; they are
    removed again when the lifespan ends. ``metrics`` learns the tool and provider names
    (its only label values) and is served on the metrics port while the lifespan lasts."""

    @asynccontextmanager
    async def lifespan(server: FastMCP) -> AsyncIterator[dict[str, Any]]:
        async with AsyncExitStack() as stack:
            runtime = await _runtime(settings, stack, metrics)
            enabled = {name: api.spec.display_name for name, api in runtime.apis.items()}
            for name in register_tools(server, enabled):
                stack.callback(server.local_provider.remove_tool, name)
            metrics.known(await index_tool_schemas(server), runtime.providers)
            if settings.metrics_port:
                runner = await serve(metrics.registry, settings.metrics_host,
                                     settings.metrics_port)
                stack.push_async_callback(runner.cleanup)
            holder.runtime = runtime
            try:
                yield {RUNTIME_KEY: runtime}
            finally:
                holder.runtime = None

    return lifespan


async def _runtime(settings: McpServerSettings, stack: AsyncExitStack, metrics: ServerMetrics
                   ) -> ProviderRuntime:
    http = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=settings.provider_timeout_seconds + 5),
        connector=aiohttp.TCPConnector(limit=200, ttl_dns_cache=300),
        cookie_jar=aiohttp.DummyCookieJar(),  # no provider cookie shared across users
    )
    stack.push_async_callback(http.close)
    providers = await configure_providers(
        http, settings.providers, load_catalogue(),
        discovery_timeout=settings.discovery_timeout_seconds,
    )
    grants = await _grant_access(settings, stack, http, providers, metrics)
    apis = {} if grants is None else _apis(settings, http, grants.redis, providers)
    return ProviderRuntime(providers, apis, grants, settings.public_url.rstrip("/"),
                           settings.connect_link_ttl_seconds, http, metrics)
