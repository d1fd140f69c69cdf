"""GitHub grants for end-to-end tool tests: the token store and the GitHub stand-in behind the
session's ``mcp_server`` fixture, and an MCP tool call made as a given user."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from fastmcp import Client
from mcp_types import TextContent
from redis.asyncio import Redis

from oauth.keyring import Keyring
from oauth.store import TokenStore
from oauth.vault import TokenBundle
from sql import create_pool
from tests.support.databases import Database
from tests.support.oidc_provider import OidcProvider
from tests.support.processes import Server
from tests.support.tenants import Who


@dataclass(frozen=True)
class Env:
    store: TokenStore
    pool: asyncpg.Pool
    standin: str
    idp: OidcProvider
    redis: Redis


@asynccontextmanager
async def github_env(
    mcp_server: Server, database: Database, redis_url: str, idp: OidcProvider
) -> AsyncIterator[Env]:
    """The vault of ``mcp_server`` (its own keyring) and its GitHub stand-in's URL."""
    pool = await create_pool(database.app_url)
    redis = Redis.from_url(redis_url)
    keyring = Keyring.parse(mcp_server.env["GATEHOUSE_TOKEN_KEYS"])
    standin = json.loads(mcp_server.env["GATEHOUSE_PROVIDERS"])["github"]["api_base_url"]
    try:
        yield Env(TokenStore(pool, keyring), pool, standin, idp, redis)
    finally:
        await redis.aclose()
        await pool.close()


def env_fixture() -> Any:
    """A module-scoped ``env`` fixture over :func:`github_env`: ``env = env_fixture()``."""
    @pytest.fixture(scope="module")
    async def env(
        mcp_server: Server, database: Database, redis_url: str, idp: OidcProvider
    ) -> AsyncIterator[Env]:
        async with github_env(mcp_server, database, redis_url, idp) as opened:
            yield opened

    return env


async def connect(env: Env, who: Who, *, scopes: str = "repo, read:user",
                  register: bool = True, expires_in: timedelta = timedelta(hours=8)) -> str:
    """Store a GitHub connection for ``who`` and (unless told not to) make the stand-in
    accept its token and refresh token; returns the access token."""
    token, refresh = f"gho_{secrets.token_hex(16)}", f"ghr_{secrets.token_hex(16)}"
    bundle = TokenBundle(token, refresh, datetime.now(UTC) + expires_in,
                         tuple(scopes.split(", ")))
    await env.store.save(who, "github", bundle, account=who.user_id)
    if register:
        httpx.post(env.standin + "/_standin/tokens", json={
            "token": token, "login": who.user_id, "scopes": scopes, "refresh_token": refresh,
        }).raise_for_status()
    return token


def requests_of(env: Env, token: str) -> list[dict[str, Any]]:
    response = httpx.get(env.standin + "/_standin/requests", params={"token": token})
    data: list[dict[str, Any]] = response.json()
    return data


def fail(env: Env, token: str, status: int, count: int) -> None:
    httpx.post(env.standin + "/_standin/fail",
               json={"token": token, "status": status, "count": count}).raise_for_status()


def text(result: Any) -> str:
    content = result.content[0]
    assert isinstance(content, TextContent)
    return content.text


async def call(gateway: Server, env: Env, who: Who, tool: str, **arguments: Any) -> Any:
    token = env.idp.access_token(who.org_id, who.user_id, ["member"])
    async with Client(gateway.url + "/mcp", auth=token) as client:
        return await client.call_tool(tool, arguments, raise_on_error=False)
