"""Metrics of both processes: what a caller sends never becomes a label value, and the series
the dashboard and alerts rely on exist and move (issue 13 item 3)."""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import pytest
from fastmcp import Client
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import known_tools
from tests.support.oidc_provider import OidcProvider
from tests.support.processes import Server

MODERN = "2026-07-28"


def mcp_metrics_url(mcp_server: Server) -> str:
    return mcp_server.env["TEST_METRICS_URL"]


def scrape(url: str) -> str:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [(s.labels, s.value) for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == name]


def value(text: str, name: str, **labels: str) -> float:
    return sum(v for got, v in samples(text, name)
               if all(got.get(k) == want for k, want in labels.items()))


def post(gateway: Server, token: str, method: str, params: dict[str, Any], *,
         path: str = "/mcp", **headers: str) -> httpx.Response:
    return httpx.post(gateway.url + path, json={
        "jsonrpc": "2.0", "id": 1, "method": method, "params": {**params, "_meta": {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {}}},
    }, headers={"Authorization": f"Bearer {token}", "MCP-Protocol-Version": MODERN,
                "Accept": "application/json, text/event-stream", "Mcp-Method": method,
                **headers}, timeout=10)


async def test_no_caller_chosen_string_becomes_a_label(
    gateway: Server, mcp_server: Server, idp: OidcProvider
) -> None:
    marker = "zq" + secrets.token_hex(8)  # found nowhere unless a label carries it
    org, user = f"org{marker}", f"user{marker}"
    token = idp.access_token(org, user, ["member"])
    async with Client(gateway.url + "/mcp", auth=token) as client:
        result = await client.call_tool(f"tool_{marker}", {}, raise_on_error=False)
        assert result.is_error
        assert (await client.call_tool("echo", {"text": marker})).data == marker
        assert (await client.call_tool("github_whoami", {}, raise_on_error=False)).is_error
    post(gateway, token, f"method/{marker}", {})
    post(gateway, token, "tools/call", {"name": f"{marker}x", "arguments": {}},
         **{"Mcp-Name": f"{marker}x"})
    post(gateway, token, "prompts/get", {"name": f"prompt_{marker}"})
    post(gateway, token, "resources/read", {"uri": f"file:///{marker}"})
    post(gateway, token, "tools/list", {}, path=f"/mcp/{marker}")
    httpx.get(f"{gateway.url}/v1/{marker}", headers={"Authorization": f"Bearer {token}"})
    httpx.get(f"{gateway.url}/{marker}")
    httpx.post(gateway.url + "/mcp", headers={"Authorization": f"Bearer x{marker}"}, json={})

    for url in (gateway.url + "/metrics", mcp_metrics_url(mcp_server)):
        text = scrape(url)
        assert marker not in text, url
        assert token not in text

    served = scrape(mcp_metrics_url(mcp_server))
    assert value(served, "mcp_server_operation_duration_seconds_count",
                 mcp_method_name="tools/call", gen_ai_tool_name="other") >= 1
    forwarded = scrape(gateway.url + "/metrics")
    assert value(forwarded, "mcp_client_operation_duration_seconds_count",
                 mcp_method_name="tools/call", gen_ai_tool_name="other") >= 1
    assert value(forwarded, "mcp_client_operation_duration_seconds_count",
                 mcp_method_name="other") >= 1


async def test_tool_outcomes_and_operation_errors_are_counted(
    gateway: Server, mcp_server: Server, idp: OidcProvider
) -> None:
    url = mcp_metrics_url(mcp_server)
    before = scrape(url)
    token = idp.access_token("acme", f"metrics-{secrets.token_hex(4)}", ["member"])
    async with Client(gateway.url + "/mcp", auth=token) as client:
        await client.call_tool("echo", {"text": "hi"})
        await client.call_tool("github_whoami", {}, raise_on_error=False)
    after = scrape(url)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("gatehouse_tool_calls_total", gen_ai_tool_name="echo", outcome="success") == 1
    assert grew("gatehouse_tool_calls_total", gen_ai_tool_name="github_whoami",
                outcome="needs_connect") == 1
    assert grew("mcp_server_operation_duration_seconds_count", mcp_method_name="tools/call",
                gen_ai_tool_name="github_whoami", error_type="tool_error") == 1
    assert grew("mcp_server_operation_duration_seconds_count", mcp_method_name="tools/call",
                gen_ai_tool_name="echo", error_type="") == 1


async def test_gateway_reads_its_dependencies_and_services_at_scrape(gateway: Server) -> None:
    text = scrape(gateway.url + "/metrics")
    for dependency in ("database", "redis", "mcp_server", "jwks"):
        assert value(text, "gatehouse_dependency_ready", dependency=dependency) == 1
    assert value(text, "gatehouse_jwks_fetches_total") >= 1
    assert value(text, "gatehouse_db_pool_max") >= 1
    assert samples(text, "gatehouse_audit_queue_depth")
    assert samples(text, "gatehouse_db_pool_waiting")


async def test_every_tool_mcp_server_offers_is_a_known_gateway_label(
    gateway: Server, alice_token: str
) -> None:
    async with Client(gateway.url + "/mcp", auth=alice_token) as client:
        names = {tool.name for tool in await client.list_tools()}
    assert names and names <= known_tools()


@pytest.mark.parametrize("name", ["github_whoami", "notion_whoami", "slack_post_message"])
def test_known_tools_cover_catalogue_and_curated_tools(name: str) -> None:
    assert name in known_tools()
