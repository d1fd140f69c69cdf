"""Prometheus metrics, one registry per application instance (so tests can run several).

Labels are drawn from small fixed sets (route families, JSON-RPC method names, error codes) so
that no caller-chosen value can explode the series count, and nothing secret is ever a label.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

MCP_METHODS = frozenset({
    "initialize", "ping", "tools/list", "tools/call", "prompts/list", "prompts/get",
    "resources/list", "resources/read", "resources/templates/list", "completion/complete",
    "logging/setLevel", "notifications/initialized", "notifications/cancelled",
})


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

    def mcp_method(self, method: str) -> None:
        self.mcp_requests.labels(method if method in MCP_METHODS else "other").inc()
