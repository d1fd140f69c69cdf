"""Real MCP clients through the gateway, on both protocol versions (FastMCP and the mcp SDK)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
from fastmcp import Client as FastMcpClient
from mcp import Client as SdkClient
from mcp.client.streamable_http import streamable_http_client
from mcp_types import TextContent

from tests.support.processes import Server

MODES = ["legacy", "2026-07-28"]
EXPECTED_VERSION = {"legacy": "2025-11-25", "2026-07-28": "2026-07-28"}


@asynccontextmanager
async def sdk_client(url: str, token: str, mode: str) -> AsyncIterator[SdkClient]:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30)) as http:
        async with SdkClient(streamable_http_client(url, http_client=http), mode=mode) as client:
            yield client


def text_of(result: Any) -> str:
    content = result.content[0]
    assert isinstance(content, TextContent)
    return content.text


def whoami_of(result: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(text_of(result))
    return data


@pytest.mark.parametrize("mode", MODES)
async def test_fastmcp_client_lists_and_calls_tools(
    gateway: Server, alice_token: str, mode: str
) -> None:
    async with FastMcpClient(gateway.url + "/mcp", auth=alice_token, mode=mode) as client:
        assert client.protocol_version == EXPECTED_VERSION[mode]
        names = {tool.name for tool in await client.list_tools()}
        assert {"echo", "whoami"} <= names
        echoed = await client.call_tool("echo", {"text": "héllo through the gateway"})
        assert text_of(echoed) == "héllo through the gateway"
        me = whoami_of(await client.call_tool("whoami", {}))
    assert (me["org_id"], me["user_id"], me["roles"]) == ("acme", "alice", ["member"])
    assert len(me["request_id"]) >= 8


@pytest.mark.parametrize("mode", MODES)
async def test_sdk_client_lists_and_calls_tools(
    gateway: Server, alice_token: str, mode: str
) -> None:
    async with sdk_client(gateway.url + "/mcp", alice_token, mode) as client:
        assert client.protocol_version == EXPECTED_VERSION[mode]
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"echo", "whoami"} <= names
        echoed = await client.call_tool("echo", {"text": "sdk"})
        assert text_of(echoed) == "sdk"
        me = whoami_of(await client.call_tool("whoami", {}))
    assert (me["org_id"], me["user_id"]) == ("acme", "alice")


@pytest.mark.parametrize("mode", MODES)
async def test_streamed_progress_reaches_the_client(
    gateway: Server, alice_token: str, mode: str
) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with sdk_client(gateway.url + "/mcp", alice_token, mode) as client:
        result = await client.call_tool("count", {"to": 5}, progress_callback=on_progress)
    assert text_of(result) == "counted to 5"
    assert seen == [(float(i), 5.0, f"step {i}") for i in range(1, 6)]


async def test_request_id_sent_by_the_caller_reaches_the_tool(
    gateway: Server, alice_token: str
) -> None:
    headers = {"Authorization": f"Bearer {alice_token}", "X-Request-Id": "trace-me-12345"}
    async with httpx2.AsyncClient(headers=headers) as http:
        async with SdkClient(streamable_http_client(gateway.url + "/mcp", http_client=http),
                             mode="2026-07-28") as client:
            me = whoami_of(await client.call_tool("whoami", {}))
    assert me["request_id"] == "trace-me-12345"


async def test_sse_response_is_streamed_through(gateway: Server, alice_token: str) -> None:
    """On 2025-11-25 every answer is an SSE stream; the gateway must pass it through as such."""
    headers = {
        "Authorization": f"Bearer {alice_token}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": "2025-11-25",
    }
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "count", "arguments": {"to": 3}, "_meta": {"progressToken": "p"}}}
    events = []
    async with httpx2.AsyncClient() as http:
        async with http.stream("POST", gateway.url + "/mcp", json=body, headers=headers) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            async for line in resp.aiter_lines():
                if line.startswith("data:"):
                    events.append(json.loads(line[5:]))
    assert [e.get("method") for e in events] == ["notifications/progress"] * 3 + [None]
    assert events[-1]["result"]["content"][0]["text"] == "counted to 3"
