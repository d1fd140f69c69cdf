"""Traces of the gateway (OpenTelemetry), configured only by the standard ``OTEL_*`` variables.

With no exporter configured (neither ``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` nor ``OTEL_TRACES_EXPORTER``), or with
``OTEL_SDK_DISABLED=true``, no SDK is installed at all: every span below is the API's
non-recording no-op and the server-span middleware is not even in the stack.

Spans of one MCP request: a SERVER span per HTTP request (continuing the caller's W3C
``traceparent``/``tracestate``), renamed ``{mcp.method.name} {target}`` once the JSON-RPC message
is parsed; children for token verification, JWKS fetches, the RLS transaction and prompt
composition (each opened by its own module through the API); and a CLIENT span toward mcp_server
whose context travels in the ``traceparent`` header and the assertion's ``traceparent`` claim.
Attributes follow the OpenTelemetry MCP semantic conventions; tenant context is
``gatehouse.org_id``/``gatehouse.session_id``. Never a token, argument or result.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanKind, StatusCode
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.asgi import header
from gateway.jsonrpc import RpcMessage
from gateway.metrics import route_family
from telemetry import traces
from telemetry.spans import child_span, current
from telemetry.traces import W3C

tracer = trace.get_tracer("gatehouse.gateway")

DEFAULT_SERVICE = "gatehouse-gateway"
SESSION_PROTOCOLS = frozenset({"2025-11-25"})  # mcp.session.id exists only on these
_RPC_ERROR = re.compile(rb'"error":\s*\{\s*"code":\s*(-?\d{1,6})')


def install(environ: Mapping[str, str] = os.environ) -> TracerProvider | None:
    """The SDK (see :mod:`telemetry.traces`) with the asyncpg instrumentation; ``None`` when
    tracing is off. Not aiohttp's (the forward has its own CLIENT span) nor Redis's: the
    gateway's one Redis command per request is the limiter's, already its ``admission`` span,
    and every span costs each traced request tens of microseconds."""
    return traces.install(DEFAULT_SERVICE, _instrument, environ)


def _instrument(provider: TracerProvider) -> None:
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    AsyncPGInstrumentor().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]


def middleware(provider: TracerProvider | None) -> list[Middleware]:
    """The server-span middleware (outermost), or nothing when tracing is off."""
    return [] if provider is None else [Middleware(TracingMiddleware, provider=provider)]


class _HeaderGetter(Getter[Iterable[tuple[bytes, bytes]]]):
    def get(self, carrier: Iterable[tuple[bytes, bytes]], key: str) -> list[str] | None:
        name = key.lower().encode("latin-1")
        values = [v.decode("latin-1") for k, v in carrier if k == name]
        return values or None

    def keys(self, carrier: Iterable[tuple[bytes, bytes]]) -> list[str]:
        return [k.decode("latin-1") for k, _ in carrier]


_GETTER = _HeaderGetter()


class TracingMiddleware:
    """One SERVER span per HTTP request, child of the caller's span when it sent a valid
    ``traceparent``; flushes the exporter when the application shuts down."""

    def __init__(self, app: ASGIApp, provider: TracerProvider) -> None:
        self.app = app
        self.lifespan = traces.flushing(app, provider)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        span = tracer.start_span(
            f"{scope['method']} {route_family(scope['path'])}", kind=SpanKind.SERVER,
            context=W3C.extract(scope["headers"], getter=_GETTER),
            attributes=_server_attributes(scope),
        )
        with current(span):
            await self.app(scope, receive, _recording_status(span, send))
            _name_by_route(span, scope)


def _server_attributes(scope: Scope) -> dict[str, Any]:
    attributes: dict[str, Any] = {"http.request.method": scope["method"]}
    client = scope.get("client")
    if client:
        attributes["client.address"] = client[0]
    return attributes


def _recording_status(span: Span, send: Send) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            status = int(message["status"])
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_attribute("error.type", str(status))
                span.set_status(StatusCode.ERROR)
        await send(message)

    return sending


def _name_by_route(span: Span, scope: Scope) -> None:
    """Outside /mcp (named after the MCP method), the span is named by its route template."""
    route = getattr(scope.get("route"), "path", None)
    if isinstance(route, str) and route_family(scope["path"]) != "/mcp":
        span.set_attribute("http.route", route)
        span.update_name(f"{scope['method']} {route}")


def mcp_attributes(scope: Scope, message: RpcMessage) -> dict[str, Any]:
    """The MCP semantic-convention attributes of one JSON-RPC request, from what the gateway
    already parsed (method, id, target name) and MCP's headers."""
    attributes: dict[str, Any] = {"mcp.method.name": message.method or "response"}
    if message.id is not None:
        attributes["jsonrpc.request.id"] = str(message.id)
    if message.method == "tools/call":
        attributes["gen_ai.operation.name"] = "execute_tool"
        if message.name:
            attributes["gen_ai.tool.name"] = message.name
    elif message.method == "prompts/get" and message.name:
        attributes["gen_ai.prompt.name"] = message.name
    protocol = header(scope, b"mcp-protocol-version")
    if protocol:
        attributes["mcp.protocol.version"] = protocol
        session = header(scope, b"mcp-session-id")
        if session and protocol in SESSION_PROTOCOLS:
            attributes["mcp.session.id"] = session
    return attributes


def span_name(message: RpcMessage) -> str:
    method = message.method or "response"
    return f"{method} {message.name}" if message.name else method


def describe_request(scope: Scope, message: RpcMessage, session_id: str | None) -> None:
    """Name the current SERVER span after the MCP request it carries, with its attributes."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    span.update_name(span_name(message))
    span.set_attributes(mcp_attributes(scope, message))
    if session_id is not None:
        span.set_attribute("gatehouse.session_id", session_id)


def tag_tenant(org_id: str) -> None:
    """The organisation on the current span, once authentication knows it."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute("gatehouse.org_id", org_id)


@lru_cache(maxsize=8)
def _peer(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


@contextmanager
def client_span(scope: Scope, message: RpcMessage, url: str, send: Send
                ) -> Iterator[Send]:
    """The CLIENT span of one exchange with mcp_server, current while it runs (so the
    ``traceparent`` sent is its own); yields ``send`` wrapped to record how the answer ended.
    Without a recording SERVER span (tracing off) it is ``send`` itself, and no span."""
    server = trace.get_current_span()
    if not server.is_recording():
        yield send
        return
    host, port = _peer(url)
    attributes = mcp_attributes(scope, message) | {"server.address": host, "server.port": port}
    with child_span(tracer, span_name(message), attributes, SpanKind.CLIENT) as span:
        yield _recording_answer((span, server), send)


def _recording_answer(spans: tuple[Span, Span], send: Send) -> Send:
    """On the CLIENT span and the SERVER span (the gateway answers the agent what mcp_server
    answered): ``tool_error`` for an ``isError`` result, the JSON-RPC code for an error
    answer, the HTTP status from 400 on; spotted in the chunks as they pass, never parsed."""
    client = spans[0]

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            status = int(message["status"])
            client.set_attribute("http.response.status_code", status)
            if status >= 400:
                for span in spans:
                    _failed(span, str(status))
        elif message["type"] == "http.response.body":
            for span in spans:
                _note_answer(span, message.get("body", b""))
        await send(message)

    return sending


def _failed(span: Span, error_type: str, rpc_code: str | None = None) -> None:
    span.set_attribute("error.type", error_type)
    if rpc_code is not None:
        span.set_attribute("rpc.response.status_code", rpc_code)
    span.set_status(StatusCode.ERROR)


def _note_answer(span: Span, chunk: bytes) -> None:
    match = _RPC_ERROR.search(chunk)
    if match is not None:
        code = match[1].decode()
        _failed(span, code, code)
    elif b'"isError":true' in chunk:
        _failed(span, "tool_error")


def inject(headers: MutableMapping[str, str], fallback: str) -> str:
    """Put the current span's ``traceparent`` (and ``tracestate``) in ``headers``; without a
    recording span, the request's own ``fallback``. Returns the ``traceparent`` sent."""
    if trace.get_current_span().is_recording():
        W3C.inject(headers)
    headers.setdefault("traceparent", fallback)
    return headers["traceparent"]
