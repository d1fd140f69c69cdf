"""Forwarding MCP traffic to mcp_server over one pooled keep-alive HTTP client.

The caller's ``Authorization`` header is replaced by an internal assertion and never leaves the
gateway; only MCP's own headers are carried, both ways. Response bodies (JSON or SSE) are sent
on chunk by chunk as they arrive, never buffered. Request bodies are capped and checked for
JSON-RPC shape first so malformed input gets a clear JSON-RPC error, not an upstream surprise.
Protocol 2026-07-28 routes on ``Mcp-Method``/``Mcp-Name``/``Mcp-Param-*`` headers and 2025-11-25
on ``Mcp-Session-Id``; both kinds are carried, so both protocol versions pass through unchanged.
"""

from __future__ import annotations

import time

import aiohttp
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway import tracing
from gateway.asgi import header
from gateway.audit import AuditEntry
from gateway.auth import principal_of
from gateway.errors import BadRequest, ConnectTimeout, RpcError, UpstreamUnavailable
from gateway.jsonrpc import RpcMessage, parse_message
from gateway.mcp_system_prompt import (
    REWRITTEN_METHODS,
    SYSTEM_PROMPT,
    rewrite_answer,
    system_prompt_answer,
)
from gateway.metrics import ClientOperation
from gateway.permissions import require
from gateway.services import Services, services_of
from gateway.sessions import Session, usable
from gateway.system_prompt import compose_for
from gateway.upstream import UpstreamResponse
from oauth.assertion import CallerIdentity
from sql import rls_transaction
from telemetry.logs import bind

REQUEST_HEADERS = frozenset({
    b"accept", b"content-type", b"mcp-protocol-version", b"mcp-session-id", b"mcp-method",
    b"mcp-name", b"last-event-id",
})
RESPONSE_HEADERS = frozenset({
    "content-type", "content-length", "cache-control", "mcp-session-id", "mcp-protocol-version",
    "www-authenticate", "allow",
})
_RESPONSE_HEADERS = frozenset(name.encode("latin-1") for name in RESPONSE_HEADERS)
_JSON_TYPES = ("application/json",)
# Methods that only read: one that reached mcp_server may be sent again when a reused
# connection broke before any answer (RFC 9110 9.2.2). A tools/call may have acted: never.
_REPLAYABLE = frozenset({
    "initialize", "ping", "server/discover", "tools/list", "prompts/list", "prompts/get",
    "resources/list", "resources/read", "resources/templates/list", "completion/complete",
})


async def read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest("client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BadRequest(
                f"request body exceeds {limit} bytes", status=413, code="payload_too_large"
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)



def _content_type(scope: Scope) -> str:
    return (header(scope, b"content-type") or "").split(";")[0].strip().lower()


def _timed_out(exc: TimeoutError) -> UpstreamUnavailable:
    """504 either way. A connection not accepted in time (an overloaded upstream) never carried
    the request, so that answer says when to retry; an unanswered request may have been acted
    on."""
    if isinstance(exc, ConnectTimeout):
        return UpstreamUnavailable("the MCP server did not accept the connection in time",
                                   status=504, code="upstream_timeout", retry_after=1)
    return UpstreamUnavailable("the MCP server did not answer in time", status=504,
                               code="upstream_timeout")


class McpForwarder:
    """The ASGI endpoint behind ``/mcp``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        services = services_of(scope)  # POST only: the routes answer other methods with 405
        if _content_type(scope) not in _JSON_TYPES:
            raise BadRequest(
                "MCP messages must be sent as application/json",
                status=415, code="unsupported_media_type",
            )
        body = await read_body(receive, services.settings.max_body_bytes)
        try:
            message = parse_message(body)
        except RpcError as exc:
            await Response(exc.body(), 400, media_type="application/json")(scope, receive, send)
            return
        self._authorize(scope, message)
        services.metrics.mcp_method(message.method or "response")
        session = await self._session(services, scope)
        tracing.describe_request(scope, message, str(session.id) if session else None)
        if session is not None and await self._deliver_prompt(
            services, scope, body, receive, send, session, message
        ):
            return
        started = time.perf_counter()
        url = services.settings.mcp_server_url
        with tracing.client_span(scope, message, url, send) as traced_send:
            async with services.metrics.client_operation(message, traced_send) as operation:
                succeeded = await self._forward(services, scope, body, operation, session,
                                                replayable=message.method in _REPLAYABLE)
        if message.method == "tools/call":
            self._audit_tool_call(services, scope, message, session, succeeded, started)

    async def _deliver_prompt(
        self, services: Services, scope: Scope, body: bytes, receive: Receive, send: Send,
        session: Session, message: RpcMessage,
    ) -> bool:
        """Answer or rewrite the exchanges that carry the session's system prompt; whether it
        did (see :mod:`gateway.mcp_system_prompt`)."""
        wants_prompt = message.method == "prompts/get" and message.name == SYSTEM_PROMPT
        if not wants_prompt and message.method not in REWRITTEN_METHODS:
            return False
        principal = principal_of(scope)
        async with rls_transaction(services.pool, principal) as conn:
            prompt = await compose_for(conn, services.composer, principal, session)
        if wants_prompt:
            protocol = header(scope, b"mcp-protocol-version")
            answer = system_prompt_answer(message.id, prompt.text, protocol)
            await Response(answer, media_type="application/json")(scope, receive, send)
            return True
        upstream = await self._open(services, scope, body, session,
                                    replayable=message.method in _REPLAYABLE)
        async with upstream:
            raw = await upstream.read()
            content_type = upstream.header(b"content-type")
            rewritten = rewrite_answer(raw, content_type, message.method or "", message.id,
                                       prompt.text)
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in upstream.headers
                       if k in _RESPONSE_HEADERS and k != b"content-length"}
            await Response(rewritten, upstream.status, headers)(scope, receive, send)
        return True

    def _audit_tool_call(
        self, services: Services, scope: Scope, message: RpcMessage, session: Session | None,
        succeeded: bool, started: float,
    ) -> None:
        """Queue the call's audit entry: tool, outcome and duration, never arguments or results."""
        principal = principal_of(scope)
        details: dict[str, object] = {
            "duration_ms": round((time.perf_counter() - started) * 1000, 2)
        }
        if session is not None:
            details["session_id"] = str(session.id)
        services.audit.enqueue(AuditEntry(
            principal.org_id, principal.user_id, "tool.call",
            "success" if succeeded else "failure", target=f"tool:{message.name or ''}",
            details=details, request_id=scope["state"]["request_id"],
        ))

    def _authorize(self, scope: Scope, message: RpcMessage) -> None:
        if message.method == "tools/call":
            require(principal_of(scope), "tools:call")

    async def _session(self, services: Services, scope: Scope) -> Session | None:
        """The session named in the path, which the caller must own and which must be active;
        ``None`` for the user's default context (``/mcp``)."""
        raw = scope.get("path_params", {}).get("session_id")
        if raw is None:
            return None
        session = await usable(services.pool, principal_of(scope), raw)
        bind(session_id=str(session.id))
        services.activity.touch(session)
        return session

    def _headers(
        self, services: Services, scope: Scope, session: Session | None
    ) -> dict[str, str]:
        principal = principal_of(scope)
        state = scope["state"]
        headers = {
            key.decode("latin-1"): value.decode("latin-1")
            for key, value in scope["headers"]
            if key in REQUEST_HEADERS or key.startswith(b"mcp-param-")
        }
        caller = CallerIdentity(
            org_id=principal.org_id,
            user_id=principal.user_id,
            roles=principal.roles,
            request_id=state["request_id"],
            traceparent=tracing.inject(headers, state["traceparent"]),  # the CLIENT span's
            session_id=str(session.id) if session else None,
            allowed_tools=session.allowed_tools if session else None,
        )
        headers["authorization"] = "Bearer " + services.signer.sign(caller)
        headers["x-request-id"] = state["request_id"]
        return headers

    async def _forward(
        self, services: Services, scope: Scope, body: bytes, operation: ClientOperation,
        session: Session | None, *, replayable: bool,
    ) -> bool:
        """Relay the exchange through ``operation``, which spots a tool's failure or a JSON-RPC
        error in the chunks as they pass; whether it succeeded (2xx, relayed whole, no error)."""
        upstream = await self._open(services, scope, body, session, replayable)
        async with upstream:
            await operation.send({
                "type": "http.response.start",
                "status": upstream.status,
                "headers": [(k, v) for k, v in upstream.headers if k in _RESPONSE_HEADERS],
            })
            whole = await self._stream(services, upstream, operation.send)
        return whole and not operation.error_type and 200 <= upstream.status < 300

    async def _open(
        self, services: Services, scope: Scope, body: bytes, session: Session | None,
        replayable: bool,
    ) -> UpstreamResponse:
        try:
            return await services.upstream.request(
                scope["method"], self._headers(services, scope, session), body,
                replayable=replayable)
        except TimeoutError as exc:  # first: aiohttp's timeouts are ClientErrors and OSErrors too
            services.metrics.upstream_errors.labels("timeout").inc()
            raise _timed_out(exc) from exc
        except (aiohttp.ClientError, OSError) as exc:  # refused, reset, not HTTP
            services.metrics.upstream_errors.labels("connect").inc()
            raise UpstreamUnavailable("the MCP server cannot be reached") from exc

    async def _stream(
        self, services: Services, upstream: UpstreamResponse, send: Send
    ) -> bool:
        """Send the answer on chunk by chunk; whether it arrived whole."""
        whole = True
        try:
            async for chunk in upstream.chunks():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except (TimeoutError, OSError):  # UpstreamFailed is a ConnectionError
            services.metrics.upstream_errors.labels("stream").inc()
            whole = False
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return whole
