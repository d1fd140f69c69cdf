"""A tool whose provider the user has not connected answers with a one-time connect link; on
protocol 2025-11-25, to a client that declared URL-mode elicitation, the link is also offered as
URL elicitation (JSON-RPC error -32042). The official ``mcp`` SDK client through the gateway.

mcp_server is stateless: on 2025-11-25 it never sees the ``initialize`` that declared the
client's capabilities, so a client opts in per request with the spec's capability key in
``_meta`` (``io.modelcontextprotocol/clientCapabilities``). 2026-07-28 removed -32042: there the
answer is always the tool error carrying the link.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import httpx2
import pytest
from mcp import Client as SdkClient
from mcp import MCPError, UrlElicitationRequiredError
from mcp.client.streamable_http import streamable_http_client
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    URL_ELICITATION_REQUIRED,
    ElicitRequestParams,
    ElicitResult,
    ErrorData,
    TextContent,
)
from redis.asyncio import Redis

from oauth.connect_links import ConnectGrant, use_connect_ticket
from sql import create_pool
from tests.support.databases import Database
from tests.support.oidc_provider import OidcProvider
from tests.support.processes import Server
from tests.support.tenants import Who
from tests.support.tenants import new_user as fresh_user

LINK = re.compile(r"^https://gatehouse\.test/connect\?ticket=([A-Za-z0-9_-]{43})$")
TEXT_LINK = re.compile(r"https://gatehouse\.test/connect\?ticket=([A-Za-z0-9_-]{43})")
DECLARES_URL: dict[str, Any] = {
    CLIENT_CAPABILITIES_META_KEY: {"elicitation": {"form": {}, "url": {}}}}
DECLARES_FORM_ONLY: dict[str, Any] = {CLIENT_CAPABILITIES_META_KEY: {"elicitation": {"form": {}}}}



@dataclass(frozen=True)
class Env:
    pool: asyncpg.Pool
    redis: Redis
    idp: OidcProvider
    gateway: Server


@pytest.fixture(scope="module")
async def env(
    gateway: Server, database: Database, redis_url: str, idp: OidcProvider
) -> AsyncIterator[Env]:
    pool = await create_pool(database.app_url)
    redis = Redis.from_url(redis_url)
    try:
        yield Env(pool, redis, idp, gateway)
    finally:
        await redis.aclose()
        await pool.close()


async def new_user(env: Env) -> Who:
    return await fresh_user(env.pool, prefix="elicit")


async def never_called(context: Any, params: ElicitRequestParams) -> ElicitResult:
    raise AssertionError("a stateless server sends no elicitation/create")


@asynccontextmanager
async def sdk_client(env: Env, who: Who, mode: str) -> AsyncIterator[SdkClient]:
    """The official SDK client, with an elicitation callback (so it declares form and url
    elicitation in ``initialize`` on 2025-11-25 and in every request's envelope on
    2026-07-28)."""
    token = env.idp.access_token(who.org_id, who.user_id, ["member"])
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30)) as http:
        async with SdkClient(streamable_http_client(env.gateway.url + "/mcp", http_client=http),
                             mode=mode, elicitation_callback=never_called) as client:
            yield client


async def assert_ticket_for(env: Env, who: Who, ticket: str) -> None:
    used = await use_connect_ticket(env.redis, ticket)
    assert used.grant == ConnectGrant(who.org_id, who.user_id, "github")


def text_of(result: Any) -> str:
    content = result.content[0]
    assert isinstance(content, TextContent)
    return content.text


async def test_2025_11_25_client_declaring_url_mode_gets_url_elicitation(env: Env) -> None:
    who = await new_user(env)
    async with sdk_client(env, who, "legacy") as client:
        assert client.protocol_version == "2025-11-25"
        with pytest.raises(MCPError) as raised:
            await client.call_tool("github_whoami", {}, meta=DECLARES_URL)  # type: ignore[arg-type]
    assert raised.value.code == URL_ELICITATION_REQUIRED == -32042
    required = UrlElicitationRequiredError.from_error(raised.value.error)
    [elicitation] = required.elicitations
    assert elicitation.mode == "url"
    assert elicitation.message == "you have not connected GitHub; connect it here"
    assert elicitation.elicitation_id and len(elicitation.elicitation_id) >= 16
    match = LINK.match(elicitation.url)
    assert match is not None, elicitation.url
    await assert_ticket_for(env, who, match.group(1))  # a real, one-time connect link
    assert (await use_connect_ticket(env.redis, match.group(1))).grant is None


async def test_2025_11_25_wire_shape_through_the_gateway(env: Env) -> None:
    """Raw HTTP: the SSE answer carries the -32042 error exactly as the 2025-11-25 schema
    defines it (``data.elicitations[]`` with ``mode``, ``elicitationId``, ``url``,
    ``message``)."""
    who = await new_user(env)
    token = env.idp.access_token(who.org_id, who.user_id, ["member"])
    body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "github_whoami", "arguments": {}, "_meta": DECLARES_URL}}
    headers = {"Authorization": f"Bearer {token}", "MCP-Protocol-Version": "2025-11-25",
               "Accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.post(env.gateway.url + "/mcp", json=body, headers=headers)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    [data] = [line[5:] for line in answer.text.splitlines() if line.startswith("data:")]
    message = json.loads(data)
    assert message["id"] == 7 and "result" not in message
    error = ErrorData.model_validate(message["error"])
    assert error.code == -32042
    [raw] = message["error"]["data"]["elicitations"]
    assert set(raw) == {"mode", "elicitationId", "url", "message"}
    assert raw["mode"] == "url"
    match = LINK.match(raw["url"])
    assert match is not None
    await assert_ticket_for(env, who, match.group(1))


@pytest.mark.parametrize("meta", [None, DECLARES_FORM_ONLY], ids=["undeclared", "form-only"])
async def test_2025_11_25_without_url_mode_declared_gets_the_text_link(
    env: Env, meta: dict[str, Any] | None
) -> None:
    """The SDK client declared url mode in ``initialize``, which a stateless server never
    sees: without the per-request declaration the answer is the plain tool error."""
    who = await new_user(env)
    async with sdk_client(env, who, "legacy") as client:
        result = await client.call_tool("github_whoami", {}, meta=meta)  # type: ignore[arg-type]
    assert result.is_error
    assert text_of(result).startswith("you have not connected GitHub; connect it here: ")
    match = TEXT_LINK.search(text_of(result))
    assert match is not None
    await assert_ticket_for(env, who, match.group(1))


async def test_2026_07_28_always_gets_the_text_link(env: Env) -> None:
    """2026-07-28 has no -32042, even for a client whose envelope declares url mode."""
    who = await new_user(env)
    async with sdk_client(env, who, "2026-07-28") as client:
        assert client.protocol_version == "2026-07-28"
        result = await client.call_tool("github_whoami", {})
        explicit = await client.call_tool("github_whoami", {}, meta=DECLARES_URL)  # type: ignore[arg-type]
    for answer in (result, explicit):
        assert answer.is_error
        assert text_of(answer).startswith("you have not connected GitHub; connect it here: ")
        match = TEXT_LINK.search(text_of(answer))
        assert match is not None
        await assert_ticket_for(env, who, match.group(1))
