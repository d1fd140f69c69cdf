"""What the loopback stand-ins for third-party APIs share (their hosts cannot be reached from
here; each stand-in serves its provider's documented shapes behind the same HTTP code path).

Tests drive a stand-in over HTTP, so it can also run as a process of its own:

    POST /_standin/tokens   {"token", "login", "scopes", "refresh_token"}  accept this token
    POST /_standin/fail     {"token", "status", "count"}  the token's next ``count`` calls fail
    GET  /_standin/requests?token=...                     what that token's calls looked like

Accounts, failures and records are per token, so tests sharing one stand-in do not disturb
each other.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Account:
    login: str
    scopes: str
    fail_status: int = 0
    fail_count: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    issues: int = 0
    refreshes: int = 0

    def scope_set(self, separator: str = ",") -> set[str]:
        return {s.strip() for s in self.scopes.split(separator) if s.strip()}

    def take_failure(self) -> int:
        """The status this call must fail with (0: none)."""
        if self.fail_count <= 0:
            return 0
        self.fail_count -= 1
        return self.fail_status


ACCOUNT = web.RequestKey("account", Account)


class StandIn:
    """Token registry and the ``/_standin`` control routes."""

    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.refresh_tokens: dict[str, Account] = {}

    def control_routes(self) -> list[web.RouteDef]:
        return [
            web.post("/_standin/tokens", self._add_token),
            web.post("/_standin/fail", self._fail),
            web.get("/_standin/requests", self._requests),
        ]

    def bearer_account(self, request: web.Request) -> Account | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return self.accounts.get(token) if scheme == "Bearer" else None

    async def record(self, request: web.Request, account: Account, **extra: Any) -> None:
        account.requests.append({
            "method": request.method, "path": request.path, "query": dict(request.query),
            "accept": request.headers.get("Accept"),
            "content_type": request.headers.get("Content-Type"),
            "json": await request.json() if request.body_exists else None, **extra,
        })

    async def _add_token(self, request: web.Request) -> web.Response:
        body = await request.json()
        account = Account(body["login"], body.get("scopes", "repo"))
        self.accounts[body["token"]] = account
        if body.get("refresh_token"):
            self.refresh_tokens[body["refresh_token"]] = account
        return web.json_response({"ok": True})

    async def _fail(self, request: web.Request) -> web.Response:
        body = await request.json()
        account = self.accounts[body["token"]]
        account.fail_status, account.fail_count = int(body["status"]), int(body["count"])
        return web.json_response({"ok": True})

    async def _requests(self, request: web.Request) -> web.Response:
        account = self.accounts.get(request.query.get("token", ""))
        return web.json_response([] if account is None else account.requests)


class Running:
    """An aiohttp app served from a background thread on 127.0.0.1; ``url`` is its base URL."""

    def __init__(self, app: web.Application) -> None:
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
