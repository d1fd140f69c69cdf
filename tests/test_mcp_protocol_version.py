"""An unsupported ``MCP-Protocol-Version`` is answered "unsupported protocol version" (issue 12
item 6): HTTP 400 as both transports require, with 2026-07-28's -32022 error naming every
version served, instead of the SDK's misleading -32602 about ``params._meta``."""

from __future__ import annotations

from typing import Any

import httpx
import mcp_types
import pytest

from tests.support.processes import Server

LIST_TOOLS = {"jsonrpc": "2.0", "id": 7, "method": "tools/list"}
SERVED = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
MODERN = "2026-07-28"


def post(gateway: Server, token: str | None, version: str | None, body: Any = LIST_TOOLS,
         path: str = "/mcp") -> httpx.Response:
    headers = {"Accept": "application/json, text/event-stream"}
    if version is not None:
        headers["MCP-Protocol-Version"] = version
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(gateway.url + path, json=body, headers=headers, timeout=10)


def assert_unsupported(resp: httpx.Response, requested: str, request_id: Any) -> None:
    assert resp.status_code == 400, resp.text
    assert resp.headers["content-type"] == "application/json"
    answer = resp.json()
    assert (answer["jsonrpc"], answer["id"]) == ("2.0", request_id)
    error = answer["error"]
    assert error["code"] == mcp_types.jsonrpc.UNSUPPORTED_PROTOCOL_VERSION == -32022
    assert error["message"].startswith("Unsupported protocol version")
    assert "_meta" not in error["message"]
    data = mcp_types.UnsupportedProtocolVersionErrorData.model_validate(error["data"])
    assert data.requested == requested
    assert {*SERVED, MODERN} <= set(data.supported)
    assert all(version in error["message"] for version in data.supported)


@pytest.mark.parametrize("version", ["1999-01-01", "2099-01-01", "not-a-version", ""])
def test_an_unsupported_version_is_400_naming_the_supported_ones(
    gateway: Server, alice_token: str, version: str
) -> None:
    assert_unsupported(post(gateway, alice_token, version), version, 7)


def test_a_session_endpoint_and_a_notification_are_answered_alike(
    gateway: Server, alice_token: str
) -> None:
    session = "00000000-0000-0000-0000-000000000000"  # never looked up: the version is first
    assert_unsupported(post(gateway, alice_token, "1999-01-01", path=f"/mcp/{session}"),
                       "1999-01-01", 7)
    notification = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert_unsupported(post(gateway, alice_token, "1999-01-01", notification), "1999-01-01",
                       None)


@pytest.mark.parametrize("version", [*SERVED, None])
def test_every_served_version_and_none_pass(
    gateway: Server, alice_token: str, version: str | None
) -> None:
    resp = post(gateway, alice_token, version)
    assert resp.status_code == 200, resp.text
    assert '"tools"' in resp.text


def test_the_modern_version_passes_with_its_envelope(gateway: Server, alice_token: str) -> None:
    body = {**LIST_TOOLS, "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {}}}}
    resp = httpx.post(gateway.url + "/mcp", json=body, timeout=10, headers={
        "Authorization": f"Bearer {alice_token}", "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "tools/list", "Accept": "application/json, text/event-stream"})
    assert resp.status_code == 200, resp.text
    assert '"tools"' in resp.text


def test_authentication_comes_first(gateway: Server) -> None:
    resp = post(gateway, None, "1999-01-01")
    assert resp.status_code == 401
    assert resp.headers["content-type"] == "application/problem+json"
