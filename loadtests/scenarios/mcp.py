"""MCP over HTTP as the scenarios speak it, on both protocol versions Gatehouse serves.

* 2025-11-25: ``initialize`` first (then ``notifications/initialized``, answered 202); every
  later request names the version in ``MCP-Protocol-Version``; answers come as an SSE stream
  whose ``data:`` line carries the JSON-RPC response.
* 2026-07-28: no handshake (``server/discover`` instead); every request carries the version and
  client capabilities in ``params._meta`` and names its method (and tool) in ``Mcp-Method`` /
  ``Mcp-Name``; answers are plain JSON.

A request counts as a failure unless it answers 200 with a JSON-RPC result (for a tool call,
one that is not ``isError``) and the caller's ``check`` finds what it expects.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from locust.clients import ResponseContextManager

from loadtests.scenarios.common import GatehouseUser, expect_status

LEGACY = "2025-11-25"
CURRENT = "2026-07-28"
VERSIONS = (LEGACY, CURRENT)
META = {"io.modelcontextprotocol/protocolVersion": CURRENT,
        "io.modelcontextprotocol/clientCapabilities": {}}
INITIALIZE = {"protocolVersion": LEGACY, "capabilities": {},
              "clientInfo": {"name": "gatehouse-locust", "version": "1"}}

Check = Callable[[dict[str, Any]], str | None]  # a result -> why it is wrong, or None


def headers(version: str, method: str, tool: str | None = None) -> dict[str, str]:
    sent = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if method != "initialize":
        sent["MCP-Protocol-Version"] = version
    if version == CURRENT:
        sent["Mcp-Method"] = method
        if tool is not None:
            sent["Mcp-Name"] = tool
    return sent


def body(version: str, method: str, params: dict[str, Any] | None = None,
         request_id: int | None = 1) -> dict[str, Any]:
    params = dict(params or {})
    if version == CURRENT:
        params["_meta"] = META
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params:
        message["params"] = params
    if request_id is not None:
        message["id"] = request_id
    return message


def answer_of(text: str, content_type: str) -> dict[str, Any]:
    """The JSON-RPC response in a JSON body or in an SSE stream (its last ``data:`` line)."""
    if content_type.startswith("text/event-stream"):
        lines = [line[5:] for line in text.splitlines() if line.startswith("data:")]
        text = lines[-1] if lines else ""
    answer = json.loads(text)
    if not isinstance(answer, dict):
        raise ValueError("not a JSON-RPC response")
    return answer


def _verdict(response: ResponseContextManager, check: Check | None) -> str | None:
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    try:  # SSE is UTF-8 by definition; requests would read text/* without charset as Latin-1
        text = response.content.decode()
        answer = answer_of(text, response.headers.get("content-type", ""))
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError alike
        return f"unreadable answer ({exc}): {response.text[:200]}"
    result = answer.get("result")
    if not isinstance(result, dict):
        return f"no result: {json.dumps(answer)[:200]}"
    if result.get("isError"):
        return f"tool error: {json.dumps(result)[:200]}"
    return check(result) if check is not None else None


def rpc(user: GatehouseUser, label: str, version: str, method: str,
        params: dict[str, Any] | None = None, *, tool: str | None = None,
        check: Check | None = None, path: str = "/mcp") -> None:
    """One timed JSON-RPC request, named ``<scenario>: <label> <version>``."""
    with user.client.post(
        path, json=body(version, method, params), catch_response=True,
        headers={**user.bearer(), **headers(version, method, tool)},
        name=f"{user.scenario}: {label} {version}",
    ) as response:
        why = _verdict(response, check)
        if why is None:
            response.success()
        else:
            response.failure(why)


def initialized(user: GatehouseUser) -> None:
    """The 2025-11-25 handshake's closing notification: 202, no body."""
    with user.client.post(
        "/mcp", json=body(LEGACY, "notifications/initialized", request_id=None),
        headers={**user.bearer(), **headers(LEGACY, "notifications/initialized")},
        catch_response=True, name=f"{user.scenario}: notifications/initialized {LEGACY}",
    ) as response:
        expect_status(response, 202)


def call_tool(user: GatehouseUser, version: str, tool: str, arguments: dict[str, Any],
              check: Check, *, path: str = "/mcp") -> None:
    rpc(user, tool, version, "tools/call", {"name": tool, "arguments": arguments},
        tool=tool, check=check, path=path)


def structured(result: dict[str, Any]) -> dict[str, Any]:
    content = result.get("structuredContent")
    return content if isinstance(content, dict) else {}
