"""A real trace leaves both processes (issue 13 items 1, 6, 7): a gateway and an mcp_server
exporting OTLP/HTTP to a loopback receiver that decodes the protobuf; one ``tools/call`` of a
provider tool, sent with a W3C ``traceparent``, is one trace across the caller, the gateway,
mcp_server and the provider's API, named and attributed by the OpenTelemetry MCP conventions,
and no span carries a token, an assertion, a secret, a tool argument or a connect ticket."""

from __future__ import annotations

import json
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from oauth.keyring import Keyring, generate_entry
from oauth.store import TokenStore
from oauth.vault import TokenBundle
from sql import create_pool
from tests.conftest import InternalKeys
from tests.support.databases import Database
from tests.support.github_standin import RunningStandIn
from tests.support.oidc_provider import OidcProvider
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.support.processes import Server, start_uvicorn
from tests.support.standin import Running
from tests.support.tenants import Who, new_user

MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": "2025-11-25"}
JWT = re.compile(rb"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.")
TICKET = re.compile(r"connect\?ticket=([A-Za-z0-9_-]{20,})")


@dataclass(frozen=True)
class Traced:
    gateway: Server
    mcp_server: Server
    receiver: OtlpReceiver
    standin: str
    store: TokenStore
    pool: asyncpg.Pool
    idp: OidcProvider
    token_keys: str


@pytest.fixture(scope="module")
def stack(
    internal_keys: InternalKeys, work_dir: Path, database: Database, redis_url: str,
    idp: OidcProvider,
) -> Iterator[tuple[Server, Server, OtlpReceiver, str, str]]:
    receiver = OtlpReceiver()
    running = Running(receiver.app)
    github = RunningStandIn()
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": running.url, "OTEL_BSP_SCHEDULE_DELAY": "50",
            "OTEL_TRACES_SAMPLER": "parentbased_always_on"}
    token_keys = generate_entry("trace1")
    providers = {"github": {"client_id": "gatehouse-test", "client_secret": "test-secret",
                            "api_base_url": github.url,
                            "token_endpoint": github.url + "/login/oauth/access_token"}}
    mcp = start_uvicorn("mcp_server.app:create_app", {
        **otel,
        "GATEHOUSE_INTERNAL_PUBLIC_KEY_FILE": str(internal_keys.public),
        "GATEHOUSE_DATABASE_URL": database.app_url, "GATEHOUSE_REDIS_URL": redis_url,
        "GATEHOUSE_TOKEN_KEYS": token_keys, "GATEHOUSE_PUBLIC_URL": "https://gatehouse.test",
        "GATEHOUSE_PROVIDERS": json.dumps(providers),
        "GATEHOUSE_RESILIENCE_NAMESPACE": f"trace-{uuid.uuid4().hex[:8]}",
    }, work_dir, "mcp_server-traced")
    gateway = start_uvicorn("gateway.app:create_app", {
        **otel,
        "GATEHOUSE_DATABASE_URL": database.app_url, "GATEHOUSE_REDIS_URL": redis_url,
        "GATEHOUSE_MCP_SERVER_URL": mcp.url + "/mcp",
        "GATEHOUSE_INTERNAL_KEY_FILE": str(internal_keys.private),
        "GATEHOUSE_ISSUER": idp.issuer, "GATEHOUSE_JWKS_URL": idp.jwks_url,
        "GATEHOUSE_AUDIENCE": idp.audience, "GATEHOUSE_USER_RATE_LIMIT": "100000/minute",
    }, work_dir, "gateway-traced")
    try:
        yield gateway, mcp, receiver, github.url, token_keys
    finally:
        gateway.stop()
        mcp.stop()
        github.stop()
        running.stop()


@pytest.fixture(scope="module")
async def traced(
    stack: tuple[Server, Server, OtlpReceiver, str, str], database: Database, idp: OidcProvider
) -> AsyncIterator[Traced]:
    gateway, mcp, receiver, standin, token_keys = stack
    pool = await create_pool(database.app_url)
    try:
        yield Traced(gateway, mcp, receiver, standin,
                     TokenStore(pool, Keyring.parse(token_keys)), pool, idp, token_keys)
    finally:
        await pool.close()


async def connect(env: Traced, who: Who, expires_in: timedelta = timedelta(hours=8)
                  ) -> tuple[str, str]:
    """A stored GitHub grant for ``who`` that the stand-in accepts: (access, refresh)."""
    token, refresh = f"gho_{secrets.token_hex(16)}", f"ghr_{secrets.token_hex(16)}"
    bundle = TokenBundle(token, refresh, datetime.now(UTC) + expires_in, ("repo", "read:user"))
    await env.store.save(who, "github", bundle, account=who.user_id)
    httpx.post(env.standin + "/_standin/tokens", json={
        "token": token, "login": who.user_id, "scopes": "repo, read:user",
        "refresh_token": refresh,
    }).raise_for_status()
    return token, refresh


def call_tool(env: Traced, bearer: str, tool: str, arguments: dict[str, Any], *,
              request_id: int = 7, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments}}
    return httpx.post(env.gateway.url + "/mcp", json=body, timeout=20, headers={
        **MCP_HEADERS, "Authorization": f"Bearer {bearer}", **(headers or {})})


def answer_of(resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code == 200, resp.text
    if resp.headers["content-type"].startswith("text/event-stream"):
        data = [line[5:] for line in resp.text.splitlines() if line.startswith("data:")]
        return dict(json.loads(data[-1]))
    return dict(resp.json())


def new_traceparent() -> tuple[str, str, str]:
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{parent}-01", trace_id, parent


def one(spans: list[ReceivedSpan], service: str, kind: str, name: str) -> ReceivedSpan:
    found = [s for s in spans if (s.service, s.kind, s.name) == (service, kind, name)]
    assert len(found) == 1, [(s.service, s.kind, s.name) for s in spans]
    return found[0]


def ancestors(span: ReceivedSpan, spans: list[ReceivedSpan]) -> list[str]:
    by_id = {s.span_id: s for s in spans}
    chain: list[str] = []
    while span.parent_span_id in by_id:
        span = by_id[span.parent_span_id]
        chain.append(span.span_id)
    return chain


def complete(trace_id: str, tool: str) -> Any:
    """Both SERVER spans of the call have been exported (each ends after its children)."""
    def check(spans: list[ReceivedSpan]) -> bool:
        servers = {s.service for s in spans if s.trace_id == trace_id and s.kind == "SERVER"
                   and s.name == f"tools/call {tool}"}
        return servers == {"gatehouse-gateway", "gatehouse-mcp-server"}
    return check


async def test_a_provider_tool_call_is_one_trace_across_both_processes(traced: Traced) -> None:
    who = await new_user(traced.pool, "trace-org")
    await connect(traced, who)
    bearer = traced.idp.access_token(who.org_id, who.user_id, ["member"])
    traceparent, trace_id, caller_span = new_traceparent()
    resp = call_tool(traced, bearer, "github_whoami", {},
                     headers={"traceparent": traceparent, "tracestate": "agent=7"})
    assert not answer_of(resp)["result"].get("isError")

    spans = traced.receiver.wait_for(complete(trace_id, "github_whoami"))
    spans = [s for s in spans if s.trace_id == trace_id]
    name = "tools/call github_whoami"
    gw_server = one(spans, "gatehouse-gateway", "SERVER", name)
    gw_client = one(spans, "gatehouse-gateway", "CLIENT", name)
    server = one(spans, "gatehouse-mcp-server", "SERVER", name)
    assert gw_server.parent_span_id == caller_span  # the agent's trace continues into ours
    assert gw_client.parent_span_id == gw_server.span_id
    assert server.parent_span_id == gw_client.span_id
    assert gw_server.trace_state == server.trace_state == "agent=7"

    mcp = {"mcp.method.name": "tools/call", "gen_ai.tool.name": "github_whoami",
           "gen_ai.operation.name": "execute_tool", "jsonrpc.request.id": "7",
           "mcp.protocol.version": "2025-11-25"}
    for span in (gw_server, gw_client, server):
        assert span.attributes.items() >= mcp.items(), span
        assert "error.type" not in span.attributes
    assert gw_server.attributes["client.address"] == "127.0.0.1"
    assert gw_server.attributes["gatehouse.org_id"] == who.org_id
    assert gw_client.attributes["server.address"] == "127.0.0.1"
    assert gw_client.attributes["server.port"] == int(traced.mcp_server.url.rsplit(":", 1)[1])
    assert server.attributes["client.address"] == "127.0.0.1"
    assert server.attributes["gatehouse.org_id"] == who.org_id

    [provider_call] = [s for s in spans if s.service == "gatehouse-mcp-server"
                       and s.kind == "CLIENT" and s.name.startswith("GET")]
    assert server.span_id in ancestors(provider_call, spans)
    urls = {v for k, v in provider_call.attributes.items() if k in ("url.full", "http.url")}
    assert urls == {traced.standin}  # the origin only: paths and queries carry arguments

    names = {(s.service, s.name): s for s in spans}
    for service, child, parent in [
        ("gatehouse-gateway", "verify token", gw_server),
        ("gatehouse-mcp-server", "admission", server),
        ("gatehouse-mcp-server", "vault decrypt", server),
        ("gatehouse-mcp-server", "rls transaction", server),
    ]:
        assert parent.span_id in ancestors(names[(service, child)], spans), child


async def test_errors_are_typed_and_no_span_carries_a_secret(traced: Traced) -> None:
    """A refresh, a tool error with a connect link, a failed authentication and a tool
    argument: every exported span is then scanned for what must never be in one."""
    who = await new_user(traced.pool, "trace-org")
    old_access, old_refresh = await connect(traced, who, expires_in=timedelta(seconds=30))
    bearer = traced.idp.access_token(who.org_id, who.user_id, ["member"])
    assert not answer_of(call_tool(traced, bearer, "github_whoami", {}))["result"].get("isError")
    refreshed = await traced.store.load(who, "github")
    assert refreshed is not None and refreshed.access_token != old_access  # it was refreshed

    stranger = await new_user(traced.pool, "trace-org")  # not connected: a tool error
    traceparent, trace_id, _ = new_traceparent()
    stranger_bearer = traced.idp.access_token(stranger.org_id, stranger.user_id, ["member"])
    answer = answer_of(call_tool(traced, stranger_bearer, "github_whoami", {},
                                 headers={"traceparent": traceparent}))
    assert answer["result"]["isError"]
    ticket = TICKET.search(json.dumps(answer))
    assert ticket is not None

    marker = f"argument-{secrets.token_hex(8)}"
    assert answer_of(call_tool(traced, bearer, "echo", {"text": marker}))
    forged = bearer[:-8] + ("A" * 8 if not bearer.endswith("A" * 8) else "B" * 8)
    assert call_tool(traced, forged, "echo", {"text": "x"}).status_code == 401

    spans = traced.receiver.wait_for(lambda spans: complete(trace_id, "github_whoami")(spans)
                                     and any(s.attributes.get("http.response.status_code")
                                             == 401 for s in spans))
    errored = [s for s in spans if s.trace_id == trace_id and s.name.startswith("tools/call")
               and s.kind in ("SERVER", "CLIENT")]
    assert len(errored) == 3
    for span in errored:
        assert span.attributes.get("error.type") == "tool_error", (
            span.service, span.kind, span.attributes)
        assert span.status_code == 2 and "ticket" not in span.status_message

    secret_values = [bearer, stranger_bearer, forged, old_access, old_refresh,
                     refreshed.access_token, refreshed.refresh_token or "", "test-secret",
                     traced.token_keys.split(":", 1)[1], ticket[1], marker]
    assert all(secret_values)
    for span in spans:
        blob = span.raw
        assert not JWT.search(blob), (span.name, span.attributes)  # bearer tokens, assertions
        assert b"Bearer" not in blob
        for value in secret_values:
            assert value.encode() not in blob, (span.name, value[:12])
        assert "gen_ai.tool.call.arguments" not in span.attributes  # capture is opt-in
