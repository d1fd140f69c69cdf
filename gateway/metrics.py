"""Prometheus metrics, one registry per application instance (so tests can run several).

Labels are drawn from small fixed sets (route families, JSON-RPC method names, known tool
names, error codes) so that no caller-chosen value can explode the series count, and nothing
secret is ever a label; organisation and user ids never are either. Values that are cheaper to
read than to count (the database pool, the audit queue, JWKS fetches, dependency readiness) are
read when ``/metrics`` is scraped (:class:`ServicesCollector`, :meth:`Metrics.readiness`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.types import Message, Scope, Send

from gateway.errors import UpstreamUnavailable
from oauth.catalogue import load_catalogue

if TYPE_CHECKING:  # gateway.services imports this module
    from redis.asyncio import Redis

    from gateway.jsonrpc import RpcMessage
    from gateway.services import Services

OTHER = "other"
MCP_METHODS = frozenset({
    "initialize", "ping", "server/discover", "tools/list", "tools/call", "prompts/list",
    "prompts/get", "resources/list", "resources/read", "resources/templates/list",
    "resources/subscribe", "resources/unsubscribe", "completion/complete", "logging/setLevel",
    "notifications/initialized", "notifications/cancelled",
})
# The tools any mcp_server can offer: the diagnostic ones, the curated provider tools and each
# catalogue provider's whoami (tests/test_metrics_labels.py keeps this true). Any other name a
# caller sends is counted as "other".
_CURATED_TOOLS = (
    "echo", "whoami", "count", "github_list_repositories", "github_search_issues",
    "github_create_issue", "github_get_file_contents", "google_list_calendar_events",
    "slack_post_message",
)
DEPENDENCIES = ("database", "redis", "mcp_server", "jwks")
# Seconds; MCP's semantic conventions recommend these for operation durations.
MCP_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
_ERROR_MARKERS = ((b'"isError":true', "tool_error"), (b'"error":{', "jsonrpc_error"))


def known_tools() -> frozenset[str]:
    return frozenset(_CURATED_TOOLS) | {f"{name}_whoami" for name in load_catalogue()}


def route_label(scope: Scope) -> str:
    """A request's ``route`` label: the matched route's template (``/v1/sessions/{session_id}``:
    a bounded set, never the raw path with its ids), else its family (refused before routing)."""
    template = getattr(scope.get("route"), "path", None)
    return template if isinstance(template, str) else route_family(scope["path"])


def route_family(path: str) -> str:
    for prefix in ("/mcp", "/v1", "/.well-known", "/dev"):
        if path == prefix or path.startswith(prefix + "/"):
            return prefix
    return path if path in ("/healthz", "/readyz", "/metrics") else "other"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gatehouse_http_requests", "HTTP requests answered",
            ["route", "method", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "gatehouse_http_request_duration_seconds", "Time to the response's first byte",
            ["route"], registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.auth_failures = Counter(
            "gatehouse_auth_failures", "Rejected bearer tokens", ["code"], registry=self.registry
        )
        self.mcp_requests = Counter(
            "gatehouse_mcp_requests", "MCP messages forwarded", ["method"], registry=self.registry
        )
        self.upstream_errors = Counter(
            "gatehouse_upstream_errors", "Failed calls to mcp_server", ["kind"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "gatehouse_rate_limited", "Requests refused by a rate limit", ["limit"],
            registry=self.registry,
        )
        self.audit_dropped = Counter(
            "gatehouse_audit_dropped", "Audit entries lost: queue full, or unwritable even "
            "when quarantined", registry=self.registry,
        )
        self.audit_quarantined = Counter(
            "gatehouse_audit_quarantined", "Audit entries the database refused, written with "
            "their safe fields only", registry=self.registry,
        )
        self.audit_auth_failures_suppressed = Counter(
            "gatehouse_audit_auth_failures_suppressed", "Authentication failures counted in a "
            "summary row instead of a row each", registry=self.registry,
        )
        self.mcp_client = Histogram(
            "mcp_client_operation_duration_seconds", "MCP requests forwarded to mcp_server "
            "(OpenTelemetry mcp.client.operation.duration)",
            ["mcp_method_name", "gen_ai_tool_name", "error_type"], buckets=MCP_BUCKETS,
            registry=self.registry,
        )
        self.sessions = Counter("gatehouse_sessions", "Sessions created and closed",
                                ["event"], registry=self.registry)
        self.redis_errors = Counter("gatehouse_redis_errors", "Failed Redis commands",
                                    ["kind"], registry=self.registry)
        self.dependency_ready = Gauge(
            "gatehouse_dependency_ready", "1 when the dependency answered the last readiness "
            "check (run at each scrape), else 0", ["dependency"], registry=self.registry)
        self._tools = known_tools()
        self._prime()

    def _prime(self) -> None:
        """Create the fixed series at zero, so rates and alerts see them before any event."""
        for event in ("created", "closed"):
            self.sessions.labels(event)
        for kind in ("timeout", "connection", "busy", "other"):
            self.redis_errors.labels(kind)
        for kind in ("connect", "timeout", "stream"):
            self.upstream_errors.labels(kind)
        self.rate_limited.labels("user")

    def mcp_method(self, method: str) -> None:
        self.mcp_requests.labels(method if method in MCP_METHODS else OTHER).inc()

    def tool(self, name: str | None) -> str:
        return name if name in self._tools else OTHER

    def client_operation(self, message: RpcMessage, send: Send) -> ClientOperation:
        """Time one forward to mcp_server: ``async with`` it around the forward, and send the
        answer through its :meth:`ClientOperation.send`."""
        method = message.method
        label = method if method in MCP_METHODS else (OTHER if method else "")
        tool = self.tool(message.name) if method == "tools/call" else ""
        return ClientOperation(self.mcp_client.labels, label, tool, send)

    def audited(self, event: str) -> None:
        """An audit entry was recorded; sessions are counted from theirs."""
        if event == "session.create":
            self.sessions.labels("created").inc()
        elif event == "session.close":
            self.sessions.labels("closed").inc()

    def readiness(self, checks: Mapping[str, Mapping[str, Any]]) -> None:
        for name in DEPENDENCIES:
            self.dependency_ready.labels(name).set(1 if checks.get(name, {}).get("ok") else 0)

    def watch(self, services: Services) -> None:
        """Read the services' own figures at each scrape, and count Redis errors."""
        self.registry.register(ServicesCollector(services))
        count_redis_errors(services.redis, self.redis_errors)


class ClientOperation:
    """One forward's duration and ``error_type`` (``tool_error`` for an ``isError`` result, a
    JSON-RPC error, the HTTP status class, or ``upstream_unavailable``)."""

    def __init__(self, labels: Any, method: str, tool: str, send: Send) -> None:
        self._labels, self._method, self._tool, self._send = labels, method, tool, send
        self._error = ""
        self._started = time.perf_counter()

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] >= 400:
            self._error = f"http_{message['status'] // 100}xx"
        elif message["type"] == "http.response.body" and not self._error:
            body = message.get("body", b"")
            self._error = next((kind for marker, kind in _ERROR_MARKERS if marker in body), "")
        await self._send(message)

    @property
    def error_type(self) -> str:
        """What went wrong so far (empty while nothing did); the forwarder's outcome too."""
        return self._error

    async def __aenter__(self) -> ClientOperation:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if exc is not None and not self._error:
            unavailable = isinstance(exc, UpstreamUnavailable)
            self._error = "upstream_unavailable" if unavailable else "_OTHER"
        self._labels(self._method, self._tool, self._error).observe(
            time.perf_counter() - self._started)


class ServicesCollector(Collector):
    """JWKS fetches, the database pool and the audit queue, read at scrape time."""

    def __init__(self, services: Services) -> None:
        self._services = services

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        jwks, pool, audit = self._services.jwks, self._services.pool, self._services.audit
        yield CounterMetricFamily("gatehouse_jwks_fetches", "JWKS fetches attempted",
                                  value=jwks.fetch_count)
        yield CounterMetricFamily("gatehouse_jwks_fetch_failures", "JWKS fetches that failed",
                                  value=jwks.fetch_failures)
        connections = GaugeMetricFamily("gatehouse_db_pool_connections", "Database pool "
                                        "connections by state", labels=["state"])
        connections.add_metric(["in_use"], pool.get_size() - pool.get_idle_size())
        connections.add_metric(["idle"], pool.get_idle_size())
        yield connections
        yield GaugeMetricFamily("gatehouse_db_pool_max", "Database pool size limit",
                                value=pool.get_max_size())
        yield GaugeMetricFamily("gatehouse_db_pool_waiting", "Requests waiting for a database "
                                "connection", value=_waiting(pool))
        yield GaugeMetricFamily("gatehouse_audit_queue_depth", "Audit entries queued, not yet "
                                "written", value=audit.queued)



def _waiting(pool: Any) -> int:
    """Acquirers queued for a connection. asyncpg has no public figure for it: its pool is an
    asyncio queue of connection holders, whose waiting getters are counted (0 if that ever
    changes, rather than failing the scrape)."""
    getters = getattr(getattr(pool, "_queue", None), "_getters", None) or ()
    return sum(1 for waiter in getters if not waiter.done())


def _redis_error_kind(exc: BaseException) -> str:
    if isinstance(exc, RedisTimeoutError | TimeoutError):
        return "timeout"
    if isinstance(exc, RedisConnectionError | OSError):
        return "connection"
    if isinstance(exc, ResponseError) and str(exc).startswith("BUSY"):
        return "busy"
    return "other"


def count_redis_errors(redis: Redis, counter: Counter) -> None:
    """Count every failed command of ``redis`` (scripts included; they run as commands) by
    kind. redis-py offers no hook, so the client's ``execute_command`` is wrapped."""
    execute: Callable[..., Awaitable[Any]] = redis.execute_command

    async def counted(*args: Any, **options: Any) -> Any:
        try:
            return await execute(*args, **options)
        except (RedisError, OSError, TimeoutError) as exc:
            counter.labels(_redis_error_kind(exc)).inc()
            raise

    setattr(redis, "execute_command", counted)  # noqa: B010  # on this instance only
