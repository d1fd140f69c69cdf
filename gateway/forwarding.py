"""Forwarding MCP traffic to mcp_server over one pooled keep-alive HTTP client.

The caller's ``Authorization`` header is replaced by an internal assertion and never leaves the
gateway; only MCP's own headers are carried, both ways. Response bodies (JSON or SSE) are sent
on chunk by chunk as they arrive, never buffered. Request bodies are capped and checked for
JSON-RPC shape first so malformed input gets a clear JSON-RPC error, not an upstream surprise.
Protocol 2026-07-28 routes on ``Mcp-Method``/``Mcp-Name``/``Mcp-Param-*`` headers and 2025-11-25
on ``Mcp-Session-Id``; both kinds are carried, so both protocol versions pass through unchanged.
"""

from __future__ import annotations

import aiohttp
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.auth import principal_of
from gateway.errors import BadRequest, UpstreamUnavailable
from gateway.jsonrpc import RpcError, RpcMessage, parse_message
from gateway.permissions import require
from gateway.services import Services, services_of
from oauth.assertion import CallerIdentity

REQUEST_HEADERS = frozenset({
    b"accept", b"content-type", b"mcp-protocol-version", b"mcp-session-id", b"mcp-method",
    b"mcp-name", b"last-event-id",
})
RESPONSE_HEADERS = frozenset({
    "content-type", "content-length", "cache-control", "mcp-session-id", "mcp-protocol-version",
    "www-authenticate", "allow",
})
_JSON_TYPES = ("application/json",)


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
    for key, value in scope["headers"]:
        if key == b"content-type":
            return str(value.decode("latin-1").split(";")[0].strip().lower())
    return ""


class McpForwarder:
    """The ASGI endpoint behind ``/mcp``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        services = services_of(scope)
        if scope["method"] not in ("POST", "GET", "DELETE"):
            raise BadRequest("use POST, GET or DELETE", status=405, code="method_not_allowed")
        body = b""
        if scope["method"] == "POST":
            if _content_type(scope) not in _JSON_TYPES:
                raise BadRequest(
                    "MCP messages must be sent as application/json",
                    status=415, code="unsupported_media_type",
                )
            body = await read_body(receive, services.settings.max_body_bytes)
            try:
                message = parse_message(body)
            except RpcError as exc:
                await Response(exc.body(), 400, media_type="application/json")(
                    scope, receive, send
                )
                return
            self._authorize(scope, message)
            services.metrics.mcp_method(message.method or "response")
        await self._forward(services, scope, body, send)

    def _authorize(self, scope: Scope, message: RpcMessage) -> None:
        if message.method == "tools/call":
            require(principal_of(scope), "tools:call")

    def _headers(self, services: Services, scope: Scope) -> dict[str, str]:
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
            traceparent=state["traceparent"],
        )
        headers["authorization"] = "Bearer " + services.signer.sign(caller)
        headers["x-request-id"] = state["request_id"]
        headers["traceparent"] = state["traceparent"]
        return headers

    async def _forward(self, services: Services, scope: Scope, body: bytes, send: Send) -> None:
        try:
            upstream = await services.http.request(
                scope["method"],
                services.settings.mcp_server_url,
                data=body or None,
                headers=self._headers(services, scope),
                allow_redirects=False,
            )
        except (aiohttp.ClientError, OSError) as exc:
            services.metrics.upstream_errors.labels("connect").inc()
            raise UpstreamUnavailable("the MCP server cannot be reached") from exc
        except TimeoutError as exc:
            services.metrics.upstream_errors.labels("timeout").inc()
            raise UpstreamUnavailable(
                "the MCP server did not answer in time", status=504, code="upstream_timeout"
            ) from exc
        async with upstream:
            await send({
                "type": "http.response.start",
                "status": upstream.status,
                "headers": [
                    (k.lower().encode("latin-1"), v.encode("latin-1"))
                    for k, v in upstream.headers.items()
                    if k.lower() in RESPONSE_HEADERS
                ],
            })
            await self._stream(services, upstream, send)

    async def _stream(
        self, services: Services, upstream: aiohttp.ClientResponse, send: Send
    ) -> None:
        try:
            async for chunk in upstream.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except (TimeoutError, aiohttp.ClientError):
            services.metrics.upstream_errors.labels("stream").inc()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
