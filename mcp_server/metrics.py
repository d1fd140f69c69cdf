"""mcp_server's Prometheus metrics: one registry per app, served on a port of its own.

``/metrics`` is internal like ``/healthz`` but, unlike ``/mcp``, needs no assertion, so it is not
served on the MCP port at all: :func:`serve` starts a small listener on
``GATEHOUSE_METRICS_HOST:GATEHOUSE_METRICS_PORT`` (port 0: none) in the lifespan.

Every label value comes from a set fixed at start-up: tool names are the registered tools (any
other name is ``other``), providers the configured ones, outcomes and limits the constants
below. Organisation and user ids, arguments, tokens and provider bodies are never labels (the
breaker view keys its memory by organisation but exports only counts per provider).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TypeVar

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from oauth.errors import TokenEndpointError

OTHER = "other"
TOOL_OUTCOMES = ("success", "tool_error", "needs_connect", "needs_reconnect", "rate_limited",
                 "breaker_open", "provider_error")
LIMITS = ("user_tool", "org_provider", "provider", "unavailable")
REFRESH_OUTCOMES = ("success", "rejected", "failed", "timeout")
CONNECT_STAGES = ("started", "completed", "denied", "failed")
BREAKER_STATES = ("open", "half_open")
BREAKER_MEMORY_SECONDS = 600.0  # an organisation's breaker not seen for this long is forgotten
MAX_BREAKERS = 10_000
# Seconds; MCP's semantic conventions recommend these for operation durations.
DURATION_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
T = TypeVar("T")


class BreakerView(Collector):
    """Organisations' breakers per provider as this replica last saw them (at admission or
    after a failed call): ``gatehouse_provider_breakers{provider,state}`` counts those open or
    half-open. Keyed by (provider, organisation) in memory only; bounded and forgetful."""

    def __init__(self, transitions: Counter) -> None:
        self._seen: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()
        self._transitions = transitions
        self.providers: tuple[str, ...] = ()

    def observe(self, provider: str, org_id: str, state: str) -> None:
        key = (provider, org_id)
        previous = self._seen.pop(key, ("closed", 0.0))[0]
        if state != previous:
            self._transitions.labels(provider, state).inc()
        if state != "closed":
            self._seen[key] = (state, time.monotonic())
            if len(self._seen) > MAX_BREAKERS:
                self._seen.popitem(last=False)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "gatehouse_provider_breakers", "Organisations whose breaker for the provider this "
            "replica last saw open or half-open", labels=["provider", "state"])
        counts = {(p, s): 0 for p in self.providers for s in BREAKER_STATES}
        oldest = time.monotonic() - BREAKER_MEMORY_SECONDS
        for (provider, _), (state, seen) in list(self._seen.items()):
            if seen >= oldest and (provider, state) in counts:
                counts[provider, state] += 1
        for (provider, state), count in counts.items():
            family.add_metric([provider, state], count)
        yield family


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.operation = Histogram(
            "mcp_server_operation_duration_seconds", "MCP requests served (OpenTelemetry "
            "mcp.server.operation.duration)", ["mcp_method_name", "gen_ai_tool_name",
                                                "error_type"],
            buckets=DURATION_BUCKETS, registry=registry)
        self.tool_calls = Counter("gatehouse_tool_calls", "Tool calls by outcome",
                                  ["gen_ai_tool_name", "outcome"], registry=registry)
        self.provider_latency = Histogram(
            "gatehouse_provider_request_duration_seconds", "Provider API calls",
            ["provider", "status_class"], buckets=DURATION_BUCKETS, registry=registry)
        self.breaker_transitions = Counter(
            "gatehouse_provider_breaker_transitions", "Changes of an organisation's breaker "
            "state for a provider, as seen by this replica", ["provider", "state"],
            registry=registry)
        self.limit_refusals = Counter("gatehouse_tool_limit_refusals",
                                      "Tool calls refused by a rate limit", ["limit"],
                                      registry=registry)
        self.refreshes = Counter("gatehouse_token_refreshes", "Token refreshes at a provider",
                                 ["provider", "outcome"], registry=registry)
        self.refresh_lock_waits = Counter(
            "gatehouse_token_refresh_lock_waits", "Calls that waited for another caller's "
            "refresh", ["provider"], registry=registry)
        self.vault_failures = Counter("gatehouse_vault_decryption_failures",
                                      "Stored connections that could not be opened",
                                      ["provider"], registry=registry)
        self.connect_flows = Counter("gatehouse_connect_flows", "Connect flows by stage",
                                     ["provider", "stage"], registry=registry)
        self.breakers = BreakerView(self.breaker_transitions)
        registry.register(self.breakers)
        self._tools: frozenset[str] = frozenset()
        self._providers: frozenset[str] = frozenset()

    def known(self, tools: Iterable[str], providers: Iterable[str]) -> None:
        """Fix the label sets (the lifespan calls this once tools are registered) and create
        every counter series at zero, so rates and alerts see them before the first event."""
        self._tools, self._providers = frozenset(tools), frozenset(providers)
        self.breakers.providers = tuple(sorted(self._providers))
        for tool in self._tools:
            for outcome in TOOL_OUTCOMES:
                self.tool_calls.labels(tool, outcome)
        for limit in LIMITS:
            self.limit_refusals.labels(limit)
        for provider in self._providers:
            self._provider_series(provider)

    def _provider_series(self, provider: str) -> None:
        for outcome in REFRESH_OUTCOMES:
            self.refreshes.labels(provider, outcome)
        for stage in CONNECT_STAGES:
            self.connect_flows.labels(provider, stage)
        for state in ("closed", *BREAKER_STATES):
            self.breaker_transitions.labels(provider, state)
        self.refresh_lock_waits.labels(provider)
        self.vault_failures.labels(provider)
        self.provider_latency.labels(provider, "2xx")

    def tool(self, name: str | None) -> str:
        return name if name in self._tools else OTHER

    def provider(self, name: str) -> str:
        return name if name in self._providers else OTHER

    def outcome(self, tool: str | None, outcome: str) -> None:
        self.tool_calls.labels(self.tool(tool), outcome).inc()

    def connect(self, provider: str, stage: str) -> None:
        self.connect_flows.labels(self.provider(provider), stage).inc()

    def counted_refresh(self, provider: str, grant: Callable[[str], Awaitable[T]]
                        ) -> Callable[[str], Awaitable[T]]:
        """``grant`` (a provider's refresh-token grant), counting each call's outcome."""
        async def refresh(refresh_token: str) -> T:
            outcome = "failed"
            try:
                answer = await grant(refresh_token)
                outcome = "success"
                return answer
            except TokenEndpointError:
                outcome = "rejected"
                raise
            except BaseException as exc:  # the refresher's deadline cancels the grant
                outcome = "timeout" if _is_timeout(exc) else "failed"
                raise
            finally:
                self.refreshes.labels(self.provider(provider), outcome).inc()

        return refresh


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError | asyncio.CancelledError)


def status_class(status: int) -> str:
    return f"{min(max(status // 100, 2), 5)}xx"


async def serve(registry: CollectorRegistry, host: str, port: int) -> web.AppRunner:
    """Start the ``/metrics`` listener; the caller cleans the returned runner up."""

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner

