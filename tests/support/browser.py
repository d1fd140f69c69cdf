"""What the connect-flow tests drive: a gateway + mcp_server pair configured with a real OpenID
provider (npm ``oidc-provider``) as an OAuth provider, and browser stand-ins.

The provider is a second ``oidc-provider`` process, separate from the identity provider the
gateway trusts for bearer tokens: here Gatehouse is the *client*. It offers two providers,
``idp`` and ``idp2`` (two client registrations at the same server), so that a code obtained for
one can be replayed on the other's callback. The gateway's port is chosen before anything
starts, because the provider must know the exact redirect URIs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import secrets
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import asyncpg
import httpx
from fastmcp import Client as FastMcpClient
from fastmcp.client.client import CallToolResult
from playwright.async_api import Page

from oauth.connect_links import issue_connect_link
from oauth.keyring import Keyring
from oauth.store import ConnectionInfo, TokenStore
from oauth.vault import TokenBundle
from resilience import create_redis
from tests.support.databases import Database
from tests.support.oidc_provider import OidcProvider
from tests.support.processes import Server, free_port, wait_healthy
from tests.support.tenants import Who

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
CLIENTS = {"idp": ("gatehouse-connect-a", "Test IdP"), "idp2": ("gatehouse-connect-b", "Other IdP")}
CLIENT_SECRET = "connect-client-secret"
SIGNIN_CLIENT = "gatehouse-connect-signin"
T = TypeVar("T")


@dataclass(frozen=True)
class ConnectStack:
    gateway: Server
    mcp_server: Server
    provider: OidcProvider
    database: Database
    redis_url: str
    token_keys: str

    @property
    def public_url(self) -> str:
        return self.gateway.url

    def client_auth(self, provider: str = "idp") -> tuple[str, str]:
        return CLIENTS[provider][0], CLIENT_SECRET

    def new_user(self, idp: OidcProvider, org: str) -> str:
        """A fresh user, provisioned the usual way: a first request with a bearer token."""
        name = "u-" + uuid.uuid4().hex[:10]
        answer = httpx.get(self.public_url + "/v1/sessions",
                           headers={"Authorization": f"Bearer {idp.access_token(org, name)}"})
        assert answer.status_code == 200, answer.text
        return name

    def link(self, org: str, user: str, provider: str = "idp", ttl: int = 600) -> str:
        """A one-time connect link, as a tool answering "not connected" would issue it."""
        async def issue() -> str:
            redis = create_redis(self.redis_url)
            try:
                return await issue_connect_link(redis, self.public_url, org, user, provider, ttl)
            finally:
                await redis.aclose()

        return _run(issue())

    def _with_store(self, use: Callable[[TokenStore], Awaitable[T]]) -> T:
        async def run() -> T:
            pool = await asyncpg.create_pool(self.database.app_url, min_size=1, max_size=1)
            try:
                return await use(TokenStore(pool, Keyring.parse(self.token_keys)))
            finally:
                await pool.close()

        return _run(run())

    def connection(self, org: str, user: str, provider: str = "idp") -> ConnectionInfo | None:
        return self._with_store(lambda store: store.info(Who(org, user), provider))

    def tokens(self, org: str, user: str, provider: str = "idp") -> TokenBundle | None:
        return self._with_store(lambda store: store.load(Who(org, user), provider))

    def save_tokens(self, org: str, user: str, provider: str, bundle: TokenBundle) -> int:
        return self._with_store(lambda store: store.save(Who(org, user), provider, bundle))


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run on a private loop in a worker thread: callable from sync and async tests alike."""
    with ThreadPoolExecutor(1) as worker:
        return worker.submit(asyncio.run, coroutine).result()


def _start_on(factory: str, env: dict[str, str], port: int, log_dir: Path, name: str) -> Server:
    log = log_dir / f"{name}-{port}.log"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")} | env
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", factory, "--host", "127.0.0.1",
             "--port", str(port), "--no-access-log"],
            env=full_env, stdout=out, stderr=subprocess.STDOUT,
        )
    server = Server(process, f"http://127.0.0.1:{port}", log, env)
    wait_healthy(server)
    return server


def _clients(public_url: str, signin: bool) -> list[dict[str, object]]:
    clients: list[dict[str, object]] = [
        {"client_id": client_id, "client_secret": CLIENT_SECRET,
         "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
         "redirect_uris": [f"{public_url}/oauth/{name}/callback"],
         "token_endpoint_auth_method": "client_secret_basic"}
        for name, (client_id, _) in CLIENTS.items()
    ]
    if signin:
        clients.append({"client_id": SIGNIN_CLIENT, "client_secret": CLIENT_SECRET,
                        "grant_types": ["authorization_code"], "response_types": ["code"],
                        "redirect_uris": [f"{public_url}/connect/signin/callback"],
                        "token_endpoint_auth_method": "client_secret_basic"})
    return clients


def _signin_env(provider: OidcProvider) -> dict[str, str]:
    """The gateway trusts ``provider`` as its issuer and signs people in to /connect there."""
    return {"GATEHOUSE_ISSUER": provider.issuer, "GATEHOUSE_JWKS_URL": provider.jwks_url,
            "GATEHOUSE_AUDIENCE": provider.audience, "GATEHOUSE_SIGNIN_CLIENT_ID": SIGNIN_CLIENT,
            "GATEHOUSE_SIGNIN_CLIENT_SECRET": CLIENT_SECRET,
            "GATEHOUSE_SIGNIN_RESOURCE": provider.audience}


@contextmanager
def connect_stack(
    database: Database, redis_url: str, internal_public: Path, gateway_env: dict[str, str],
    work_dir: Path, *, state_ttl: int = 600, signin: bool = False,
) -> Iterator[ConnectStack]:
    """With ``signin``, the provider is also the gateway's issuer and people sign in to
    /connect there (users then come from ``stack.new_user(stack.provider, org)``)."""
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    token_keys = "k1:" + base64.b64encode(secrets.token_bytes(32)).decode()
    with OidcProvider(clients=_clients(public_url, signin)) as provider:
        providers = {
            name: {"discovery_url": provider.discovery_url, "client_id": client_id,
                   "client_secret": CLIENT_SECRET, "display_name": display,
                   "scopes": ["openid", "offline_access"]}
            for name, (client_id, display) in CLIENTS.items()
        }
        mcp = _start_on("mcp_server.app:create_app", {
            "GATEHOUSE_INTERNAL_PUBLIC_KEY_FILE": str(internal_public),
            "GATEHOUSE_DATABASE_URL": database.app_url, "GATEHOUSE_REDIS_URL": redis_url,
            "GATEHOUSE_TOKEN_KEYS": token_keys, "GATEHOUSE_PUBLIC_URL": public_url,
            "GATEHOUSE_PROVIDERS": json.dumps(providers),
            "GATEHOUSE_CONNECT_STATE_TTL_SECONDS": str(state_ttl),
        }, free_port(), work_dir, "connect-mcp")
        try:
            gateway = _start_on("gateway.app:create_app", {
                **gateway_env, "GATEHOUSE_PUBLIC_URL": public_url,
                "GATEHOUSE_MCP_SERVER_URL": mcp.url + "/mcp",
                **(_signin_env(provider) if signin else {}),
            }, port, work_dir, "connect-gateway")
            try:
                yield ConnectStack(gateway, mcp, provider, database, redis_url, token_keys)
            finally:
                gateway.stop()
        finally:
            mcp.stop()


class GatewayBrowser:
    """A browser stand-in over httpx: no redirects followed, cookies kept by hand."""

    def __init__(self, stack: ConnectStack) -> None:
        self.stack = stack
        self.http = httpx.Client(base_url=stack.public_url, follow_redirects=False, timeout=15)
        self.cookies: dict[str, str] = {}
        self.cookie: str | None = None  # "name=value" of the connect session
        self.set_cookie: str | None = None  # its raw Set-Cookie header, attributes included

    def close(self) -> None:
        self.http.close()

    def _headers(self) -> dict[str, str]:
        jar = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        return {"Cookie": jar} if jar else {}

    def _keep(self, response: httpx.Response) -> None:
        for header in response.headers.get_list("set-cookie"):
            name, _, value = header.split(";", 1)[0].partition("=")
            if value.strip('"') and "max-age=0" not in header.lower():
                self.cookies[name] = value
            else:
                self.cookies.pop(name, None)
            if name == "gatehouse_connect":
                self.set_cookie, self.cookie = header, f"{name}={value}"

    def open_link(self, link: str, *, confirm: bool = True) -> httpx.Response:
        """Open a connect link; without sign-in its page asks who you are: with ``confirm``,
        answer as the person it names (press its button)."""
        response = self.http.get(link, headers=self._headers())
        self._keep(response)
        if confirm and response.status_code == 200 and "/connect/confirm" in response.text:
            response = self.post("/connect/confirm", confirm_form(response.text))
            self._keep(response)
        return response

    def get(self, path: str, **params: str) -> httpx.Response:
        return self.http.get(path, params=params, headers=self._headers())

    def post(self, path: str, data: dict[str, str], **headers: str) -> httpx.Response:
        return self.http.post(path, data=data, headers=self._headers() | headers)

    def csrf(self) -> str:
        page = self.get("/connect")
        match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert match, page.text
        return match[1]

    def start(self, provider: str = "idp") -> str:
        """Press Connect; the provider's authorization URL the gateway redirects to."""
        response = self.post(f"/oauth/{provider}/start", {"csrf_token": self.csrf()})
        assert response.status_code == 303, response.text
        return response.headers["location"]

    def callback(self, provider: str, query: str) -> httpx.Response:
        return self.http.get(f"/oauth/{provider}/callback?{query}", headers=self._headers())

    def status_text(self) -> str:
        page = self.get("/connect").text
        match = re.search(r'role="status"[^>]*>(.*?)</div>', page, re.S)
        return match[1] if match else ""


def confirm_form(page: str) -> dict[str, str]:
    """The hidden fields of a connect link's confirmation page."""
    return dict(re.findall(r'name="(ticket|csrf_token)" value="([^"]+)"', page))


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def with_query(url: str, **changes: str | None) -> str:
    """The query of ``url`` with parameters replaced (or removed, for None)."""
    query = query_of(url) | {k: v for k, v in changes.items() if v is not None}
    return urlencode({k: v for k, v in query.items() if changes.get(k, "") is not None})


def sign_in_at_provider(
    authorization_url: str, login: str, *, deny: bool = False, back_to: str | None = None,
    timeout: float = 15,
) -> str:
    """Drive oidc-provider's devInteractions (login, then consent) over HTTP; the URL the
    provider finally redirects to (the first under ``back_to``; by default a connect flow's
    ``/oauth/{provider}/callback``), with ``code``/``state``/``iss``."""
    def is_back(location: str) -> bool:
        if back_to is not None:
            return location.startswith(back_to)
        return "/oauth/" in location and "/callback" in location

    with httpx.Client(timeout=timeout, follow_redirects=False) as agent:
        response = agent.get(authorization_url)
        for _ in range(12):
            assert response.status_code in (302, 303), response.text[:500]
            location = urljoin(str(response.url), response.headers["location"])
            if is_back(location):
                return location
            page = agent.get(location)
            if page.status_code in (302, 303):
                response = page
                continue
            if 'name="login"' in page.text:
                form = {"prompt": "login", "login": login, "password": "any"}
            elif deny:
                response = agent.get(location + "/abort")
                continue
            else:
                form = {"prompt": "consent"}
            response = agent.post(location, data=form)
    raise AssertionError("the provider never redirected back")


async def sign_in_on_provider_page(page: Page, issuer: str, login: str) -> None:
    """oidc-provider's devInteractions in a Playwright ``page`` once it is at ``issuer``: a
    login form (any password), then a consent form."""
    await page.wait_for_url(issuer + "/**")
    await page.locator('input[name="login"]').fill(login)
    await page.locator('input[name="password"]').fill("any password")
    await page.locator('button[type="submit"]').click()
    await page.locator('button[type="submit"]', has_text="Continue").click()


async def idp_whoami(stack: ConnectStack, token: str) -> CallToolResult:
    """The ``idp`` provider's whoami tool through the gateway, as an MCP client with ``token``."""
    async with FastMcpClient(stack.public_url + "/mcp", auth=token) as client:
        result: CallToolResult = await client.call_tool("idp_whoami", {}, raise_on_error=False)
    return result


def text_of(result: CallToolResult) -> str:
    return " ".join(getattr(part, "text", "") for part in result.content)


def start_server_on(
    factory: str, env: dict[str, str], port: int, log_dir: Path, name: str
) -> Server:
    """A uvicorn server on a port chosen beforehand (for settings that must name their own
    URL, such as an issuer under the gateway's public URL)."""
    return _start_on(factory, env, port, log_dir, name)


class LoopbackCallback:
    """A native client's loopback redirect URI (RFC 8252): records the first authorization
    response it receives and answers the browser with a short page."""

    def __init__(self) -> None:
        self.redirect_uri = ""
        self._server: asyncio.Server | None = None
        self._result: asyncio.Future[dict[str, str]] | None = None

    async def __aenter__(self) -> LoopbackCallback:
        self._result = asyncio.get_running_loop().create_future()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.redirect_uri = f"http://127.0.0.1:{port}/callback"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        target = (await reader.readline()).decode("latin-1").split(" ")[1:2]
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass
        assert self._result is not None
        if target and target[0].startswith("/callback") and not self._result.done():
            self._result.set_result(query_of(target[0]))
        body = b"<!doctype html><p>Signed in. You can close this page.</p>"
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        await writer.drain()
        writer.close()

    async def result(self, timeout: float = 30) -> dict[str, str]:
        """The query of the authorization response (``code``, ``state``, ``iss`` or ``error``)."""
        assert self._result is not None
        return await asyncio.wait_for(asyncio.shield(self._result), timeout)


async def _port_open(url: str, deadline: float) -> None:
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    while True:
        try:
            _, writer = await asyncio.open_connection(parts.hostname, parts.port)
        except OSError:
            if loop.time() > deadline:
                raise AssertionError(f"nothing listens at {url}") from None
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return


async def dev_sign_in(
    page: Any, authorization_url: str, *, org: str, user: str, roles: tuple[str, ...] = ("member",),
    name: str = "", email: str = "", timeout: float = 30,
) -> str:
    """Sign in on the development issuer's page in a Playwright ``page`` as the person chosen,
    once the client's redirect URI listens; the URL the browser was sent back to."""
    redirect_uri = query_of(authorization_url)["redirect_uri"]
    await page.goto(authorization_url)
    await page.get_by_text("Development only").wait_for()
    await page.fill("#org", org)
    await page.fill("#user", user)
    for role in ("owner", "admin", "member", "viewer"):
        await page.locator(f"#role-{role}").set_checked(role in roles)
    await page.fill("#name", name)
    await page.fill("#email", email)
    await _port_open(redirect_uri, asyncio.get_running_loop().time() + timeout)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(lambda url: url.startswith(redirect_uri), timeout=timeout * 1000)
    return str(page.url)
