"""The baseline for the overhead benchmark: a bare FastMCP server with nothing of ours.

The same async ``echo`` tool as mcp_server's, served the same way (stateless streamable HTTP at
``/mcp``, uvicorn), with no assertion check, no middleware, no lifespan, no other tools. What
Gatehouse adds to a tool call is measured against this::

    uvicorn --factory loadtests.bare_fastmcp:create_app --port 9000

``/healthz`` is there only so the benchmark can wait for it as it waits for our servers.
"""

from __future__ import annotations

from fastmcp import FastMCP
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp


def create_app() -> ASGIApp:
    mcp = FastMCP("bare")

    @mcp.tool
    async def echo(text: str) -> str:
        """Return `text` unchanged."""
        return text

    @mcp.custom_route("/healthz", methods=["GET"])
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return mcp.http_app(path="/mcp", stateless_http=True)
