"""Composition root of mcp_server: a stateless FastMCP app behind the assertion check.

Stateless streamable HTTP means no transport session lives in a process, so any replica can
serve any request. Run with ``uvicorn --factory mcp_server.app:create_app``.
"""

from __future__ import annotations

from importlib.metadata import version

from fastmcp import FastMCP
from opentelemetry.sdk.trace import TracerProvider
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp

from mcp_server import connect_routes, provider_tools, tools, tracing
from mcp_server.auth import AssertionMiddleware
from mcp_server.lifespan import RuntimeHolder, lifespan_for
from mcp_server.metrics import ServerMetrics
from mcp_server.metrics_middleware import OperationTimer, ToolOutcomes
from mcp_server.provider_runner import UrlElicitationOffer
from mcp_server.scope import SessionToolScope
from mcp_server.settings import McpServerSettings
from oauth.assertion import AssertionVerifier
from oauth.keys import load_public_key
from resilience.draining import Draining
from telemetry import logs
from telemetry.logs import AccessLogMiddleware
from telemetry.traces import flushing

SERVER_NAME = "Gatehouse"
INSTRUCTIONS = "Gatehouse tools, called as the organisation and user the gateway vouches for."


def build_mcp(settings: McpServerSettings, trace_provider: TracerProvider | None = None
              ) -> FastMCP:
    """The always-present tools, the connect flow's internal routes, and the lifespan that
    builds the provider runtime both use and registers the enabled providers' tools."""
    holder = RuntimeHolder()
    metrics = ServerMetrics()
    mcp = FastMCP(
        SERVER_NAME,
        instructions=INSTRUCTIONS,
        version=version("gatehouse"),  # serverInfo: what a client shows and reports bugs against
        # OperationTimer outermost (times it all), ToolOutcomes next to the tool
        middleware=[*tracing.middleware(trace_provider, settings.trace_capture_arguments),
                    OperationTimer(metrics), SessionToolScope(), UrlElicitationOffer(),
                    ToolOutcomes(metrics)],
        lifespan=lifespan_for(settings, holder, provider_tools.register, metrics),
    )
    tools.register(mcp)
    connect_routes.register(mcp, holder, settings.connect_state_ttl_seconds, metrics)

    @mcp.custom_route("/healthz", methods=["GET"])
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return mcp


def create_app(settings: McpServerSettings | None = None) -> ASGIApp:
    resolved = settings or McpServerSettings()  # type: ignore[call-arg]  # from the environment
    logs.configure(resolved.log_format, resolved.log_level,
                   own_loggers=("mcp_server", "oauth", "sql", "resilience", "telemetry"))
    verifier = AssertionVerifier(load_public_key(resolved.internal_public_key_file.read_bytes()))
    provider = tracing.install()  # before the lifespan opens the (instrumented) HTTP session
    app = build_mcp(resolved, provider).http_app(path="/mcp", stateless_http=True)
    served = flushing(AccessLogMiddleware(AssertionMiddleware(app, verifier), "mcp_server.access",
                                          app.routes), provider)
    # SIGTERM: /healthz (what a balancer of mcp_servers checks) answers 503 for the grace first
    return Draining(served, probe="/healthz", grace=resolved.shutdown_grace_seconds)
