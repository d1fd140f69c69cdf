"""The gateway over HTTP: authentication answers, bad input, limits, operational endpoints."""

from __future__ import annotations

import asyncio
import json
import select
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx
import jwt
import pytest

from tests.support.oidc_provider import OidcProvider
from tests.support.processes import Server, free_port

MCP_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": "2025-11-25",
}
LIST_TOOLS = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}


def post_mcp(
    server: Server, token: str | None, body: Any = LIST_TOOLS, **kw: Any
) -> httpx.Response:
    headers = {**MCP_HEADERS, **kw.pop("headers", {})}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(server.url + "/mcp", content=content, headers=headers, timeout=10, **kw)


def assert_problem(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = resp.json()
    assert (problem["status"], problem["code"]) == (status, code)
    assert problem["type"].endswith(code) and problem["title"] and problem["detail"]
    assert "Traceback" not in resp.text
    return problem


def assert_401(resp: httpx.Response, server: Server, code: str = "invalid_token") -> None:
    assert_problem(resp, 401, code)
    challenge = resp.headers["www-authenticate"]
    metadata = f'resource_metadata="{server.url}/.well-known/oauth-protected-resource/mcp"'
    assert challenge.startswith("Bearer ") and metadata in challenge


# --- authentication -------------------------------------------------------------------------


def test_genuine_idp_access_token_is_accepted(gateway: Server, alice_token: str) -> None:
    resp = post_mcp(gateway, alice_token)
    assert resp.status_code == 200
    assert "echo" in resp.text


def test_missing_token_gets_a_discoverable_401(gateway: Server) -> None:
    resp = post_mcp(gateway, None)
    assert_401(resp, gateway, "missing_token")
    assert "error=" not in resp.headers["www-authenticate"]  # RFC 6750: no error without a token


@pytest.mark.parametrize("scheme", ["Basic dXNlcjpwYXNz", "Bearer", "Token abc", "bearer"])
def test_malformed_authorization_is_401(gateway: Server, scheme: str) -> None:
    resp = httpx.post(gateway.url + "/mcp", json=LIST_TOOLS,
                      headers={**MCP_HEADERS, "Authorization": scheme})
    assert resp.status_code == 401


def test_id_token_is_not_an_access_token(gateway: Server, idp: OidcProvider) -> None:
    resp = post_mcp(gateway, idp.id_token("acme", "alice"))
    assert_401(resp, gateway)
    assert 'error="invalid_token"' in resp.headers["www-authenticate"]


def forge(idp: OidcProvider, **overrides: Any) -> str:
    now = int(time.time())
    claims = {"iss": idp.issuer, "aud": idp.audience, "sub": "alice", "org_id": "acme",
              "iat": now, "exp": now + 300, **overrides}
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, idp.private_key, algorithm="RS256",
                      headers={"kid": idp.kid, "typ": "at+jwt"})


def test_token_signed_with_the_idp_key_and_our_claims_is_accepted(
    gateway: Server, idp: OidcProvider
) -> None:
    assert post_mcp(gateway, forge(idp)).status_code == 200


@pytest.mark.parametrize(
    "overrides",
    [{"exp": int(time.time()) - 3600}, {"iss": "http://evil.example"}, {"aud": "other"},
     {"org_id": None}, {"org_id": ""}, {"sub": 42}],
)
def test_bad_claims_are_401_over_http(
    gateway: Server, idp: OidcProvider, overrides: dict[str, Any]
) -> None:
    assert_401(post_mcp(gateway, forge(idp, **overrides)), gateway)


def test_alg_none_over_http_is_401(gateway: Server) -> None:
    token = jwt.encode({"sub": "alice", "org_id": "acme"}, None, algorithm="none")  # type: ignore[arg-type]
    assert_401(post_mcp(gateway, token), gateway)


def test_oversized_token_is_401(gateway: Server) -> None:
    assert_401(post_mcp(gateway, "a" * 9000), gateway)


def test_viewer_cannot_call_tools_but_can_list_them(gateway: Server, idp: OidcProvider) -> None:
    token = idp.access_token("acme", "victor", ["viewer"])
    assert post_mcp(gateway, token).status_code == 200
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "x"}}}
    resp = post_mcp(gateway, token, call)
    problem = assert_problem(resp, 403, "insufficient_scope")
    assert "tools:call" in problem["detail"]
    assert 'error="insufficient_scope"' in resp.headers["www-authenticate"]


def test_callers_token_never_reaches_mcp_server(
    gateway: Server, mcp_server: Server, alice_token: str
) -> None:
    call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "x"}}}
    assert post_mcp(gateway, alice_token, call).status_code == 200
    # mcp_server accepts only assertions; the user's token alone is refused there.
    direct = httpx.post(mcp_server.url + "/mcp", json=call,
                        headers={**MCP_HEADERS, "Authorization": f"Bearer {alice_token}"})
    assert direct.status_code == 401
    assert alice_token not in gateway.log_text() and alice_token not in mcp_server.log_text()


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code"),
    [(b"{not json", -32700), (b"\xff\xfe", -32700), (b"[]", -32600), (b'"text"', -32600),
     (b'{"jsonrpc": "1.0", "id": 1, "method": "ping"}', -32600),
     (b'{"jsonrpc": "2.0", "id": 1, "method": 7}', -32600),
     (b'{"jsonrpc": "2.0", "id": {"a": 1}, "method": "ping"}', -32600),
     (b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": [1]}', -32600)],
)
def test_malformed_json_rpc_gets_a_json_rpc_error(
    gateway: Server, alice_token: str, body: bytes, code: int
) -> None:
    resp = post_mcp(gateway, alice_token, body)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == code
    assert resp.json()["jsonrpc"] == "2.0"


def test_unknown_method_gets_method_not_found(gateway: Server, alice_token: str) -> None:
    resp = post_mcp(gateway, alice_token, {"jsonrpc": "2.0", "id": 9, "method": "no/such"})
    assert resp.status_code == 200
    assert '"code":-32601' in resp.text.replace(" ", "")


def test_body_over_the_cap_is_413(gateway: Server, alice_token: str) -> None:
    huge = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "x" * 1_100_000}}}
    assert_problem(post_mcp(gateway, alice_token, huge), 413, "payload_too_large")


def test_wrong_content_type_is_415(gateway: Server, alice_token: str) -> None:
    resp = post_mcp(gateway, alice_token, headers={"Content-Type": "text/plain"})
    assert_problem(resp, 415, "unsupported_media_type")


def test_unknown_path_is_a_problem_document(gateway: Server) -> None:
    assert_problem(httpx.get(gateway.url + "/nope"), 404, "not_found")


def test_unreachable_mcp_server_is_a_quick_502(
    start_gateway: Any, alice_token: str
) -> None:
    orphan = start_gateway(mcp_server_url=f"http://127.0.0.1:{free_port()}/mcp")
    started = time.perf_counter()
    resp = post_mcp(orphan, alice_token)
    assert time.perf_counter() - started < 3
    assert_problem(resp, 502, "upstream_unavailable")
    assert "retry-after" not in resp.headers


@contextmanager
def full_accept_queue() -> Iterator[int]:
    """A port whose listener never accepts and whose accept queue is full: Linux drops further
    SYNs, so a connect there is neither made nor refused; it times out (an overloaded server)."""
    with socket.socket() as listener, ExitStack() as held:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = int(listener.getsockname()[1])
        for _ in range(8):  # the queue takes one connection with backlog 0; a few spare tries
            client = held.enter_context(socket.socket())
            client.setblocking(False)
            client.connect_ex(("127.0.0.1", port))
            if not select.select([], [client], [], 0.3)[1]:
                yield port  # this one stays pending: the queue is full
                return
        raise AssertionError("the accept queue never filled")


def test_mcp_server_not_accepting_in_time_is_504_with_retry_after(
    start_gateway: Any, alice_token: str
) -> None:
    """aiohttp's connect timeout is a ClientError and an OSError too; it was answered as a 502
    "cannot be reached". It is a timeout, and the request never left: 504, safe to retry."""
    with full_accept_queue() as port:
        busy = start_gateway(mcp_server_url=f"http://127.0.0.1:{port}/mcp")
        started = time.perf_counter()
        resp = post_mcp(busy, alice_token)
        assert time.perf_counter() - started < 5  # the 2 s connect bound, not a hang
    assert_problem(resp, 504, "upstream_timeout")
    assert resp.headers["retry-after"] == "1"


def test_mcp_server_not_answering_in_time_is_504(start_gateway: Any, alice_token: str) -> None:
    with socket.socket() as silent:  # accepts (the kernel does) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        mute = start_gateway(mcp_server_url=f"http://127.0.0.1:{port}/mcp",
                             upstream_timeout_seconds="0.5")
        resp = post_mcp(mute, alice_token)
    problem = assert_problem(resp, 504, "upstream_timeout")
    assert "retry-after" not in resp.headers  # it may have acted on the request
    assert "in time" in problem["detail"]


# --- rate limit ------------------------------------------------------------------------------


def test_per_user_limit_answers_429_with_retry_after(
    start_gateway: Any, idp: OidcProvider
) -> None:
    limited = start_gateway(user_rate_limit="3/minute")
    org = f"limited-{uuid.uuid4().hex[:8]}"  # a bucket no other run can share
    token = idp.access_token(org, "lara", ["member"])
    statuses = [post_mcp(limited, token).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    resp = post_mcp(limited, token)
    assert_problem(resp, 429, "rate_limited")
    # Sliding window: the rest of this minute, then until 3 hits weigh at most 2 (20 s).
    assert 1 <= int(resp.headers["retry-after"]) <= 80
    assert resp.headers["ratelimit-policy"] == '"user";q=3;w=60'
    assert resp.headers["ratelimit"] == f'"user";r=0;t={resp.headers["retry-after"]}'
    # Another user of the same organisation has a bucket of their own.
    other = idp.access_token(org, "lars", ["member"])
    assert post_mcp(limited, other).status_code == 200


async def test_two_gateways_sharing_redis_admit_exactly_the_limit(
    start_gateway: Any, idp: OidcProvider
) -> None:
    """SECURITY 46: 500 concurrent requests on a limit of 100, spread over two replicas.

    The limit is a sliding window: per hour, so that the seconds a loaded machine takes for the
    burst free no slot (per minute, 10 s would legitimately free 16)."""
    replicas = [start_gateway(user_rate_limit="100/hour") for _ in range(2)]
    token = idp.access_token(f"burst-{uuid.uuid4().hex[:8]}", "bo", ["member"])
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {token}"}
    body = json.dumps(LIST_TOOLS).encode()
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        answers = await asyncio.gather(*(
            client.post(replicas[i % 2].url + "/mcp", content=body, headers=headers)
            for i in range(500)))
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == 100 and statuses.count(429) == 400
    served = {a.request.url.port for a in answers if a.status_code == 200}
    assert len(served) == 2  # both replicas admitted some


# --- operational endpoints ----------------------------------------------------------------------


def test_health_and_readiness(gateway: Server) -> None:
    assert httpx.get(gateway.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(gateway.url + "/readyz")
    assert ready.status_code == 200
    checks = ready.json()["checks"]
    assert set(checks) == {"database", "redis", "mcp_server", "jwks"}
    assert all(check["ok"] for check in checks.values())


def test_readiness_reports_the_failing_dependency(start_gateway: Any) -> None:
    orphan = start_gateway(mcp_server_url=f"http://127.0.0.1:{free_port()}/mcp")
    ready = httpx.get(orphan.url + "/readyz")
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["mcp_server"]["ok"] is False and checks["database"]["ok"] is True


def test_protected_resource_metadata(gateway: Server, idp: OidcProvider) -> None:
    for path in ("/.well-known/oauth-protected-resource",
                 "/.well-known/oauth-protected-resource/mcp"):
        metadata = httpx.get(gateway.url + path).json()
        assert metadata["resource"] == gateway.url + "/mcp"
        assert metadata["authorization_servers"] == [idp.issuer]


def test_metrics_count_requests_without_secrets(gateway: Server, alice_token: str) -> None:
    post_mcp(gateway, alice_token)
    post_mcp(gateway, "garbage")
    text = httpx.get(gateway.url + "/metrics").text
    assert 'gatehouse_http_requests_total{method="POST",route="/mcp",status="200"}' in text
    assert 'gatehouse_auth_failures_total{code="invalid_token"}' in text
    assert 'gatehouse_mcp_requests_total{method="tools/list"}' in text
    assert alice_token not in text and "garbage" not in text


def test_metrics_label_requests_by_route_template(gateway: Server, alice_token: str) -> None:
    auth = {"Authorization": f"Bearer {alice_token}"}
    created = httpx.post(gateway.url + "/v1/sessions", json={}, headers=auth)
    session_id = created.json()["id"]
    assert httpx.get(f"{gateway.url}/v1/sessions/{session_id}", headers=auth).status_code == 200
    text = httpx.get(gateway.url + "/metrics").text
    assert ('gatehouse_http_requests_total{method="GET",route="/v1/sessions/{session_id}",'
            'status="200"}') in text
    assert 'route="/v1/sessions",status="201"' in text
    assert session_id not in text  # never the raw path


@pytest.mark.parametrize(("fail_open", "status"), [("true", 200), ("false", 503)])
def test_redis_down_follows_the_limit_policy_without_hanging(
    start_gateway: Any, alice_token: str, fail_open: str, status: int
) -> None:
    cut_off = start_gateway(
        redis_url=f"redis://127.0.0.1:{free_port()}/0", rate_limit_fail_open=fail_open
    )
    started = time.perf_counter()
    resp = post_mcp(cut_off, alice_token)
    assert time.perf_counter() - started < 3
    assert resp.status_code == status
    if status == 503:
        assert_problem(resp, 503, "rate_limiter_unavailable")
        assert resp.headers["retry-after"] == "1"
    ready = httpx.get(cut_off.url + "/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["redis"]["ok"] is False


def test_resource_metadata_is_readable_from_a_browser_on_any_origin(gateway: Server) -> None:
    """A browser-based MCP client (another origin) must read the RFC 9728 metadata to find the
    authorization server: preflight and GET both carry CORS headers; no cookie is involved."""
    url = gateway.url + "/.well-known/oauth-protected-resource/mcp"
    origin = {"Origin": "http://127.0.0.1:6274"}
    asks = {"Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "mcp-protocol-version"}
    preflight = httpx.options(url, headers={**origin, **asks})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"
    answer = httpx.get(url, headers=origin)
    assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in answer.headers
