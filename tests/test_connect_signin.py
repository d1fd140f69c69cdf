"""Signing in to /connect through the gateway's own issuer (code + PKCE + nonce).

A dedicated ``oidc-provider`` is the issuer the gateway trusts *and* signs in with; its sign-in
client's redirect URI names the gateway's port, chosen before either starts. Code-flow ID tokens
carry only ``sub``, so the gateway asks for its audience as RFC 8707 ``resource`` and reads the
organisation from the verified access token. Browsers: Chromium (Playwright) or httpx clients.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx
import jwt
import pytest
import redis
from cryptography.hazmat.primitives.asymmetric import rsa
from playwright.async_api import Browser, expect

from gateway.connect.signin import state_key
from gateway.connect.signin_oidc import validate_id_token
from gateway.errors import SigninError
from gateway.jwks import JwksCache
from oauth.connect import s256
from tests.support.browser import (
    query_of,
    sign_in_at_provider,
    sign_in_on_provider_page,
    start_server_on,
    with_query,
)
from tests.support.oidc_provider import OidcProvider
from tests.support.processes import Server, free_port

CLIENT_ID = "gatehouse-signin"
CLIENT_SECRET = "signin-client-secret"
ORG = "signin-org"
HOSTILE = '<script>alert("x")</script>'


@dataclass(frozen=True)
class SigninStack:
    gateway: Server
    provider: OidcProvider
    redis_url: str

    @property
    def callback(self) -> str:
        return self.gateway.url + "/connect/signin/callback"

    def record(self, state: str) -> dict[str, str] | None:
        raw = redis.Redis.from_url(self.redis_url).get(state_key(state))
        return None if raw is None else dict(json.loads(raw))

    def rewrite(self, state: str, **changes: str) -> None:
        record = self.record(state) or {}
        redis.Redis.from_url(self.redis_url).set(state_key(state), json.dumps(record | changes))

    def user(self, org: str | None = ORG) -> str:
        """A fresh login; with ``org`` the provider puts that organisation in its tokens."""
        name = "si-" + uuid.uuid4().hex[:10]
        if org is not None:
            self.provider.access_token(org, name)
        return name


@pytest.fixture(scope="module")
def stack(gateway_env: dict[str, str], work_dir: Path, redis_url: str) -> Iterator[SigninStack]:
    port = free_port()  # the redirect URI must be registered before the gateway exists
    public_url = f"http://127.0.0.1:{port}"
    client = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
              "grant_types": ["authorization_code"], "response_types": ["code"],
              "redirect_uris": [public_url + "/connect/signin/callback"],
              "token_endpoint_auth_method": "client_secret_basic"}
    with OidcProvider(clients=[client]) as provider:
        gateway = start_server_on("gateway.app:create_app", {
            **gateway_env, "GATEHOUSE_PUBLIC_URL": public_url, "GATEHOUSE_ISSUER": provider.issuer,
            "GATEHOUSE_JWKS_URL": provider.jwks_url, "GATEHOUSE_AUDIENCE": provider.audience,
            "GATEHOUSE_SIGNIN_CLIENT_ID": CLIENT_ID, "GATEHOUSE_SIGNIN_RESOURCE": provider.audience,
            "GATEHOUSE_SIGNIN_CLIENT_SECRET": CLIENT_SECRET,
        }, port, work_dir, "signin-gateway")
        try:
            yield SigninStack(gateway, provider, redis_url)
        finally:
            gateway.stop()


@pytest.fixture
def agent(stack: SigninStack) -> Iterator[httpx.Client]:
    """A browser stand-in for the gateway's origin only (its own cookie jar, no redirects)."""
    with httpx.Client(base_url=stack.gateway.url, follow_redirects=False, timeout=15) as client:
        yield client


def start(agent: httpx.Client) -> str:
    answer = agent.get("/connect/signin")
    assert answer.status_code == 303, answer.text
    return str(answer.headers["location"])


def call_back(agent: httpx.Client, query: str) -> httpx.Response:
    return agent.get("/connect/signin/callback?" + query)


def assert_refused(agent: httpx.Client, answer: httpx.Response, phrase: str) -> None:
    assert answer.status_code == 400 and answer.headers["x-frame-options"] == "DENY"
    assert phrase in answer.text and "Nothing was stored" in answer.text, answer.text
    assert "gatehouse_connect=" not in answer.headers.get("set-cookie", "")
    assert agent.get("/connect").status_code == 401  # still no session in this browser


async def test_sign_in_to_connect_in_a_browser(stack: SigninStack, browser: Browser) -> None:
    user = await asyncio.to_thread(stack.user)
    page = await browser.new_page()
    await page.goto(stack.gateway.url + "/connect")
    await page.get_by_role("link", name="Sign in").click()
    await sign_in_on_provider_page(page, stack.provider.issuer, user)
    await page.wait_for_url(stack.gateway.url + "/connect")
    await expect(page.get_by_role("heading", name="Connected accounts")).to_be_visible()
    await expect(page.locator("p.who")).to_contain_text(f"user {user} of organisation {ORG}")
    await page.screenshot(path="/tmp/gatehouse-connect-signed-in.png", full_page=True)
    cookies = {c["name"] for c in await page.context.cookies(stack.gateway.url)}
    assert "gatehouse_connect" in cookies and "gatehouse_signin" not in cookies


def test_authorization_request_uses_pkce_nonce_and_the_exact_redirect_uri(
    stack: SigninStack, agent: httpx.Client
) -> None:
    page = agent.get("/connect")
    assert page.status_code == 401 and 'href="/connect/signin"' in page.text
    evil = "https://evil.example/steal"
    answer = agent.get(f"/connect/signin?next={evil}&redirect_uri={evil}&return_to={evil}")
    location = answer.headers["location"]
    assert answer.status_code == 303 and location.startswith(stack.provider.issuer + "/auth?")
    assert "evil" not in location
    query = query_of(location)
    assert query["response_type"] == "code" and query["client_id"] == CLIENT_ID
    assert query["redirect_uri"] == stack.callback
    assert query["scope"].split() == ["openid"] and query["resource"] == stack.provider.audience
    assert query["code_challenge_method"] == "S256" and len(query["nonce"]) >= 43
    record = stack.record(query["state"])
    assert record is not None and record["nonce"] == query["nonce"]
    assert query["code_challenge"] == s256(record["verifier"])
    assert record["verifier"] not in location and record["verifier"] not in str(answer.headers)
    cookie = [part.strip().lower() for part in answer.headers["set-cookie"].split(";")]
    assert cookie[0].startswith("gatehouse_signin=") and "httponly" in cookie
    assert "samesite=lax" in cookie and "path=/" in cookie
    assert 0 < redis.Redis.from_url(stack.redis_url).ttl(state_key(query["state"])) <= 600


def test_callback_without_state_is_refused(stack: SigninStack, agent: httpx.Client) -> None:
    back = sign_in_at_provider(start(agent), stack.user(), back_to=stack.callback)
    assert_refused(agent, call_back(agent, with_query(back, state=None)), "no valid state")
    assert_refused(agent, call_back(agent, with_query(back, state="x" * 40)), "already used")


def test_state_of_another_browser_is_refused_and_consumed(
    stack: SigninStack, agent: httpx.Client
) -> None:
    back = sign_in_at_provider(start(agent), stack.user(), back_to=stack.callback)
    with httpx.Client(base_url=stack.gateway.url, follow_redirects=False) as other:
        start(other)  # its own sign-in cookie: a real browser, just not the one that started
        assert_refused(other, call_back(other, urlsplit(back).query), "another browser")
    # The attempt consumed the state: the right browser cannot complete it any more.
    assert_refused(agent, call_back(agent, urlsplit(back).query), "already used")


def test_replayed_callback_is_refused(stack: SigninStack, agent: httpx.Client) -> None:
    user = stack.user()
    back = sign_in_at_provider(start(agent), user, back_to=stack.callback)
    done = call_back(agent, urlsplit(back).query)
    assert done.status_code == 303 and done.headers["location"] == "/connect"
    assert "gatehouse_connect=" in done.headers["set-cookie"]
    page = agent.get("/connect")
    assert page.status_code == 200 and user in page.text and ORG in page.text
    agent.cookies.clear()
    start(agent)  # a sign-in cookie, but this state is gone
    assert_refused(agent, call_back(agent, urlsplit(back).query), "already used")


@pytest.mark.parametrize(("iss", "phrase"), [
    ("http://127.0.0.1:1/evil", "another issuer"), (None, "did not name its issuer"),
])
def test_wrong_or_missing_iss_is_refused(
    stack: SigninStack, agent: httpx.Client, iss: str | None, phrase: str
) -> None:
    back = sign_in_at_provider(start(agent), stack.user(), back_to=stack.callback)
    assert query_of(back)["iss"] == stack.provider.issuer
    assert_refused(agent, call_back(agent, with_query(back, iss=iss)), phrase)


def test_nonce_mismatch_is_refused(stack: SigninStack, agent: httpx.Client) -> None:
    authorize = start(agent)
    stack.rewrite(query_of(authorize)["state"], nonce="n" * 43)  # the ID token keeps its own
    back = sign_in_at_provider(authorize, stack.user(), back_to=stack.callback)
    assert_refused(agent, call_back(agent, urlsplit(back).query), "nonce")


def test_wrong_verifier_or_tampered_code_is_refused(
    stack: SigninStack, agent: httpx.Client
) -> None:
    authorize = start(agent)
    stack.rewrite(query_of(authorize)["state"], verifier="v" * 64)
    back = sign_in_at_provider(authorize, stack.user(), back_to=stack.callback)
    assert_refused(agent, call_back(agent, urlsplit(back).query), "invalid_grant")
    back = sign_in_at_provider(start(agent), stack.user(), back_to=stack.callback)
    tampered = with_query(back, code=query_of(back)["code"][:-2] + "xx")
    assert_refused(agent, call_back(agent, tampered), "invalid_grant")


def test_provider_error_is_shown_escaped(stack: SigninStack, agent: httpx.Client) -> None:
    state = query_of(start(agent))["state"]
    answer = agent.get("/connect/signin/callback", params={
        "state": state, "error": HOSTILE, "iss": stack.provider.issuer})
    assert_refused(agent, answer, "did not sign you in")
    assert HOSTILE not in answer.text and "&lt;script&gt;" in answer.text


def test_user_without_an_organization_is_refused(stack: SigninStack, agent: httpx.Client) -> None:
    back = urlsplit(sign_in_at_provider(start(agent), stack.user(org=None), back_to=stack.callback))
    assert_refused(agent, call_back(agent, back.query), "organisation")


def test_signin_not_configured_is_404_and_offers_no_link(gateway: Server) -> None:
    for path in ("/connect/signin", "/connect/signin/callback?state=" + "s" * 43):
        assert httpx.get(gateway.url + path, follow_redirects=False).status_code == 404
    assert "/connect/signin" not in httpx.get(gateway.url + "/connect").text


def _sign(stack: SigninStack, claims: dict[str, Any], *, key: Any = None, alg: str = "RS256",
          **header: Any) -> str:
    return jwt.encode(claims, key or stack.provider.private_key, algorithm=alg,
                      headers={"kid": stack.provider.kid, **header})


@pytest.mark.parametrize(("forge", "phrase"), [
    (lambda s, c: _sign(s, c, key=rsa.generate_private_key(public_exponent=65537,
                                                           key_size=2048)), "signature is wrong"),
    (lambda s, c: jwt.encode(c, "", algorithm="none", headers={"kid": s.provider.kid}),
     "algorithm"),
    (lambda s, c: _sign(s, c, key="k" * 32, alg="HS256"), "algorithm"),
    (lambda s, c: _sign(s, c | {"aud": "someone-else"}), "someone else"),
    (lambda s, c: _sign(s, c | {"aud": [CLIENT_ID, "other"], "azp": "other"}), "someone else"),
    (lambda s, c: _sign(s, c | {"iss": "http://127.0.0.1:1"}), "someone else"),
    (lambda s, c: _sign(s, c | {"exp": int(time.time()) - 600}), "expired"),
    (lambda s, c: _sign(s, c | {"nonce": "another"}), "nonce"),
    (lambda s, c: _sign(s, {k: v for k, v in c.items() if k != "nonce"}), "nonce"),
    (lambda s, c: _sign(s, c, typ="at+jwt"), "access token"),
    (lambda s, c: _sign(s, c, kid="unknown-key"), "not signed by the issuer"),
    (lambda s, c: _sign(s, c | {"exp": str(c["exp"])}), "integer time"),
], ids=["other-key", "alg-none", "hs256", "aud", "azp", "iss", "expired", "nonce",
        "no-nonce", "at+jwt", "unknown-kid", "string-exp"])
async def test_forged_id_tokens_are_refused(stack: SigninStack, forge: Any, phrase: str) -> None:
    nonce = "expected-nonce"
    async with aiohttp.ClientSession() as http:
        keys = JwksCache(stack.provider.jwks_url, http, ttl=60, cooldown=0, fetch_timeout=2)
        options: dict[str, Any] = {"jwks": keys, "issuer": stack.provider.issuer, "skew": 30,
                                   "nonce": nonce, "client_id": CLIENT_ID, "max_bytes": 8192,
                                   "algorithms": ["RS256"]}
        now = int(time.time())
        genuine = {"iss": stack.provider.issuer, "sub": "alice", "aud": CLIENT_ID, "iat": now,
                   "exp": now + 300, "nonce": nonce}
        assert (await validate_id_token(_sign(stack, genuine), **options))["sub"] == "alice"
        with pytest.raises(SigninError, match=phrase):
            await validate_id_token(forge(stack, genuine), **options)
