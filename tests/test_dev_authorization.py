"""The development issuer as a complete OAuth 2.1 authorization server (issue 12 item 1).

A gateway in development mode (``gatehouse up`` without an issuer: the issuer is
``PUBLIC_URL/dev``, the gateway serves its JWKS) is found by URL alone: the official MCP SDK's
OAuth client and FastMCP's each discover it from the gateway's 401, register themselves, send
headless Chromium through the sign-in page, and call ``echo``. Over plain HTTP: what OAuth 2.1
and the MCP authorization spec require it to refuse, it refuses, with the proper error.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import httpx2
import jwt
import pytest
from aiohttp import web
from fastmcp import Client as FastMcpClient
from mcp import Client as SdkClient
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from mcp_types import TextContent
from playwright.async_api import Browser
from pydantic import AnyUrl

from gateway.cli.devissuer import ensure_key
from tests.conftest import GatewayFactory, InternalKeys
from tests.support.browser import (
    LoopbackCallback,
    dev_sign_in,
    query_of,
    start_server_on,
)
from tests.support.databases import Database
from tests.support.oidc_provider import OidcProvider
from tests.support.processes import Server, free_port
from tests.support.standin import Running


@dataclass(frozen=True)
class DevStack:
    gateway: Server
    key_file: Path

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def issuer(self) -> str:
        return self.url + "/dev"

    @property
    def mcp_url(self) -> str:
        return self.url + "/mcp"


@pytest.fixture(scope="module")
def dev(
    database: Database, redis_url: str, internal_keys: InternalKeys, mcp_server: Server,
    work_dir: Path,
) -> Iterator[DevStack]:
    """A gateway configured as ``gatehouse up`` configures it without an issuer."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    key_file = work_dir / "dev_issuer.pem"
    ensure_key(key_file)
    gateway = start_server_on("gateway.app:create_app", {
        "GATEHOUSE_DATABASE_URL": database.app_url, "GATEHOUSE_REDIS_URL": redis_url,
        "GATEHOUSE_MCP_SERVER_URL": mcp_server.url + "/mcp",
        "GATEHOUSE_INTERNAL_KEY_FILE": str(internal_keys.private),
        "GATEHOUSE_PUBLIC_URL": url, "GATEHOUSE_ISSUER": url + "/dev",
        "GATEHOUSE_JWKS_URL": url + "/dev/jwks.json",
        "GATEHOUSE_DEV_ISSUER_KEY_FILE": str(key_file),
        "GATEHOUSE_USER_RATE_LIMIT": "100000/minute",
    }, port, work_dir, "dev-authorization-gateway")
    yield DevStack(gateway, key_file)
    gateway.stop()


@pytest.fixture
def http(dev: DevStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=dev.url, follow_redirects=False, timeout=15) as client:
        yield client


# ---------------------------------------------------------------- helpers over plain HTTP


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.decode().rstrip("=")


def register(http: httpx.Client, redirect_uri: str, **metadata: Any) -> dict[str, Any]:
    answer = http.post("/dev/register", json={
        "redirect_uris": [redirect_uri], "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"], "client_name": "HTTP test",
        **metadata})
    assert answer.status_code == 201, answer.text
    client: dict[str, Any] = answer.json()
    return client


def authorize_path(client_id: str, redirect_uri: str, challenge: str | None,
                   **extra: str) -> str:
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
              "state": "st-" + uuid.uuid4().hex, "scope": "mcp offline_access", **extra}
    if challenge is not None:
        params |= {"code_challenge": challenge, "code_challenge_method": "S256"} | extra
    return "/dev/authorize?" + urlencode(params)


def hidden_fields(page: str) -> list[tuple[str, str]]:
    return [(html.unescape(k), html.unescape(v)) for k, v in
            re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)">', page)]


def sign_in(http: httpx.Client, path: str, *, org: str = "acme", user: str = "alice",
            roles: tuple[str, ...] = ("member",), decision: str = "allow",
            **profile: str) -> httpx.Response:
    page = http.get(path)
    assert page.status_code == 200, page.text
    assert "Development only" in page.text
    form = [*hidden_fields(page.text), ("org", org), ("user", user),
            *(("role", role) for role in roles), *profile.items(), ("decision", decision)]
    return http.post("/dev/authorize", content=urlencode(form),
                     headers={"Content-Type": "application/x-www-form-urlencoded"})


def redirected(answer: httpx.Response, redirect_uri: str) -> dict[str, str]:
    assert answer.status_code == 302, answer.text
    location = answer.headers["location"]
    assert location.startswith(redirect_uri + "?"), location
    return query_of(location)


def token(http: httpx.Client, **form: str) -> httpx.Response:
    return http.post("/dev/token", data=form)


@dataclass
class Grant:
    client_id: str
    redirect_uri: str
    code: str
    verifier: str


def grant_code(http: httpx.Client, **identity: Any) -> Grant:
    redirect_uri = "http://127.0.0.1:9/callback"  # never visited: the test reads the Location
    client = register(http, redirect_uri)
    verifier, challenge = pkce()
    answer = sign_in(http, authorize_path(client["client_id"], redirect_uri, challenge),
                     **identity)
    query = redirected(answer, redirect_uri)
    return Grant(client["client_id"], redirect_uri, query["code"], verifier)


def redeem(http: httpx.Client, grant: Grant, verifier: str | None = None) -> httpx.Response:
    return token(http, grant_type="authorization_code", code=grant.code,
                 redirect_uri=grant.redirect_uri, client_id=grant.client_id,
                 code_verifier=verifier or grant.verifier)


def refresh(http: httpx.Client, client_id: str, refresh_token: str) -> httpx.Response:
    return token(http, grant_type="refresh_token", refresh_token=refresh_token,
                 client_id=client_id)


async def whoami(dev: DevStack, access_token: str) -> dict[str, Any]:
    async with FastMcpClient(dev.mcp_url, auth=access_token) as client:
        result = await client.call_tool("whoami", {})
    data: dict[str, Any] = json.loads(text_of(result))
    return data


def text_of(result: Any) -> str:
    content = result.content[0]
    assert isinstance(content, TextContent)
    return content.text


# ---------------------------------------------------------------- discovery


def test_metadata_is_where_mcp_clients_look(dev: DevStack, http: httpx.Client) -> None:
    unauthenticated = http.post("/mcp", json={})
    assert unauthenticated.status_code == 401
    resource = http.get("/.well-known/oauth-protected-resource/mcp").json()
    assert resource["authorization_servers"] == [dev.issuer]
    documents = [http.get(path) for path in (
        "/.well-known/oauth-authorization-server/dev",  # RFC 8414, issuer with a path
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration/dev",
        "/dev/.well-known/openid-configuration",
    )]
    assert all(d.status_code == 200 for d in documents), [d.status_code for d in documents]
    metadata = documents[0].json()
    assert all(d.json() == metadata for d in documents)
    assert metadata["issuer"] == dev.issuer
    assert metadata["authorization_endpoint"] == dev.issuer + "/authorize"
    assert metadata["token_endpoint"] == dev.issuer + "/token"
    assert metadata["registration_endpoint"] == dev.issuer + "/register"
    assert metadata["jwks_uri"] == dev.issuer + "/jwks.json"
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["response_types_supported"] == ["code"]
    assert set(metadata["grant_types_supported"]) == {"authorization_code", "refresh_token"}
    assert metadata["client_id_metadata_document_supported"] is True
    assert metadata["authorization_response_iss_parameter_supported"] is True
    from_a_page = http.get(documents[0].url, headers={"Origin": "http://localhost:6274"})
    assert from_a_page.headers["access-control-allow-origin"] == "*"  # browser-based clients


# ---------------------------------------------------------------- real clients, real browser


class MemoryTokenStorage:
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


@dataclass
class SdkSession:
    echoed: str
    whoami: dict[str, Any]
    storage: MemoryTokenStorage


async def connect_with_the_sdk(
    mcp_url: str, browser: Browser, mode: str, *, user: str, roles: tuple[str, ...],
    name: str = "", email: str = "",
) -> SdkSession:
    """The official SDK's OAuth client, knowing only ``mcp_url``: it discovers, registers,
    sends Chromium through the sign-in page, reads the code at its loopback redirect URI."""
    page = await browser.new_page()
    storage = MemoryTokenStorage()
    async with LoopbackCallback() as callback:

        async def open_browser(authorization_url: str) -> None:
            await dev_sign_in(page, authorization_url, org="acme", user=user, roles=roles,
                              name=name, email=email)

        async def read_callback() -> AuthorizationCodeResult:
            answer = await callback.result()
            return AuthorizationCodeResult(code=answer["code"], state=answer.get("state"),
                                           iss=answer.get("iss"))

        provider = OAuthClientProvider(
            mcp_url,
            OAuthClientMetadata(client_name="SDK test",
                                redirect_uris=[AnyUrl(callback.redirect_uri)]),
            storage, open_browser, read_callback,
        )
        async with (
            httpx2.AsyncClient(auth=provider, timeout=httpx2.Timeout(60)) as http,
            SdkClient(streamable_http_client(mcp_url, http_client=http), mode=mode) as client,
        ):
            echoed = text_of(await client.call_tool("echo", {"text": "by URL alone"}))
            me = json.loads(text_of(await client.call_tool("whoami", {})))
    return SdkSession(echoed, me, storage)


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_the_mcp_sdk_client_connects_by_url_alone(
    dev: DevStack, browser: Browser, mode: str
) -> None:
    user = "sdk-" + uuid.uuid4().hex[:8]
    session = await connect_with_the_sdk(dev.mcp_url, browser, mode, user=user,
                                         roles=("admin",), name="Ada Lovelace",
                                         email="ada@example.com")
    me, storage = session.whoami, session.storage
    assert session.echoed == "by URL alone"
    assert (me["org_id"], me["user_id"], me["roles"]) == ("acme", user, ["admin"])
    assert storage.client is not None and storage.tokens is not None
    assert storage.client.token_endpoint_auth_method == "client_secret_basic"  # RFC 7591
    assert storage.tokens.refresh_token
    claims = jwt.decode(storage.tokens.access_token, options={"verify_signature": False})
    header = jwt.get_unverified_header(storage.tokens.access_token)
    assert header["typ"] == "at+jwt" and header["kid"] == "gatehouse-dev-1"
    assert (claims["iss"], claims["aud"], claims["sub"]) == (dev.issuer, dev.mcp_url, user)
    assert (claims["name"], claims["email"]) == ("Ada Lovelace", "ada@example.com")


@contextmanager
def gatehouse_up(cwd: Path) -> Iterator[tuple[str, str]]:
    """``gatehouse up`` with nothing configured, on free ports: its URL and its banner."""
    gateway_port, mcp_port = free_port(), free_port()
    log_path = cwd / "up.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "up", "--gateway-port", str(gateway_port),
             "--mcp-port", str(mcp_port)], cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")})
        try:
            deadline = time.monotonic() + 90
            while "Press Ctrl-C to stop." not in log_path.read_text():
                assert process.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
            yield f"http://127.0.0.1:{gateway_port}", log_path.read_text()
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)


async def test_a_client_connects_to_gatehouse_up_by_url_alone(browser: Browser) -> None:
    # Not pytest's tmp_path: as root, the embedded PostgreSQL's user must reach the folder.
    project = Path(tempfile.mkdtemp(prefix="gatehouse-up-"))
    try:
        with gatehouse_up(project) as (url, banner):
            assert f"give any MCP client {url}/mcp" in banner
            session = await connect_with_the_sdk(url + "/mcp", browser, "legacy",
                                                 user="grace", roles=("member",))
    finally:
        shutil.rmtree(project, ignore_errors=True)
    assert session.echoed == "by URL alone"
    assert (session.whoami["org_id"], session.whoami["user_id"]) == ("acme", "grace")


# The test keeps the client's tokens in memory on purpose (one run, nothing to persist).
@pytest.mark.filterwarnings("ignore:Using in-memory token storage:UserWarning")
async def test_fastmcp_oauth_client_connects_by_url_alone(
    dev: DevStack, browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = await browser.new_page()
    user = "fastmcp-" + uuid.uuid4().hex[:8]
    signed_in: list[asyncio.Task[str]] = []

    def open_in_chromium(url: str) -> bool:  # FastMCP's webbrowser.open, driven by Playwright
        signed_in.append(asyncio.get_running_loop().create_task(
            dev_sign_in(page, url, org="globex", user=user, roles=("member", "viewer"))))
        return True

    monkeypatch.setattr("fastmcp.client.auth.oauth.webbrowser.open", open_in_chromium)
    async with asyncio.timeout(120), FastMcpClient(dev.mcp_url, auth="oauth") as client:
        echoed = await client.call_tool("echo", {"text": "fastmcp by URL"})
        me = json.loads(text_of(await client.call_tool("whoami", {})))
    assert text_of(echoed) == "fastmcp by URL"
    assert (me["org_id"], me["user_id"], me["roles"]) == ("globex", user, ["member", "viewer"])
    landed = await signed_in[0]
    assert urlsplit(landed).hostname == "localhost" and "code=" in landed


# ---------------------------------------------------------------- identity and tokens


async def test_tokens_carry_who_was_chosen_and_the_gateway_accepts_them(
    dev: DevStack, http: httpx.Client
) -> None:
    user = "u-" + uuid.uuid4().hex[:8]
    grant = grant_code(http, org="initech", user=user, roles=("owner", "viewer"),
                       name="Peter Gibbons", email="peter@initech.example")
    answer = redeem(http, grant)
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    tokens = answer.json()
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 3600
    assert tokens["scope"] == "mcp offline_access" and tokens["refresh_token"]
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert {k: claims[k] for k in ("org_id", "sub", "roles", "name", "email", "client_id")} == {
        "org_id": "initech", "sub": user, "roles": ["owner", "viewer"], "name": "Peter Gibbons",
        "email": "peter@initech.example", "client_id": grant.client_id}
    me = await whoami(dev, tokens["access_token"])
    assert (me["org_id"], me["user_id"], me["roles"]) == ("initech", user, ["owner", "viewer"])


def test_the_sign_in_page_refuses_an_identity_the_gateway_would_refuse(
    http: httpx.Client
) -> None:
    redirect_uri = "http://127.0.0.1:9/callback"
    client = register(http, redirect_uri)
    path = authorize_path(client["client_id"], redirect_uri, pkce()[1])
    refusals: list[tuple[dict[str, Any], str]] = [
        ({"org": "_platform"}, "reserved for Gatehouse"),
        ({"user": "alice smith"}, "without spaces"),
        ({"roles": ()}, "Choose at least one role"),
        ({"roles": ("superuser",)}, "Choose at least one role"),
        ({"email": "not-an-address"}, "needs an @"),
    ]
    for identity, says in refusals:
        answer = sign_in(http, path, **identity)
        assert answer.status_code == 400 and "location" not in answer.headers
        assert says in html.unescape(answer.text) and "Development only" in answer.text


def test_cancel_sends_access_denied_back_with_the_issuer(
    dev: DevStack, http: httpx.Client
) -> None:
    redirect_uri = "http://127.0.0.1:9/callback"
    client = register(http, redirect_uri)
    path = authorize_path(client["client_id"], redirect_uri, pkce()[1], state="keep-me")
    query = redirected(sign_in(http, path, decision="deny"), redirect_uri)
    assert (query["error"], query["state"]) == ("access_denied", "keep-me")
    assert query["iss"] == dev.issuer
    assert "code" not in query


# ---------------------------------------------------------------- refusals


def test_a_wrong_code_verifier_is_refused_and_spends_the_code(http: httpx.Client) -> None:
    grant = grant_code(http)
    wrong = redeem(http, grant, verifier=pkce()[0])
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    assert "access_token" not in wrong.text
    right_too_late = redeem(http, grant)
    assert right_too_late.status_code == 400
    assert right_too_late.json()["error"] == "invalid_grant"


def test_a_token_request_without_code_verifier_is_refused(http: httpx.Client) -> None:
    grant = grant_code(http)
    answer = token(http, grant_type="authorization_code", code=grant.code,
                   redirect_uri=grant.redirect_uri, client_id=grant.client_id)
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_request"


def test_a_reused_code_is_refused_and_revokes_what_it_granted(http: httpx.Client) -> None:
    grant = grant_code(http)
    first = redeem(http, grant)
    assert first.status_code == 200, first.text
    again = redeem(http, grant)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    # RFC 6749 §4.1.2: the replay revokes the tokens the code granted (refresh tokens here;
    # access tokens are self-contained JWTs and expire on their own).
    revoked = refresh(http, grant.client_id, first.json()["refresh_token"])
    assert revoked.status_code == 400 and revoked.json()["error"] == "invalid_grant"


def test_a_code_is_bound_to_its_client_and_redirect_uri(http: httpx.Client) -> None:
    grant = grant_code(http)
    other = register(http, grant.redirect_uri)
    stolen = token(http, grant_type="authorization_code", code=grant.code,
                   redirect_uri=grant.redirect_uri, client_id=other["client_id"],
                   code_verifier=grant.verifier)
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"
    grant = grant_code(http)
    moved = token(http, grant_type="authorization_code", code=grant.code,
                  redirect_uri="http://127.0.0.1:9/elsewhere", client_id=grant.client_id,
                  code_verifier=grant.verifier)
    assert moved.status_code == 400 and moved.json()["error"] == "invalid_grant"


def test_an_unregistered_redirect_uri_is_refused_without_redirecting(
    http: httpx.Client
) -> None:
    client = register(http, "http://127.0.0.1:9/callback")
    for evil in ("https://evil.example/callback", "http://127.0.0.1:9/callback/../steal",
                 "http://localhost.evil.example:9/callback"):
        answer = http.get(authorize_path(client["client_id"], evil, pkce()[1]))
        assert answer.status_code == 400 and "location" not in answer.headers, evil
        assert answer.json()["error"] == "invalid_request"
    posted = sign_in_post_only(http, client["client_id"], "https://evil.example/callback")
    assert posted.status_code == 400 and "location" not in posted.headers


def sign_in_post_only(http: httpx.Client, client_id: str, redirect_uri: str) -> httpx.Response:
    """The sign-in form posted directly, never shown: the same checks apply."""
    query = authorize_path(client_id, redirect_uri, pkce()[1]).split("?", 1)[1]
    form = f"{query}&org=acme&user=alice&role=member&decision=allow"
    return http.post("/dev/authorize", content=form,
                     headers={"Content-Type": "application/x-www-form-urlencoded"})


def test_registration_refuses_redirect_uris_that_are_neither_https_nor_loopback(
    http: httpx.Client
) -> None:
    for uri in ("http://evil.example/callback", "https://app.example/cb#frag", "javascript:x"):
        answer = http.post("/dev/register", json={"redirect_uris": [uri]})
        assert answer.status_code == 400, uri
        assert answer.json()["error"] in ("invalid_redirect_uri", "invalid_client_metadata")
    for body in (b"[]", b"{", b"", b'{"redirect_uris": "x"}'):
        bad = http.post("/dev/register", content=body,
                        headers={"Content-Type": "application/json"})
        assert bad.status_code == 400 and bad.json()["error"] == "invalid_client_metadata"


@pytest.mark.parametrize("pkce_params", [
    {"code_challenge_method": "plain"},
    {"code_challenge_method": ""},
    {"code_challenge": "", "code_challenge_method": ""},
    {"code_challenge": "", "code_challenge_method": "S256"},
], ids=["plain", "method-missing", "pkce-missing", "challenge-missing"])
def test_pkce_other_than_s256_is_refused(
    dev: DevStack, http: httpx.Client, pkce_params: dict[str, str]
) -> None:
    redirect_uri = "http://127.0.0.1:9/callback"
    client = register(http, redirect_uri)
    verifier = pkce()[0]  # sent as a challenge: plain PKCE would compare it as it is
    params = {"response_type": "code", "client_id": client["client_id"],
              "redirect_uri": redirect_uri, "state": "s1", "code_challenge": verifier,
              "code_challenge_method": "S256", **pkce_params}
    params = {k: v for k, v in params.items() if v}
    answer = http.get("/dev/authorize?" + urlencode(params))
    query = redirected(answer, redirect_uri)
    assert query["error"] == "invalid_request" and "code" not in query
    assert (query["state"], query["iss"]) == ("s1", dev.issuer)
    posted = http.post("/dev/authorize", content=urlencode(
        {**params, "org": "acme", "user": "alice", "role": "member", "decision": "allow"}),
        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert "code" not in redirected(posted, redirect_uri)


def test_a_token_for_another_resource_is_refused(dev: DevStack, http: httpx.Client) -> None:
    redirect_uri = "http://127.0.0.1:9/callback"
    client = register(http, redirect_uri)
    path = authorize_path(client["client_id"], redirect_uri, pkce()[1],
                          resource="https://other.example/mcp")
    query = redirected(http.get(path), redirect_uri)
    assert query["error"] == "invalid_target"
    fine = authorize_path(client["client_id"], redirect_uri, pkce()[1], resource=dev.mcp_url)
    assert http.get(fine).status_code == 200


def test_refresh_tokens_rotate_and_a_reused_one_ends_the_family(
    dev: DevStack, http: httpx.Client
) -> None:
    grant = grant_code(http)
    first = redeem(http, grant).json()
    second = refresh(http, grant.client_id, first["refresh_token"])
    assert second.status_code == 200, second.text
    rotated = second.json()
    assert rotated["refresh_token"] != first["refresh_token"]
    claims = jwt.decode(rotated["access_token"], options={"verify_signature": False})
    assert claims["sub"] == "alice"
    third = refresh(http, grant.client_id, rotated["refresh_token"])
    assert third.status_code == 200, third.text
    replayed = refresh(http, grant.client_id, first["refresh_token"])
    assert replayed.status_code == 400 and replayed.json()["error"] == "invalid_grant"
    # The replay says the family leaked: its newest refresh token stops working too.
    newest = refresh(http, grant.client_id, third.json()["refresh_token"])
    assert newest.status_code == 400 and newest.json()["error"] == "invalid_grant"


def test_a_refresh_token_works_only_for_its_client(http: httpx.Client) -> None:
    grant = grant_code(http)
    tokens = redeem(http, grant).json()
    other = register(http, grant.redirect_uri)
    answer = refresh(http, other["client_id"], tokens["refresh_token"])
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"


def test_confidential_clients_must_authenticate(http: httpx.Client) -> None:
    redirect_uri = "http://127.0.0.1:9/callback"
    client = register(http, redirect_uri, token_endpoint_auth_method="client_secret_basic")
    assert client["client_secret"]
    verifier, challenge = pkce()
    query = redirected(sign_in(http, authorize_path(client["client_id"], redirect_uri,
                                                    challenge)), redirect_uri)
    form = {"grant_type": "authorization_code", "code": query["code"],
            "redirect_uri": redirect_uri, "code_verifier": verifier}
    anonymous = token(http, client_id=client["client_id"], **form)
    assert anonymous.status_code in (400, 401)
    assert anonymous.json()["error"] == "invalid_client"
    wrong = http.post("/dev/token", data=form, auth=(client["client_id"], "wrong"))
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"


def test_bad_input_gets_an_oauth_error_never_a_500(http: httpx.Client) -> None:
    client = register(http, "http://127.0.0.1:9/callback")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    answers = {
        "huge": http.post("/dev/token", content=b"a=" + b"x" * 70_000, headers=form),
        "not-utf8": http.post("/dev/token", content=b"grant_type=\xff\xfe", headers=form),
        "no-grant": http.post("/dev/token", data={}),
        "unknown-grant": http.post("/dev/token", data={"grant_type": "password"}),
        "quote-in-uri": http.get(authorize_path(client["client_id"],
                                                'http://127.0.0.1:9/c"b\\', pkce()[1])),
        "unknown-client": http.get(authorize_path("nobody", "http://127.0.0.1:9/c", "x" * 43)),
    }
    for case, answer in answers.items():
        assert answer.status_code in (400, 401), (case, answer.status_code, answer.text)
        assert answer.json()["error"] in ("invalid_request", "unsupported_grant_type",
                                          "invalid_client", "unsupported_response_type"), case
    assert http.get("/dev/token").status_code == 405
    # Known client, one registered redirect URI: the error goes back there (RFC 6749 4.1.2.1).
    no_type = http.get("/dev/authorize?client_id=" + client["client_id"])
    assert redirected(no_type, "http://127.0.0.1:9/callback")["error"] == (
        "unsupported_response_type")


# ---------------------------------------------------------------- Client ID Metadata Documents


@pytest.fixture(scope="module")
def documents() -> Iterator[tuple[str, dict[str, Any]]]:
    """A loopback web server publishing client metadata documents at /clients/{name}."""
    published: dict[str, Any] = {}

    async def serve(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name == "moved":
            raise web.HTTPFound("/clients/app")
        if name not in published:
            raise web.HTTPNotFound()
        return web.json_response(published[name])

    app = web.Application()
    app.router.add_get("/clients/{name}", serve)
    running = Running(app)
    yield running.url, published
    running.stop()


def test_a_client_id_metadata_document_client_completes_the_flow(
    dev: DevStack, http: httpx.Client, documents: tuple[str, dict[str, Any]]
) -> None:
    base, published = documents
    client_id = f"{base}/clients/app"
    redirect_uri = "http://127.0.0.1:9/cimd-callback"
    published["app"] = {"client_id": client_id, "client_name": "CIMD app",
                        "redirect_uris": [redirect_uri],
                        "grant_types": ["authorization_code", "refresh_token"]}
    verifier, challenge = pkce()
    answer = sign_in(http, authorize_path(client_id, redirect_uri, challenge))
    query = redirected(answer, redirect_uri)
    tokens = token(http, grant_type="authorization_code", code=query["code"],
                   redirect_uri=redirect_uri, client_id=client_id, code_verifier=verifier)
    assert tokens.status_code == 200, tokens.text
    claims = jwt.decode(tokens.json()["access_token"], options={"verify_signature": False})
    assert claims["client_id"] == client_id
    assert refresh(http, client_id, tokens.json()["refresh_token"]).status_code == 200


def test_a_client_id_metadata_document_must_list_the_redirect_uri(
    http: httpx.Client, documents: tuple[str, dict[str, Any]]
) -> None:
    base, published = documents
    client_id = f"{base}/clients/narrow"
    published["narrow"] = {"client_id": client_id, "redirect_uris": ["http://127.0.0.1:9/ok"]}
    answer = http.get(authorize_path(client_id, "http://127.0.0.1:9/not-listed", pkce()[1]))
    assert answer.status_code == 400 and "location" not in answer.headers
    assert answer.json()["error"] == "invalid_request"


@pytest.mark.parametrize("case", ["impostor", "missing", "moved", "secret", "evil-redirect"])
def test_a_client_id_metadata_document_that_does_not_identify_the_client_is_refused(
    http: httpx.Client, documents: tuple[str, dict[str, Any]], case: str
) -> None:
    base, published = documents
    client_id = f"{base}/clients/{case}"
    redirect_uri = "http://127.0.0.1:9/cb"
    published.update({
        "impostor": {"client_id": f"{base}/clients/someone-else", "redirect_uris": [redirect_uri]},
        "secret": {"client_id": f"{base}/clients/secret", "redirect_uris": [redirect_uri],
                   "token_endpoint_auth_method": "client_secret_basic"},
        "evil-redirect": {"client_id": f"{base}/clients/evil-redirect",
                          "redirect_uris": ["http://evil.example/cb"]},
    })
    answer = http.get(authorize_path(client_id, redirect_uri, pkce()[1]))
    assert answer.status_code == 400 and "location" not in answer.headers
    assert answer.json()["error"] == "invalid_client"


def test_client_id_urls_must_be_https_or_loopback(http: httpx.Client) -> None:
    for client_id in ("http://evil.example/client.json", "https://example.com",
                      "ftp://127.0.0.1/client.json"):
        answer = http.get(authorize_path(client_id, "http://127.0.0.1:9/cb", pkce()[1]))
        assert answer.status_code == 400, client_id
        assert answer.json()["error"] == "invalid_client"


# ---------------------------------------------------------------- only in development


def test_nothing_is_served_when_an_issuer_is_configured(
    start_gateway: GatewayFactory, dev: DevStack, idp: OidcProvider
) -> None:
    # The development key is there, but GATEHOUSE_ISSUER names a real identity provider.
    gateway = start_gateway(dev_issuer_key_file=str(dev.key_file))
    with httpx.Client(base_url=gateway.url, timeout=15) as client:
        for path in ("/dev/authorize?response_type=code&client_id=x",
                     "/.well-known/oauth-authorization-server/dev",
                     "/.well-known/oauth-authorization-server",
                     "/.well-known/openid-configuration/dev"):
            assert client.get(path).status_code == 404, path
        assert client.post("/dev/token", data={"grant_type": "refresh_token"}).status_code == 404
        assert client.post("/dev/register", json={}).status_code == 404
        resource = client.get("/.well-known/oauth-protected-resource/mcp").json()
    assert resource["authorization_servers"] == [idp.issuer]
    assert "development authorization server off" in gateway.log_text()
