"""Origin on /mcp (MCP 2025-11-25 transport: a present, invalid Origin is answered 403).

Against a real gateway whose public URL is its loopback address and which also allows
https://app.example.com through GATEHOUSE_ALLOWED_ORIGINS.
"""

from __future__ import annotations

import json

import httpx
import pytest

from gateway.origin import allowed_origins, origin_of
from tests.conftest import GatewayFactory
from tests.support.processes import Server

EXTRA = "https://app.example.com"
INITIALIZE = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {},
               "clientInfo": {"name": "origin-test", "version": "1"}},
}


@pytest.fixture(scope="module")
def gateway_with_origins(start_gateway: GatewayFactory) -> Server:
    return start_gateway(allowed_origins=json.dumps([EXTRA]))


def initialize(server: Server, token: str | None, **headers: str) -> httpx.Response:
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(server.url + "/mcp", json=INITIALIZE, timeout=10, headers={
        "Accept": "application/json, text/event-stream", **headers})


@pytest.mark.parametrize("origin", [
    "http://evil.example",
    "null",  # sandboxed iframes and file:// pages
    "https://app.example.com.evil.example",
    "http://app.example.com",  # right host, wrong scheme
    "https://app.example.com:8443",  # right host, wrong port
])
def test_a_foreign_origin_is_refused_with_a_problem(
    gateway_with_origins: Server, alice_token: str, origin: str
) -> None:
    response = initialize(gateway_with_origins, alice_token, Origin=origin)
    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "origin_not_allowed"
    assert response.headers["x-request-id"] == response.json()["request_id"]


def test_the_conformance_suites_rebinding_request_is_refused_before_authentication(
    gateway_with_origins: Server,
) -> None:
    """What a DNS-rebinding page sends: its own Host and Origin, and no token."""
    response = initialize(gateway_with_origins, None, Origin="http://evil.example.com",
                          Host="evil.example.com")
    assert response.status_code == 403
    assert response.json()["code"] == "origin_not_allowed"


def test_a_session_path_is_covered_too(gateway_with_origins: Server, alice_token: str) -> None:
    response = httpx.delete(gateway_with_origins.url + "/mcp/some-session", headers={
        "Authorization": f"Bearer {alice_token}", "Origin": "http://evil.example"})
    assert response.status_code == 403


def test_a_second_origin_header_cannot_smuggle_a_foreign_one(
    gateway_with_origins: Server, alice_token: str
) -> None:
    response = httpx.post(
        gateway_with_origins.url + "/mcp", content=json.dumps(INITIALIZE),
        headers=[("Authorization", f"Bearer {alice_token}"), ("Content-Type", "application/json"),
                 ("Accept", "application/json, text/event-stream"),
                 ("Origin", gateway_with_origins.url), ("Origin", "http://evil.example")],
    )
    assert response.status_code == 403


@pytest.mark.parametrize("origin", [None, "public", EXTRA, "HTTPS://App.Example.com:443"])
def test_no_origin_the_public_origin_and_configured_origins_pass(
    gateway_with_origins: Server, alice_token: str, origin: str | None
) -> None:
    headers = {}
    if origin is not None:
        headers["Origin"] = gateway_with_origins.url if origin == "public" else origin
    response = initialize(gateway_with_origins, alice_token, **headers)
    assert response.status_code == 200, response.text
    assert "protocolVersion" in response.text


def test_other_endpoints_are_not_origin_checked(
    gateway_with_origins: Server, alice_token: str
) -> None:
    response = httpx.get(gateway_with_origins.url + "/healthz",
                         headers={"Origin": "http://evil.example"})
    assert response.status_code == 200


def test_origins_are_compared_in_canonical_form() -> None:
    assert origin_of("HTTPS://Example.COM:443") == "https://example.com"
    assert origin_of("http://127.0.0.1:8000/gatehouse/") == "http://127.0.0.1:8000"
    assert origin_of("http://[::1]:80") == "http://[::1]"
    for not_an_origin in ("null", "", "ftp://example.com", "http://x:99999", "http://"):
        assert origin_of(not_an_origin) is None
    for header in ("http://a.example/", "http://u@a.example", "http://a.example?x"):
        assert origin_of(header, strict=True) is None


def test_a_misconfigured_origin_stops_start_up() -> None:
    assert allowed_origins("http://127.0.0.1:8000", ["https://a.example"]) == {
        "http://127.0.0.1:8000", "https://a.example"}
    with pytest.raises(ValueError, match="not an http\\(s\\) origin"):
        allowed_origins("http://127.0.0.1:8000", ["app.example.com"])
