"""mcp_server gives the MCP SDK its tools' input schemas by name (mcp_server.lifespan).

Without that lookup the SDK runs the whole tools/list handler on every 2026-07-28 tools/call
that carries arguments, only to check its ``Mcp-Param-*`` headers: about 1 ms of CPU per call.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import mcp_types as mt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastmcp import FastMCP
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools import Tool
from pydantic import Field
from starlette.testclient import TestClient

from mcp_server.app import build_mcp
from mcp_server.auth import AssertionMiddleware
from mcp_server.lifespan import index_tool_schemas
from mcp_server.settings import McpServerSettings
from oauth.assertion import AssertionSigner, AssertionVerifier, CallerIdentity
from oauth.keyring import generate_entry
from tests.support.databases import Database

VERSION = "2026-07-28"


class CountListings(Middleware):
    def __init__(self) -> None:
        self.listings = 0

    async def on_list_tools(
        self,
        context: MiddlewareContext[mt.ListToolsRequest],
        call_next: CallNext[mt.ListToolsRequest, Sequence[Tool]],
    ) -> Sequence[Tool]:
        self.listings += 1
        return await call_next(context)


def call(client: TestClient, tool: str, arguments: dict[str, Any],
         **headers: str) -> tuple[int, Any]:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments, "_meta": {
                "io.modelcontextprotocol/protocolVersion": VERSION,
                "io.modelcontextprotocol/clientCapabilities": {}}}}
    response = client.post("/mcp", content=json.dumps(body), headers={
        "Content-Type": "application/json", "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": VERSION, "Mcp-Method": "tools/call", "Mcp-Name": tool,
        **headers})
    return response.status_code, response.json()


def region_server(*, indexed: bool) -> tuple[FastMCP, CountListings]:
    @asynccontextmanager
    async def lifespan(server: FastMCP) -> AsyncIterator[dict[str, Any]]:
        if indexed:
            await index_tool_schemas(server)
        yield {}

    counter = CountListings()
    server = FastMCP("regions", middleware=[counter], lifespan=lifespan)

    @server.tool
    async def route(region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})]
                    ) -> str:
        return f"routed to {region}"

    return server, counter


def test_argument_calls_on_our_server_list_no_tools(work_dir: Path) -> None:
    key = Ed25519PrivateKey.generate()
    server = build_mcp(McpServerSettings(internal_public_key_file=work_dir / "unused.pub"))
    counter = CountListings()
    server.add_middleware(counter)
    app = AssertionMiddleware(server.http_app(path="/mcp", stateless_http=True),
                              AssertionVerifier(key.public_key()))
    bearer = "Bearer " + AssertionSigner(key).sign(CallerIdentity("acme", "alice", "req-1"))
    with TestClient(app) as client:
        for text in ("one", "two", "three"):
            status, answer = call(client, "echo", {"text": text}, Authorization=bearer)
            assert status == 200 and answer["result"]["content"][0]["text"] == text
    assert counter.listings == 0


def test_without_the_index_every_argument_call_lists_tools() -> None:
    server, counter = region_server(indexed=False)
    with TestClient(server.http_app(path="/mcp", stateless_http=True)) as client:
        for _ in range(3):
            assert call(client, "route", {"region": "eu"}, **{"Mcp-Param-Region": "eu"})[0] == 200
    assert counter.listings == 3  # the cost the index removes


def test_mcp_param_headers_are_still_checked_against_the_schema() -> None:
    server, counter = region_server(indexed=True)
    with TestClient(server.http_app(path="/mcp", stateless_http=True)) as client:
        status, answer = call(client, "route", {"region": "eu"}, **{"Mcp-Param-Region": "eu"})
        assert status == 200 and answer["result"]["content"][0]["text"] == "routed to eu"
        status, answer = call(client, "route", {"region": "eu"}, **{"Mcp-Param-Region": "us"})
        assert status == 400 and "Mcp-Param-Region" in answer["error"]["message"]
        status, _ = call(client, "route", {"region": "eu"})  # the header is missing
        assert status == 400
    assert counter.listings == 0


def test_enabled_providers_tools_are_indexed_and_removed_with_the_lifespan(
    work_dir: Path, database: Database, redis_url: str
) -> None:
    """Provider tools are registered by the lifespan (only enabled providers have tools), so
    the index must be built after them; when the lifespan ends they go again."""
    settings = McpServerSettings(
        internal_public_key_file=work_dir / "unused.pub", database_url=database.app_url,
        redis_url=redis_url, token_keys=generate_entry("index"),  # type: ignore[arg-type]
        providers={"github": {"client_id": "gatehouse-test"}},  # type: ignore[dict-item]
    )
    server = build_mcp(settings)
    with TestClient(server.http_app(path="/mcp", stateless_http=True)):
        lookup = server._mcp_server.get_tool_input_schema
        assert lookup is not None
        schema = lookup("github_search_issues")
        assert schema is not None and "query" in schema["properties"]
        assert lookup("echo") is not None
    after = asyncio.run(server.list_tools(run_middleware=False))
    assert {tool.name for tool in after} == {"echo", "whoami", "count"}
