"""An unsupported ``MCP-Protocol-Version`` on ``/mcp`` is answered as exactly that.

Both MCP transports (2025-11-25's Streamable HTTP and 2026-07-28) say a server MUST answer
400 Bad Request to a request whose ``MCP-Protocol-Version`` it does not support. mcp_server's
SDK sends every version it does not know down its 2026-07-28 path, which then complains that
``params._meta`` lacks the per-request envelope (-32602): true, but not the reason. So the
gateway answers first, with 2026-07-28's UnsupportedProtocolVersionError (-32022), whose
``data.supported`` lists every version served, handshake and per-request alike: a client of
either era can pick one (the SDK's own client falls back to ``initialize`` when the list holds
a handshake version). A request without the header passes: 2025-11-25 then assumes 2025-03-26.
"""

from __future__ import annotations

import json
from typing import Any

from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import RpcError
from gateway.jsonrpc import parse_message

# What mcp_server serves: the same SDK, installed with the gateway, so the lists cannot differ.
SUPPORTED = (*HANDSHAKE_PROTOCOL_VERSIONS, *MODERN_PROTOCOL_VERSIONS)
UNSUPPORTED_PROTOCOL_VERSION = -32022
_HEADER = b"mcp-protocol-version"
_ID_READ_LIMIT = 64 * 1024  # enough for any message's id; a larger refused body goes unread


def unsupported(scope: Scope) -> str | None:
    """The first ``MCP-Protocol-Version`` value that is not served, or ``None``."""
    versions = (str(value.decode("latin-1")) for key, value in scope["headers"] if key == _HEADER)
    for version in versions:
        if version not in SUPPORTED:
            return version[:64]  # echoed back; a version is ten characters
    return None


def error_body(request_id: Any, requested: str) -> bytes:
    message = (f"Unsupported protocol version {requested!r}: MCP-Protocol-Version must be one "
               f"of {', '.join(SUPPORTED)}")
    return json.dumps({
        "jsonrpc": "2.0",
        "id": request_id,
        "error": {"code": UNSUPPORTED_PROTOCOL_VERSION, "message": message,
                  "data": {"supported": list(SUPPORTED), "requested": requested}},
    }).encode()


async def _request_id(receive: Receive) -> Any:
    """The refused message's id, so the client can match the error to its request."""
    body = b""
    while len(body) <= _ID_READ_LIMIT:
        message = await receive()
        body += message.get("body", b"")
        if message["type"] != "http.request" or not message.get("more_body", False):
            break
    else:
        return None
    try:
        return parse_message(body).id
    except RpcError as exc:
        return exc.request_id


def _is_mcp(path: str) -> bool:
    return path == "/mcp" or path.startswith("/mcp/")


class McpVersionMiddleware:
    """400 with a JSON-RPC -32022 error to a POST on /mcp naming an unsupported version."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        requested = None
        if scope["type"] == "http" and scope["method"] == "POST" and _is_mcp(scope["path"]):
            requested = unsupported(scope)
        if requested is None:
            await self.app(scope, receive, send)
            return
        body = error_body(await _request_id(receive), requested)
        await Response(body, 400, media_type="application/json")(scope, receive, send)
