"""Fifty concurrent tool calls on an expired grant cause exactly one refresh at the provider,
across two mcp_server processes (README, "Token vault").

Two real mcp_server processes share PostgreSQL and Redis (and nothing else); each receives 25
``github_whoami`` calls from real MCP clients, authenticated with internal assertions signed
by the test's key (as the gateway would sign them). The GitHub stand-in here counts every
request to its token endpoint and records the bearer token of every API call, and its token
endpoint answers slowly, so the other 49 calls arrive while the one refresh is in flight.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiohttp import web
from fastmcp import Client

from oauth.assertion import AssertionSigner, CallerIdentity
from oauth.keyring import Keyring, generate_entry
from oauth.keys import load_private_key
from oauth.store import TokenStore
from oauth.vault import TokenBundle
from sql import create_pool
from tests.conftest import InternalKeys
from tests.support.databases import Database
from tests.support.github_standin import GitHubStandIn
from tests.support.processes import Server, start_uvicorn
from tests.support.standin import Handler, Running
from tests.support.tenants import Who
from tests.support.tenants import new_user as fresh_user

CALLS_PER_SERVER = 25
REFRESH_DELAY = 0.5  # seconds the token endpoint takes: every other call arrives meanwhile


class CountingStandIn(GitHubStandIn):
    """The GitHub stand-in, also recording each token-endpoint request (before it is judged,
    so a refused second refresh would be counted too) and each API call's bearer token."""

    def __init__(self) -> None:
        super().__init__()
        self.refresh_grants: list[str] = []  # grant_type of every token-endpoint request
        self.api_tokens: list[str] = []  # bearer token of every API request

    @web.middleware
    async def _github_rules(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(("/_standin/", "/login/")):
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            self.api_tokens.append(token if scheme == "Bearer" else "")
        return await super()._github_rules(request, handler)

    async def _refresh(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.refresh_grants.append(str(form.get("grant_type")))
        await asyncio.sleep(REFRESH_DELAY)
        return await super()._refresh(request)


class RunningCountingStandIn(Running):
    """:class:`CountingStandIn` served from a background thread on 127.0.0.1."""

    def __init__(self) -> None:
        self.standin = CountingStandIn()
        super().__init__(self.standin.app)


@dataclass(frozen=True)
class Stack:
    standin: RunningCountingStandIn
    servers: tuple[Server, Server]
    token_keys: str


@pytest.fixture(scope="module")
def stack(
    internal_keys: InternalKeys, work_dir: Path, database: Database, redis_url: str
) -> Iterator[Stack]:
    """A counting stand-in and two mcp_server replicas configured alike (the conftest
    ``mcp_server`` fixture's settings, pointed at this stand-in)."""
    standin = RunningCountingStandIn()
    providers = {"github": {"client_id": "gatehouse-test", "client_secret": "test-secret",
                            "api_base_url": standin.url,
                            "token_endpoint": standin.url + "/login/oauth/access_token"}}
    token_keys = generate_entry("refresh-across")
    env = {
        "GATEHOUSE_INTERNAL_PUBLIC_KEY_FILE": str(internal_keys.public),
        "GATEHOUSE_DATABASE_URL": database.app_url,
        "GATEHOUSE_REDIS_URL": redis_url,
        "GATEHOUSE_TOKEN_KEYS": token_keys,
        "GATEHOUSE_PUBLIC_URL": "https://gatehouse.test",
        "GATEHOUSE_PROVIDERS": json.dumps(providers),
        "GATEHOUSE_RESILIENCE_NAMESPACE": f"refresh-across-{uuid.uuid4().hex[:8]}",
    }
    started: list[Server] = []
    try:
        for name in ("mcp_server_a", "mcp_server_b"):
            started.append(start_uvicorn("mcp_server.app:create_app", env, work_dir, name))
        yield Stack(standin, (started[0], started[1]), token_keys)
    finally:
        for server in started:
            server.stop()
        standin.stop()



@dataclass(frozen=True)
class Vault:
    pool: asyncpg.Pool
    store: TokenStore


@pytest.fixture
async def vault(stack: Stack, database: Database) -> AsyncIterator[Vault]:
    pool = await create_pool(database.app_url)
    try:
        yield Vault(pool, TokenStore(pool, Keyring.parse(stack.token_keys)))
    finally:
        await pool.close()


async def new_user(vault: Vault) -> Who:
    """Provision the user as the gateway does on a first request (the vault needs the row)."""
    return await fresh_user(vault.pool, prefix="refresh")


async def test_fifty_concurrent_calls_on_an_expired_grant_refresh_once_across_two_servers(
    stack: Stack, vault: Vault, internal_keys: InternalKeys
) -> None:
    store = vault.store
    who = await new_user(vault)
    old_token, old_refresh = f"gho_{secrets.token_hex(16)}", f"ghr_{secrets.token_hex(16)}"
    expired = TokenBundle(old_token, old_refresh, datetime.now(UTC) - timedelta(minutes=5),
                          ("read:user",))
    await store.save(who, "github", expired, account=who.user_id)
    # The stand-in still accepts the old access token: a call that skipped the refresh would
    # succeed, so only the recorded bearer tokens can show it did not happen.
    httpx.post(stack.standin.url + "/_standin/tokens", json={
        "token": old_token, "login": who.user_id, "scopes": "read:user",
        "refresh_token": old_refresh,
    }).raise_for_status()

    signer = AssertionSigner(load_private_key(internal_keys.private.read_bytes()))
    grants_before = len(stack.standin.standin.refresh_grants)
    calls_before = len(stack.standin.standin.api_tokens)

    async with AsyncExitStack() as exits:
        clients: list[Client[Any]] = []
        for server in stack.servers:
            for _ in range(CALLS_PER_SERVER):
                assertion = signer.sign(CallerIdentity(who.org_id, who.user_id,
                                                       f"req-{uuid.uuid4().hex}"))
                client: Client[Any] = Client(server.url + "/mcp", auth=assertion, timeout=30)
                clients.append(client)
        async with asyncio.timeout(60):
            # Connect (initialize) first, so the 50 tool calls start together.
            for client in clients:
                await exits.enter_async_context(client)
            results = await asyncio.gather(*(
                client.call_tool("github_whoami", {}, raise_on_error=False)
                for client in clients
            ))

    standin = stack.standin.standin
    assert standin.refresh_grants[grants_before:] == ["refresh_token"]  # exactly one refresh
    failures = [str(r.content) for r in results if r.is_error]
    assert failures == []
    assert [(r.structured_content or {}).get("login") for r in results] == [who.user_id] * 50

    stored = await store.load_current(who, "github")
    assert stored is not None and not stored.needs_reconnect
    new_token = stored.bundle.access_token
    assert new_token != old_token and new_token.startswith("ghu_")
    assert stored.bundle.refresh_token != old_refresh
    assert not stored.bundle.expires_within(3600)
    # Every API call reached GitHub with the NEW token, one per tool call.
    assert Counter(standin.api_tokens[calls_before:]) == Counter({new_token: 50})
