"""No secret in any signal (issue 13 item 6; DESIGN: secrets never in logs, errors, metrics).

A gateway and an mcp_server of their own, logging JSON at DEBUG and exporting every span to a
loopback OTLP receiver, are driven through what handles secrets: the connect flow in a browser
stand-in (sign-in through the issuer, code + PKCE + nonce + client secret at the gateway; then
the provider's code + PKCE + client secret exchange at mcp_server; cookies, CSRF, state and a
connect ticket; a refresh and a revocation at that provider), GitHub tool calls whose grant is
due for refresh (one refresh accepted, one refused, one provider failure), failed
authentications (garbage, forged, expired, wrong audience, a forged internal assertion) and a
session with a prompt. A tap between the gateway and mcp_server records the internal
assertions. Every OTLP export request (spans, events, resource), every log line of both
processes and both ``/metrics`` pages are then scanned for each secret seen on the way, and
any 16-character slice of one, and for anything shaped like a JWT (bearer tokens, ID tokens,
assertions, whoever minted them): zero hits, or each hit named by signal, place and secret.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg
import httpx
import jwt
import pytest
import redis
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.connect.signin import state_key as signin_state_key
from oauth.connect import state_key as connect_state_key
from oauth.keyring import Keyring, generate_entry
from oauth.store import TokenStore
from oauth.vault import TokenBundle
from tests.conftest import InternalKeys
from tests.support.browser import query_of
from tests.support.browser import sign_in_at_provider as sign_in_over_http
from tests.support.databases import Database
from tests.support.github_standin import GitHubStandIn
from tests.support.header_tap import HeaderTap
from tests.support.oidc_provider import OidcProvider
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.processes import Server, free_port, wait_healthy
from tests.support.standin import Running
from tests.support.tenants import Who

ORG = "secret-org"
MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": "2025-11-25"}
JWT_SHAPED = re.compile(r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.")
TICKET = re.compile(r"connect\?ticket=([A-Za-z0-9_-]{20,})")
SLICE = 16  # a leaked part of a secret this long is a leak


# -- the scan ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    signal: str  # "gateway log", "span", "mcp_server /metrics", ...
    where: str  # line number and logger, span name, ...
    what: str  # which secret (its label, never its value)


@dataclass
class Secrets:
    """Every secret the drive saw, by label; :meth:`scan` finds them, whole or in part."""

    values: dict[str, str] = field(default_factory=dict, repr=False)

    def add(self, label: str, value: str | None) -> None:
        assert value and len(value) >= 12, f"{label} is too short to scan for: {value!r}"
        self.values.setdefault(value, label)

    def labels(self) -> set[str]:
        return {label.split(" #")[0] for label in self.values.values()}

    def _slices(self) -> dict[str, str]:
        slices: dict[str, str] = {}
        for value, label in self.values.items():
            for start in range(max(len(value) - SLICE + 1, 1)):
                slices.setdefault(value[start:start + SLICE], label)
        return slices

    def scan(self, units: Iterable[tuple[str, str, str]]) -> list[Hit]:
        """``units``: (signal, where, text). A hit per unit and secret found in it, or in its
        URL-decoded form; a JWT-shaped string is a hit whatever it is."""
        slices, hits = self._slices(), []
        for signal, where, text in units:
            found: set[str] = set()
            for form in {text, unquote(text)}:
                found |= {"a JWT-shaped string"} if JWT_SHAPED.search(form) else set()
                found |= {label for value, label in self.values.items() if value in form}
                found |= {slices[form[i:i + SLICE]] for i in range(len(form) - SLICE + 1)
                          if form[i:i + SLICE] in slices}
            hits += [Hit(signal, where, what) for what in sorted(found)]
        return hits


class RecordingReceiver(OtlpReceiver):
    """Keeps each whole export request too: resource and scope attributes are outside spans."""

    def __init__(self) -> None:
        super().__init__()
        self.exports: list[bytes] = []

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()  # aiohttp keeps it for the decoding below
        self.exports.append(gzip.decompress(body)
                            if request.headers.get("Content-Encoding") == "gzip" else body)
        return await super()._receive(request)


def span_units(receiver: RecordingReceiver) -> Iterator[tuple[str, str, str]]:
    for span in receiver.spans:
        yield "span", f"{span.service}: {span.name!r}", span.raw.decode("latin-1")
    for number, export in enumerate(receiver.exports):  # resources, scopes, everything
        yield "OTLP export", f"request #{number}", export.decode("latin-1")


def log_units(name: str, server: Server) -> Iterator[tuple[str, str, str]]:
    for number, line in enumerate(server.log_text().splitlines(), 1):
        try:
            logger = json.loads(line).get("logger", "?")
        except ValueError:
            logger = "not JSON"
        yield f"{name} log", f"line {number} ({logger})", line


def metric_units(name: str, page: str) -> Iterator[tuple[str, str, str]]:
    for number, line in enumerate(page.splitlines(), 1):
        yield f"{name} /metrics", f"line {number}", line


# -- the stack ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stack:
    gateway: Server
    mcp_server: Server
    mcp_metrics: str
    provider: OidcProvider
    github: GitHubStandIn
    github_url: str
    receiver: RecordingReceiver
    tap: HeaderTap  # between the gateway and mcp_server: what the gateway asserts
    database: Database
    redis_url: str
    token_keys: str = field(repr=False)
    secrets: Secrets = field(repr=False)


def serve(factory: str, env: dict[str, str], port: int, log_dir: Path, name: str) -> Server:
    """uvicorn on a port chosen beforehand, its access log on as in production (the app turns
    it off; a raw path would carry codes, states and tickets)."""
    log = log_dir / f"{name}-{port}.log"
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("GATEHOUSE_", "OTEL_"))} | env
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", factory, "--host", "127.0.0.1",
             "--port", str(port)], env=full_env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(process, f"http://127.0.0.1:{port}", log, env)
    wait_healthy(server)
    return server


def oauth_clients(public_url: str, secret: str) -> list[dict[str, Any]]:
    """At the provider: the connect flow's client (Gatehouse as a third-party app) and the
    gateway's sign-in client."""
    def client(client_id: str, redirect: str, grants: list[str]) -> dict[str, Any]:
        return {"client_id": client_id, "client_secret": secret, "grant_types": grants,
                "response_types": ["code"], "redirect_uris": [public_url + redirect],
                "token_endpoint_auth_method": "client_secret_basic"}
    both = ["authorization_code", "refresh_token"]
    return [client("secret-connect", "/oauth/idp/callback", both),
            client("secret-signin", "/connect/signin/callback", ["authorization_code"])]


def otel(receiver_url: str) -> dict[str, str]:
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver_url, "OTEL_BSP_SCHEDULE_DELAY": "50",
            "OTEL_TRACES_SAMPLER": "parentbased_always_on",
            "GATEHOUSE_LOG_FORMAT": "json", "GATEHOUSE_LOG_LEVEL": "DEBUG",
            "GATEHOUSE_DATABASE_POOL_SIZE": "4"}


def mcp_env(database: Database, redis_url: str, internal_keys: InternalKeys, public_url: str,
            provider: OidcProvider, github: tuple[str, str], token_keys: str,
            client_secret: str) -> dict[str, str]:
    github_url, github_secret = github
    providers = {
        "idp": {"discovery_url": provider.discovery_url, "client_id": "secret-connect",
                "client_secret": client_secret, "display_name": "Test IdP",
                "scopes": ["openid", "offline_access"]},
        "github": {"client_id": "gatehouse-test", "client_secret": github_secret,
                   "api_base_url": github_url,
                   "token_endpoint": github_url + "/login/oauth/access_token"},
    }
    return {"GATEHOUSE_INTERNAL_PUBLIC_KEY_FILE": str(internal_keys.public),
            "GATEHOUSE_DATABASE_URL": database.app_url, "GATEHOUSE_REDIS_URL": redis_url,
            "GATEHOUSE_TOKEN_KEYS": token_keys, "GATEHOUSE_PUBLIC_URL": public_url,
            "GATEHOUSE_PROVIDERS": json.dumps(providers),
            "GATEHOUSE_RESILIENCE_NAMESPACE": f"nosecret-{uuid.uuid4().hex[:8]}"}


def gateway_env(database: Database, redis_url: str, internal_keys: InternalKeys,
                public_url: str, mcp_url: str, provider: OidcProvider,
                client_secret: str) -> dict[str, str]:
    return {"GATEHOUSE_DATABASE_URL": database.app_url, "GATEHOUSE_REDIS_URL": redis_url,
            "GATEHOUSE_PUBLIC_URL": public_url, "GATEHOUSE_MCP_SERVER_URL": mcp_url + "/mcp",
            "GATEHOUSE_INTERNAL_KEY_FILE": str(internal_keys.private),
            "GATEHOUSE_ISSUER": provider.issuer, "GATEHOUSE_JWKS_URL": provider.jwks_url,
            "GATEHOUSE_AUDIENCE": provider.audience,
            "GATEHOUSE_USER_RATE_LIMIT": "100000/minute",
            "GATEHOUSE_SIGNIN_CLIENT_ID": "secret-signin",
            "GATEHOUSE_SIGNIN_CLIENT_SECRET": client_secret,
            "GATEHOUSE_SIGNIN_RESOURCE": provider.audience}


def configured_secrets(token_keys: str, client_secret: str, github_secret: str,
                       internal_keys: InternalKeys) -> Secrets:
    found = Secrets()
    found.add("vault keys (GATEHOUSE_TOKEN_KEYS)", token_keys)
    raw = base64.b64decode(token_keys.split(":", 1)[1])
    found.add("vault key (base64)", token_keys.split(":", 1)[1])
    found.add("vault key (base64url)", base64.urlsafe_b64encode(raw).decode().rstrip("="))
    found.add("vault key (hex)", raw.hex())
    found.add("OAuth client secret", client_secret)
    found.add("GitHub client secret", github_secret)
    pem = internal_keys.private.read_text().splitlines()
    for number, line in enumerate(line for line in pem if len(line) >= SLICE and "-" not in line):
        found.add(f"internal signing key #{number}", line)
    return found


@pytest.fixture(scope="module")
def stack(database: Database, redis_url: str, internal_keys: InternalKeys,
          work_dir: Path) -> Iterator[Stack]:
    port = free_port()  # the provider must know the gateway's redirect URIs before it starts
    public_url = f"http://127.0.0.1:{port}"
    client_secret, github_secret = (f"cs-{secrets.token_urlsafe(24)}" for _ in range(2))
    token_keys = generate_entry("nosecret1")
    github = GitHubStandIn(client=("gatehouse-test", github_secret))
    receiver = RecordingReceiver()
    running = [Running(github.app), Running(receiver.app)]
    metrics_port = free_port()
    with OidcProvider(clients=oauth_clients(public_url, client_secret)) as provider:
        mcp = serve("mcp_server.app:create_app", {
            **otel(running[1].url), "GATEHOUSE_METRICS_PORT": str(metrics_port),
            **mcp_env(database, redis_url, internal_keys, public_url, provider,
                      (running[0].url, github_secret), token_keys, client_secret),
        }, free_port(), work_dir, "nosecret-mcp")
        tap = HeaderTap(mcp.url)
        running.append(Running(tap.app))
        gateway = serve("gateway.app:create_app", {
            **otel(running[1].url), **gateway_env(database, redis_url, internal_keys, public_url,
                                                  running[2].url, provider, client_secret),
        }, port, work_dir, "nosecret-gateway")
        try:
            yield Stack(gateway, mcp, f"http://127.0.0.1:{metrics_port}/metrics", provider,
                        github, running[0].url, receiver, tap, database, redis_url, token_keys,
                        configured_secrets(token_keys, client_secret, github_secret,
                                           internal_keys))
        finally:
            gateway.stop()
            mcp.stop()
            for server in running:
                server.stop()


# -- driving it --------------------------------------------------------------------------------


def store_call(stack: Stack, use: Any) -> Any:
    """``use(TokenStore)`` on a private loop (the tests here are synchronous)."""
    async def run() -> Any:
        pool = await asyncpg.create_pool(stack.database.app_url, min_size=1, max_size=1)
        try:
            return await use(TokenStore(pool, Keyring.parse(stack.token_keys)))
        finally:
            await pool.close()
    return asyncio.run(run())


def bearer_for(stack: Stack, user: str) -> str:
    token = stack.provider.access_token(ORG, user)
    stack.secrets.add("bearer token", token)
    first = httpx.get(stack.gateway.url + "/v1/sessions", timeout=15,
                      headers={"Authorization": f"Bearer {token}"})
    assert first.status_code == 200, first.text  # provisioned
    return token


def mcp_call(stack: Stack, bearer: str, method: str, params: dict[str, Any],
             path: str = "/mcp") -> dict[str, Any]:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    resp = httpx.post(stack.gateway.url + path, json=body, timeout=30,
                      headers={**MCP_HEADERS, "Authorization": f"Bearer {bearer}"})
    assert resp.status_code == 200, resp.text
    if resp.headers["content-type"].startswith("text/event-stream"):
        data = [line[5:] for line in resp.text.splitlines() if line.startswith("data:")]
        return dict(json.loads(data[-1]))
    return dict(resp.json())


def tool(stack: Stack, bearer: str, name: str, **arguments: str) -> dict[str, Any]:
    params = {"name": name, "arguments": arguments}
    result = mcp_call(stack, bearer, "tools/call", params)["result"]
    return dict(result)


class Browser:
    """A browser stand-in for the gateway's origin: its own cookie jar, no redirects followed;
    every cookie it is given and every form token it sees is noted as a secret."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.http = httpx.Client(base_url=stack.gateway.url, follow_redirects=False, timeout=20,
                                 event_hooks={"response": [self._note_cookies]})

    def _note_cookies(self, response: httpx.Response) -> None:
        for header in response.headers.get_list("set-cookie"):
            name, _, value = header.split(";", 1)[0].partition("=")
            if value.strip('"'):
                self.stack.secrets.add(f"cookie {name}", value)
                if name == "gatehouse_connect":  # what binds the provider's state to it
                    digest = hashlib.sha256(f"gatehouse-connect|binding|{value}".encode())
                    self.stack.secrets.add("connect binding", digest.hexdigest())

    def csrf(self) -> str:
        page = self.http.get("/connect")
        match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert match, page.text
        self.stack.secrets.add("CSRF token", match[1])
        return match[1]

    def status(self) -> str:
        page = self.http.get("/connect").text
        match = re.search(r'role="status"[^>]*>(.*?)</div>', page, re.S)
        return match[1] if match else ""


def authorization_request(stack: Stack, location: str, state_key: str) -> None:
    """Note the state, nonce, PKCE verifier and binding of an authorization request."""
    query = query_of(location)
    stack.secrets.add("OAuth state", query["state"])
    if "nonce" in query:
        stack.secrets.add("OIDC nonce", query["nonce"])
    record = json.loads(redis.Redis.from_url(stack.redis_url).get(state_key) or b"{}")
    stack.secrets.add("PKCE verifier", record["verifier"])
    stack.secrets.add("state binding", record["binding"])


def sign_in_at_provider(stack: Stack, authorization_url: str, login: str) -> str:
    """oidc-provider's devInteractions (login, consent) over HTTP, in the provider's own
    browser; the gateway URL it finally redirects to (code, state, iss), its code noted."""
    location = sign_in_over_http(
        authorization_url, login, back_to=stack.gateway.url, timeout=20)
    stack.secrets.add("authorization code", query_of(location)["code"])
    return location


def sign_in_with_ticket(stack: Stack, browser: Browser, ticket: str, user: str) -> None:
    """The connect link opens the sign-in through the issuer; its callback redeems the ticket."""
    answer = browser.http.get("/connect", params={"ticket": ticket})
    assert answer.status_code == 303, answer.text
    location = answer.headers["location"]
    authorization_request(stack, location, signin_state_key(query_of(location)["state"]))
    back = sign_in_at_provider(stack, location, user)
    done = browser.http.get(urlsplit(back).path + "?" + urlsplit(back).query)
    assert done.status_code == 303 and done.headers["location"] == "/connect", done.text


def connect_at_provider(stack: Stack, browser: Browser, user: str) -> None:
    answer = browser.http.post("/oauth/idp/start", data={"csrf_token": browser.csrf()})
    assert answer.status_code == 303, answer.text
    location = answer.headers["location"]
    authorization_request(stack, location, connect_state_key(query_of(location)["state"]))
    back = sign_in_at_provider(stack, location, user)
    assert browser.http.get("/oauth/idp/callback?" + urlsplit(back).query).status_code == 303
    assert f"Connected Test IdP as {user}" in browser.status(), browser.status()


def note_grant(stack: Stack, who: Who, provider: str, label: str) -> TokenBundle:
    bundle: TokenBundle | None = store_call(stack, lambda store: store.load(who, provider))
    assert bundle is not None
    stack.secrets.add(f"{label} access token", bundle.access_token)
    stack.secrets.add(f"{label} refresh token", bundle.refresh_token)
    return bundle


def due_for_refresh(stack: Stack, who: Who, provider: str, bundle: TokenBundle) -> None:
    due = TokenBundle(bundle.access_token, bundle.refresh_token,
                      datetime.now(UTC) + timedelta(seconds=30), bundle.scopes)
    store_call(stack, lambda store: store.save(who, provider, due, account=who.user_id))


def drive_connect_flow(stack: Stack) -> None:
    """From a tool's connect link to a connection, used, refreshed and disconnected."""
    user = "u-" + uuid.uuid4().hex[:10]
    bearer, who = bearer_for(stack, user), Who(ORG, user)
    answer = tool(stack, bearer, "idp_whoami")
    link = TICKET.search(json.dumps(answer))
    assert answer["isError"] and link is not None, answer
    stack.secrets.add("connect ticket", link[1])
    browser = Browser(stack)
    sign_in_with_ticket(stack, browser, link[1], user)
    connect_at_provider(stack, browser, user)
    first = note_grant(stack, who, "idp", "provider")
    due_for_refresh(stack, who, "idp", first)  # used at once, it is refreshed first
    assert not tool(stack, bearer, "idp_whoami").get("isError")
    assert note_grant(stack, who, "idp", "refreshed provider").access_token != first.access_token
    assert browser.http.post("/oauth/idp/disconnect",
                             data={"csrf_token": browser.csrf()}).status_code == 303
    assert "provider confirmed the revocation" in browser.status()


def github_grant(stack: Stack, who: Who, *, known_refresh: bool = True) -> TokenBundle:
    """A stored GitHub grant due for refresh; the stand-in knows its refresh token or not."""
    access, refresh = f"gho_{secrets.token_hex(16)}", f"ghr_{secrets.token_hex(16)}"
    stack.secrets.add("GitHub access token", access)
    stack.secrets.add("GitHub refresh token", refresh)
    bundle = TokenBundle(access, refresh, datetime.now(UTC) + timedelta(hours=8),
                         ("repo", "read:user"))
    due_for_refresh(stack, who, "github", bundle)
    httpx.post(stack.github_url + "/_standin/tokens", json={
        "token": access, "login": who.user_id, "scopes": "repo, read:user",
        "refresh_token": refresh if known_refresh else "",
    }).raise_for_status()
    return bundle


def drive_github_refresh(stack: Stack) -> None:
    """A refresh accepted, a refresh refused, and a provider answering 500."""
    user = "g-" + uuid.uuid4().hex[:10]
    bearer, who = bearer_for(stack, user), Who(ORG, user)
    old = github_grant(stack, who)
    assert not tool(stack, bearer, "github_whoami").get("isError")
    new = note_grant(stack, who, "github", "refreshed GitHub")
    assert new.access_token != old.access_token and new.access_token.startswith("ghu_")
    other = "g-" + uuid.uuid4().hex[:10]
    refused_bearer, refused = bearer_for(stack, other), Who(ORG, other)
    github_grant(stack, refused, known_refresh=False)
    assert tool(stack, refused_bearer, "github_whoami")["isError"]
    httpx.post(stack.github_url + "/_standin/fail",  # last: enough of these open the breaker
               json={"token": new.access_token, "status": 502, "count": 3}).raise_for_status()
    assert tool(stack, bearer, "github_whoami")["isError"]


def forged_tokens(stack: Stack) -> dict[str, str]:
    """Tokens the gateway must refuse, each JWT-shaped (so a logged one is a hit anyway)."""
    now, provider = int(time.time()), stack.provider
    claims = {"iss": provider.issuer, "aud": provider.audience, "sub": "mallory",
              "org_id": ORG, "roles": ["member"], "iat": now, "exp": now + 600}
    headers = {"kid": provider.kid, "typ": "at+jwt"}
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "forged": jwt.encode(claims, stranger, algorithm="RS256", headers=headers),
        "expired": jwt.encode(claims | {"iat": now - 7200, "exp": now - 3600},
                              provider.private_key, algorithm="RS256", headers=headers),
        "wrong audience": jwt.encode(claims | {"aud": "https://elsewhere.test"},
                                     provider.private_key, algorithm="RS256", headers=headers),
        "garbage": "garbage-" + secrets.token_urlsafe(40),
        "tampered": stack.provider.access_token(ORG, "mallory")[:-6] + "AAAAAA",
    }


def drive_failed_authentications(stack: Stack) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "x"}}}
    for label, token in forged_tokens(stack).items():
        stack.secrets.add(f"{label} bearer token", token)
        for path in ("/mcp", "/v1/sessions"):
            resp = httpx.post(stack.gateway.url + path, json=body, timeout=15,
                              headers={**MCP_HEADERS, "Authorization": f"Bearer {token}"})
            assert resp.status_code == 401, (label, path, resp.text)
    assertion = jwt.encode({"sub": "mallory", "org_id": ORG, "exp": int(time.time()) + 60},
                           rsa.generate_private_key(public_exponent=65537, key_size=2048),
                           algorithm="RS256")
    stack.secrets.add("forged internal assertion", assertion)
    direct = httpx.post(stack.mcp_server.url + "/mcp", json=body, timeout=15,
                        headers={**MCP_HEADERS, "Authorization": f"Bearer {assertion}"})
    assert direct.status_code == 401, direct.text


def drive_session_with_prompt(stack: Stack) -> None:
    user = "p-" + uuid.uuid4().hex[:10]
    bearer = bearer_for(stack, user)
    created = httpx.post(stack.gateway.url + "/v1/sessions", timeout=15, json={
        "name": "with a prompt", "variables": {"lang": "French"},
        "prompt": "@section style append\nAnswer in {{ session.lang }}.",
    }, headers={"Authorization": f"Bearer {bearer}"})
    assert created.status_code == 201, created.text
    got = mcp_call(stack, bearer, "prompts/get", {"name": "system"},
                   path=f"/mcp/{created.json()['id']}")
    assert "Answer in" in json.dumps(got["result"]), got
    assert not tool(stack, bearer, "echo", text="hello").get("isError")


# -- the test ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signals:
    units: list[tuple[str, str, str]]
    span_services: set[str]
    span_names: set[str]
    log_loggers: dict[str, set[str]]


def collect(stack: Stack) -> Signals:
    """Both /metrics pages, then stop both processes: each flushes its spans on the way out,
    so every span and every log line is in once ``stop`` returns."""
    pages = {"gateway": httpx.get(stack.gateway.url + "/metrics", timeout=10).text,
             "mcp_server": httpx.get(stack.mcp_metrics, timeout=10).text}
    stack.gateway.stop()
    stack.mcp_server.stop()
    for header in stack.tap.seen:
        assertion = header.removeprefix("Bearer ")
        assert JWT_SHAPED.match(assertion), header
        stack.secrets.add("internal assertion", assertion)
    servers = {"gateway": stack.gateway, "mcp_server": stack.mcp_server}
    units = [*span_units(stack.receiver)]
    for name, page in pages.items():
        units += [*metric_units(name, page), *log_units(name, servers[name])]
    loggers = {name: {where.split("(")[1].rstrip(")") for signal, where, _ in units
                      if signal == f"{name} log"} for name in servers}
    spans = stack.receiver.spans
    return Signals(units, {s.service for s in spans}, {s.name for s in spans}, loggers)


def test_no_secret_reaches_a_span_a_log_line_or_a_metric(stack: Stack) -> None:
    drive_connect_flow(stack)
    drive_github_refresh(stack)
    drive_failed_authentications(stack)
    drive_session_with_prompt(stack)
    signals = collect(stack)

    # What was scanned is what the drive produced, not an empty page.
    assert signals.span_services == {"gatehouse-gateway", "gatehouse-mcp-server"}
    assert {"tools/call idp_whoami", "tools/call github_whoami", "prompts/get system",
            "token refresh", "vault decrypt", "verify token"} <= signals.span_names
    assert {"gateway.access", "uvicorn.error"} <= signals.log_loggers["gateway"]
    assert "mcp_server.access" in signals.log_loggers["mcp_server"]
    assert "not JSON" not in signals.log_loggers["gateway"] | signals.log_loggers["mcp_server"]
    assert {"bearer token", "connect ticket", "cookie gatehouse_connect", "cookie gatehouse_signin",
            "CSRF token", "OAuth state", "OIDC nonce", "PKCE verifier", "authorization code",
            "provider access token", "refreshed provider access token",
            "refreshed GitHub access token", "GitHub refresh token", "forged bearer token",
            "forged internal assertion", "vault key (base64)", "OAuth client secret",
            "GitHub client secret", "internal signing key", "internal assertion",
            } <= stack.secrets.labels()

    hits = stack.secrets.scan(signals.units)
    assert not hits, "secrets in signals:\n" + "\n".join(
        f"  {hit.signal} {hit.where}: {hit.what}" for hit in hits)
