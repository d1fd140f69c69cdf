"""The gateway's edge: one pure ASGI layer doing what every request needs first.

:class:`EdgeMiddleware` opens the request's log context, gives it an id and trace context,
refuses oversized headers (431) and foreign origins on ``/mcp`` (403), turns any exception into
a problem document, and on the way out echoes the request id, records the request's metrics
and writes its access line — all through a single ``send`` wrapper: each wrapper a response
passes through costs every request, and these were five layers before (issue 14).

Pure ASGI (not ``BaseHTTPMiddleware``) so that streaming responses pass through untouched and
context variables behave.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
import uuid
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import BadRequest, GatewayError
from gateway.metrics import route_label
from gateway.origin import OriginCheck
from gateway.problem import INTERNAL_ERROR, error_response, translate
from gateway.services import services_of
from gateway.settings import GatewaySettings
from telemetry.logs import AccessLog, bind, close_context, open_context

log = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def _traceparent(incoming: str | None) -> str:
    """Continue a valid W3C trace, else start one; either way this hop gets a new span id."""
    match = _TRACEPARENT.match(incoming or "")
    trace_id = match[1] if match and match[1] != "0" * 32 else secrets.token_hex(16)
    flags = match[3] if match else "01"
    return f"00-{trace_id}-{secrets.token_hex(8)}-{flags}"


def _identify(scope: Scope) -> str:
    """The request's id (the caller's, if well-formed) and trace context, in its state."""
    request_id, traceparent = None, None
    for key, value in scope["headers"]:
        if key == b"x-request-id" and request_id is None:
            request_id = value.decode("latin-1")
        elif key == b"traceparent" and traceparent is None:
            traceparent = value.decode("latin-1")
    if request_id is None or not _REQUEST_ID.match(request_id):
        request_id = uuid.uuid4().hex
    scope["state"]["request_id"] = request_id
    scope["state"]["traceparent"] = _traceparent(traceparent)
    bind(request_id=request_id)
    return request_id


class _Exchange:
    """What the one ``send`` wrapper learns of the response on its way out."""

    __slots__ = ("on_start", "request_id", "send", "sent", "started", "status")

    def __init__(self, send: Send, request_id: str, on_start: Callable[[int], None]) -> None:
        self.send, self.request_id, self.on_start = send, request_id, on_start
        self.status, self.sent, self.started = 500, 0, False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started, self.status = True, message["status"]
            message["headers"] = [
                *(h for h in message.get("headers", ()) if h[0].lower() != b"x-request-id"),
                (b"x-request-id", self.request_id.encode("latin-1"))]
            self.on_start(self.status)
        elif message["type"] == "http.response.body":
            self.sent += len(message.get("body", b""))
        await self.send(message)


class EdgeMiddleware:
    """Request id, header limits, origin check, problems, metrics and the access line."""

    def __init__(self, app: ASGIApp, *, allowed_origins: frozenset[str],
                 logger: str = "gateway.access") -> None:
        self.app = app
        self.origins = OriginCheck(allowed_origins)
        self.access = AccessLog(logger)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        context = open_context()
        started = time.perf_counter()
        exchange = _Exchange(send, _identify(scope), self._metering(scope, started))
        try:
            await self._serve(scope, receive, exchange)
        finally:
            bind(session_id=_path_session(scope))
            self.access.line(scope, exchange.status, exchange.sent,
                             time.perf_counter() - started)
            close_context(context)

    async def _serve(self, scope: Scope, receive: Receive, exchange: _Exchange) -> None:
        refusal = _header_error(scope, services_of(scope).settings)
        try:
            if refusal is not None:
                await error_response(refusal, request_id=exchange.request_id)(
                    scope, receive, exchange)
            elif self.origins.refused(scope):
                await self.origins.response(exchange.request_id)(scope, receive, exchange)
            else:
                await self.app(scope, receive, exchange)
        except Exception as exc:
            if exchange.started:
                raise  # the status line is gone; closing the stream is all that is left
            await error_response(_problem(exc, scope), request_id=exchange.request_id)(
                scope, receive, exchange)

    @staticmethod
    def _metering(scope: Scope, started: float) -> Callable[[int], None]:
        metrics = services_of(scope).metrics

        def on_start(status: int) -> None:
            route = route_label(scope)
            metrics.latency.labels(route).observe(time.perf_counter() - started)
            metrics.requests.labels(route, scope["method"], str(status)).inc()

        return on_start


def _problem(exc: Exception, scope: Scope) -> GatewayError:
    """The problem an exception is shown as; unexpected ones are logged, never shown."""
    error = translate(exc)
    if error is None:
        log.exception("unhandled error on %s %s", scope["method"], scope["path"])
        error = INTERNAL_ERROR
    return error


def _path_session(scope: Scope) -> str | None:
    """The session a request names (``/mcp/{session_id}``, ``/v1/sessions/{session_id}``...), for
    its access line even when it was refused; only a well-formed id, never arbitrary text."""
    raw = scope.get("path_params", {}).get("session_id")
    try:
        return str(uuid.UUID(raw)) if isinstance(raw, str) else None
    except ValueError:
        return None


def _header_error(scope: Scope, settings: GatewaySettings) -> BadRequest | None:
    """431 for too many or too large headers, before any other work: uvicorn's default parser
    (httptools) passes a 1 MB value or 5,000 headers on to the app."""
    headers = scope["headers"]
    if len(headers) > settings.max_header_count:
        detail = f"more than {settings.max_header_count} header fields"
    elif sum(len(name) + len(value) for name, value in headers) > settings.max_header_bytes:
        detail = f"header fields larger than {settings.max_header_bytes} bytes in all"
    else:
        return None
    return BadRequest(detail, status=431, code="request_headers_too_large")
