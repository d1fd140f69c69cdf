"""The runner's grant service: connects a simulated user's GitHub account on request.

A real connection comes from the user's browser at the provider, which a load test cannot
drive; what it leaves behind is a row in the token vault. This service writes that row the way
mcp_server's connect flow does (:class:`oauth.store.TokenStore`, under row-level security, for
a provisioned principal), from a thread of the runner, so Locust's users need no database:

    POST /grants {"org", "user", "kind"}   204 once connected

``kind`` ``tool``: the loopback provider's one access token (``github_whoami`` works);
``disconnect``: a fresh token registered with the GitHub stand-in, which the disconnect then
revokes there.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp
from aiohttp import web

from oauth.keyring import Keyring
from oauth.store import TokenStore
from oauth.vault import TokenBundle
from sql import QUERIES, create_pool, rls_transaction
from tests.support.processes import free_port

SCOPES = ("repo", "read:user")


@dataclass(frozen=True)
class Tenant:
    org_id: str
    user_id: str


@dataclass(frozen=True)
class GrantConfig:
    database_url: str
    token_keys: str
    loopback_token: str
    standin_url: str


class GrantService:
    """An aiohttp server on its own event loop in a daemon thread."""

    def __init__(self, config: GrantConfig) -> None:
        self._config = config
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="grant-service")
        self._provisioned: set[Tenant] = set()
        self.url = ""

    def start(self) -> str:
        self._thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self._open(), self._loop).result(30)
        return self.url

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    async def _open(self) -> str:
        self._pool = await create_pool(self._config.database_url, min_size=1, max_size=4)
        self._store = TokenStore(self._pool, Keyring.parse(self._config.token_keys))
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        app = web.Application()
        app.router.add_post("/grants", self._grant)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        return f"http://127.0.0.1:{port}"

    async def _close(self) -> None:
        await self._runner.cleanup()
        await self._http.close()
        await self._pool.close()

    async def _grant(self, request: web.Request) -> web.Response:
        asked = await request.json()
        tenant = Tenant(str(asked["org"]), str(asked["user"]))
        if asked.get("kind") == "disconnect":
            token = f"gho_{secrets.token_hex(16)}"
            await self._register_at_standin(token, tenant.user_id)
        else:
            token = self._config.loopback_token
        await self._provision(tenant)
        bundle = TokenBundle(token, None, datetime.now(UTC) + timedelta(days=1), SCOPES)
        await self._store.save(tenant, "github", bundle, account=tenant.user_id)
        return web.Response(status=204)

    async def _register_at_standin(self, token: str, login: str) -> None:
        async with self._http.post(self._config.standin_url + "/_standin/tokens", json={
                "token": token, "login": login, "scopes": ", ".join(SCOPES)}) as answer:
            answer.raise_for_status()

    async def _provision(self, tenant: Tenant) -> None:
        if tenant in self._provisioned:
            return
        async with rls_transaction(self._pool, tenant) as conn:
            await conn.fetchval(QUERIES["provision_principal"], tenant.org_id, tenant.user_id,
                                ["member"])
        self._provisioned.add(tenant)
