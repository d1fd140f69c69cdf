"""Cross-origin access for public, cookie-less documents and endpoints.

Browser-based MCP clients (the MCP Inspector's web UI, say) read the protected-resource and
authorization-server metadata and call token and registration endpoints from their own origin.
None of these take cookies or ambient credentials, so any origin may.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send


def open_to_every_origin(
    endpoint: Callable[[Request], Awaitable[Response]], methods: list[str]
) -> ASGIApp:
    """``endpoint`` answering CORS preflights and carrying ``Access-Control-Allow-Origin: *``;
    route it with ``OPTIONS`` among its methods."""
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = await endpoint(Request(scope, receive))
        await response(scope, receive, send)

    return CORSMiddleware(app, allow_origins=["*"], allow_methods=methods,
                          allow_headers=["Authorization", "Content-Type", "MCP-Protocol-Version"])
