"""Traces of mcp_server (OpenTelemetry), configured only by the standard ``OTEL_*`` variables.

With no exporter configured (neither ``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` nor ``OTEL_TRACES_EXPORTER``), or with
``OTEL_SDK_DISABLED=true``, no SDK is installed and :class:`ServerSpans` is not in the chain:
spans opened by the lower packages are the API's non-recording no-ops.

:class:`ServerSpans` opens the SERVER span of each MCP request (``tools/call github_whoami``),
child of the gateway's CLIENT span named in the request's ``traceparent`` header, with the
OpenTelemetry MCP attributes and the caller's ``gatehouse.org_id``/``gatehouse.session_id``.
FastMCP's own span would do part of this, but it records exception messages (a tool's answer
can carry a one-time connect link) and lacks ``jsonrpc.request.id``, ``gen_ai.operation.name``
and ``tool_error`` for ``isError`` results; FastMCP is kept to propagation only (it still reads
``params._meta`` trace context when no header carries one). Below it: the admission, the RLS
transactions, vault decryption, refresh, and one CLIENT span per provider HTTP call (aiohttp
instrumentation, URL reduced to its origin: paths and queries carry tool arguments).
Tool arguments and results are recorded only with ``GATEHOUSE_TRACE_CAPTURE_ARGUMENTS=true``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import fastmcp
import yarl
from fastmcp.exceptions import ToolError
from fastmcp.server.dependencies import get_http_request
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from mcp.shared.exceptions import MCPError
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanKind, StatusCode

from mcp_server.auth import current_caller
from mcp_server.errors import NoVerifiedCaller
from mcp_server.metrics_middleware import is_error_result, target_name
from telemetry import traces
from telemetry.traces import W3C

tracer = trace.get_tracer("gatehouse.mcp_server")

DEFAULT_SERVICE = "gatehouse-mcp-server"
SESSION_PROTOCOLS = frozenset({"2025-11-25"})  # mcp.session.id exists only on these
CAPTURE_LIMIT = 4096  # characters of arguments or result kept when capture is on


def install(environ: Mapping[str, str] = os.environ) -> TracerProvider | None:
    """The SDK (see :mod:`telemetry.traces`) with the asyncpg, Redis and aiohttp-client
    instrumentations; ``None`` when tracing is off. Call before the lifespan creates its HTTP
    session: only sessions created afterwards are instrumented."""
    return traces.install(DEFAULT_SERVICE, _instrument, environ)


def _origin(url: yarl.URL) -> str:
    return str(url.origin()) if url.absolute else ""


def _instrument(provider: TracerProvider) -> None:
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor

    fastmcp.settings.telemetry_mode = "propagation_only"  # ServerSpans owns the SERVER span
    traces.instrument_storage(provider)
    AioHttpClientInstrumentor().instrument(tracer_provider=provider, url_filter=_origin)


def request_attributes(context: MiddlewareContext[Any], target: str | None) -> dict[str, Any]:
    """The MCP semantic-convention attributes of the request being served (for ``target``,
    the tool or prompt it names)."""
    method = context.method or ""
    attributes: dict[str, Any] = {"mcp.method.name": method}
    ctx = context.fastmcp_context
    request = None if ctx is None else ctx.request_context
    if request is not None:
        attributes["jsonrpc.request.id"] = str(request.request_id)
        protocol = request.protocol_version
        if protocol:
            attributes["mcp.protocol.version"] = protocol
    if method == "tools/call":
        attributes["gen_ai.operation.name"] = "execute_tool"
        if target:
            attributes["gen_ai.tool.name"] = target
    elif method == "prompts/get" and target:
        attributes["gen_ai.prompt.name"] = target
    return attributes


def _http_attributes(attributes: dict[str, Any]) -> Any:
    """Add what the HTTP request says (client, MCP session, caller); the parent context."""
    request = get_http_request()
    if request.client is not None:
        attributes["client.address"] = request.client.host
    session = request.headers.get("mcp-session-id")
    if session and attributes.get("mcp.protocol.version") in SESSION_PROTOCOLS:
        attributes["mcp.session.id"] = session
    try:
        caller = current_caller()
    except NoVerifiedCaller:
        pass
    else:
        attributes["gatehouse.org_id"] = caller.org_id
        if caller.session_id is not None:
            attributes["gatehouse.session_id"] = caller.session_id
    if "traceparent" in request.headers:
        return W3C.extract(request.headers)
    return None  # the current context: FastMCP attached any params._meta trace context


def _record_error(span: Span, exc: BaseException) -> None:
    """The error's kind, never its message (a tool's message can carry a connect link)."""
    if isinstance(exc, MCPError):
        code = str(exc.error.code)
        span.set_attributes({"error.type": code, "rpc.response.status_code": code})
    else:
        span.set_attribute("error.type", "tool_error" if isinstance(exc, ToolError)
                           else type(exc).__qualname__)
    span.set_status(StatusCode.ERROR)


def _captured(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)[:CAPTURE_LIMIT]


class ServerSpans(Middleware):
    """The SERVER span of each MCP request (first in the middleware chain)."""

    def __init__(self, capture_arguments: bool = False) -> None:
        self.capture_arguments = capture_arguments

    async def on_request(
        self, context: MiddlewareContext[Any], call_next: CallNext[Any, Any]
    ) -> Any:
        target = target_name(context.message)
        attributes = request_attributes(context, target)
        parent = _http_attributes(attributes)
        name = f"{context.method} {target}" if target else str(context.method)
        with tracer.start_as_current_span(
            name, context=parent, kind=SpanKind.SERVER, attributes=attributes,
            record_exception=False, set_status_on_exception=False,
        ) as span:
            if self.capture_arguments and context.method == "tools/call":
                span.set_attribute("gen_ai.tool.call.arguments",
                                   _captured(getattr(context.message, "arguments", None)))
            try:
                result = await call_next(context)
            except BaseException as exc:
                _record_error(span, exc)
                raise
            if is_error_result(result):
                span.set_attribute("error.type", "tool_error")
                span.set_status(StatusCode.ERROR)
            if self.capture_arguments and context.method == "tools/call":
                span.set_attribute("gen_ai.tool.call.result", _captured(
                    getattr(result, "structured_content", None)
                    or [getattr(c, "text", "") for c in getattr(result, "content", [])]))
            return result


def middleware(provider: TracerProvider | None, capture_arguments: bool) -> list[Middleware]:
    """:class:`ServerSpans` when tracing is on; nothing otherwise."""
    return [] if provider is None else [ServerSpans(capture_arguments)]
