"""Pure ASGI middleware at the edge: request identity, metrics, and errors as problems.

The access log line is :class:`telemetry.logs.AccessLogMiddleware`'s, placed outside these;
request identity binds the request id (and the session a path names) to its log context.

Pure ASGI (not ``BaseHTTPMiddleware``) so that streaming responses pass through untouched and
context variables behave.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.asgi import header
from gateway.errors import BadRequest
from gateway.metrics import route_family
from gateway.problem import INTERNAL_ERROR, error_response, translate
from gateway.services import services_of
from telemetry.logs import bind

log = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

def _traceparent(incoming: str | None) -> str:
    """Continue a valid W3C trace, else start one; either way this hop gets a new span id."""
    match = _TRACEPARENT.match(incoming or "")
    trace_id = match[1] if match and match[1] != "0" * 32 else secrets.token_hex(16)
    flags = match[3] if match else "01"
    return f"00-{trace_id}-{secrets.token_hex(8)}-{flags}"


class RequestContextMiddleware:
    """Gives each request an id and trace context, echoes the id, and records metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = header(scope, b"x-request-id")
        request_id = incoming if incoming and _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        scope["state"]["request_id"] = request_id
        bind(request_id=request_id)
        scope["state"]["traceparent"] = _traceparent(header(scope, b"traceparent"))
        metrics = services_of(scope).metrics
        route = route_family(scope["path"])
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["X-Request-Id"] = request_id
                metrics.latency.labels(route).observe(time.perf_counter() - started)
                metrics.requests.labels(route, scope["method"], str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, send_with_id)
        bind(session_id=_path_session(scope))


def _path_session(scope: Scope) -> str | None:
    """The session a request names (``/mcp/{session_id}``, ``/v1/sessions/{session_id}``...), for
    its access line even when it was refused; only a well-formed id, never arbitrary text."""
    raw = scope.get("path_params", {}).get("session_id")
    try:
        return str(uuid.UUID(raw)) if isinstance(raw, str) else None
    except ValueError:
        return None


class ProblemMiddleware:
    """Turns any exception into a problem document; unexpected ones are logged, never shown."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                raise  # the status line is gone; closing the stream is all that is left
            error = translate(exc)
            if error is None:
                log.exception("unhandled error on %s %s", scope["method"], scope["path"])
                error = INTERNAL_ERROR
            request_id = scope.get("state", {}).get("request_id")
            response = error_response(error, request_id=request_id)
            await response(scope, receive, send)


class HeaderLimitMiddleware:
    """Answers 431 to a request with too many or too large headers, before any other work:
    uvicorn's default parser (httptools) passes a 1 MB value or 5,000 headers on to the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            error = _header_error(scope)
            if error is not None:
                request_id = scope.get("state", {}).get("request_id")
                await error_response(error, request_id=request_id)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _header_error(scope: Scope) -> BadRequest | None:
    settings = services_of(scope).settings
    headers = scope["headers"]
    if len(headers) > settings.max_header_count:
        detail = f"more than {settings.max_header_count} header fields"
    elif sum(len(name) + len(value) for name, value in headers) > settings.max_header_bytes:
        detail = f"header fields larger than {settings.max_header_bytes} bytes in all"
    else:
        return None
    return BadRequest(detail, status=431, code="request_headers_too_large")
