"""SECURITY.md 25-30 and 32-34: the OAuth connect flow under attack, over plain HTTP.

A real ``oidc-provider`` is the OAuth provider (it advertises RFC 9207 ``iss`` and enforces
PKCE when a challenge was sent); browsers are httpx clients whose session cookie is carried by
hand, so every test says exactly which browser sends what.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
import redis
from starlette.responses import Response

from gateway.connect.session import BrowserSession, SessionStore
from oauth.connect import s256, state_key
from oauth.vault import TokenBundle
from tests.conftest import ConnectStackFactory
from tests.support.browser import (
    ConnectStack,
    GatewayBrowser,
    query_of,
    sign_in_at_provider,
    with_query,
)
from tests.support.oidc_provider import OidcProvider

STATE_TTL = 4
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture(scope="module")
def stack(start_connect_stack: ConnectStackFactory) -> ConnectStack:
    return start_connect_stack(state_ttl=STATE_TTL)


@pytest.fixture
def user(stack: ConnectStack, idp: OidcProvider) -> str:
    return stack.new_user(idp, "acme")


@pytest.fixture
def browser(stack: ConnectStack, user: str) -> Iterator[GatewayBrowser]:
    agent = GatewayBrowser(stack)
    assert agent.open_link(stack.link("acme", user)).status_code == 303
    yield agent
    agent.close()


def _assert_rejected(browser: GatewayBrowser, response: httpx.Response, phrase: str) -> None:
    assert response.status_code == 303 and response.headers["location"] == "/connect"
    status = browser.status_text()
    assert "Not connected" in status and phrase in status, status


# 25 --------------------------------------------------------------------------------------------

def test_callback_without_state_is_rejected(
    stack: ConnectStack, browser: GatewayBrowser, user: str
) -> None:
    back = sign_in_at_provider(browser.start(), user)
    answer = browser.callback("idp", with_query(back, state=None))
    _assert_rejected(browser, answer, "no valid state")
    assert stack.connection("acme", user) is None


def test_state_from_another_browser_is_rejected(
    stack: ConnectStack, browser: GatewayBrowser, user: str
) -> None:
    back = sign_in_at_provider(browser.start(), user)
    other = GatewayBrowser(stack)  # the same user's second session: still another browser
    other.open_link(stack.link("acme", user))
    _assert_rejected(other, other.callback("idp", urlsplit(back).query), "another browser")
    # And a browser with no session at all is refused before anything reaches mcp_server.
    bare = httpx.get(back, follow_redirects=False)
    assert bare.status_code == 400 and "Nothing was stored" in bare.text
    assert stack.connection("acme", user) is None
    # The state was consumed by the failed attempt: the right browser cannot use it either.
    _assert_rejected(browser, browser.callback("idp", urlsplit(back).query), "already")
    assert stack.connection("acme", user) is None


def test_replayed_callback_is_rejected(
    stack: ConnectStack, browser: GatewayBrowser, user: str
) -> None:
    back = sign_in_at_provider(browser.start(), user)
    assert browser.callback("idp", urlsplit(back).query).status_code == 303
    assert f"Connected Test IdP as {user}" in browser.status_text()
    version = stack.connection("acme", user)
    _assert_rejected(browser, browser.callback("idp", urlsplit(back).query), "already")
    assert stack.connection("acme", user) == version


def test_expired_state_is_rejected(
    stack: ConnectStack, browser: GatewayBrowser, user: str
) -> None:
    back = sign_in_at_provider(browser.start(), user)
    # The state lives no longer than its TTL; expire it now rather than wait that long.
    store, key = redis.Redis.from_url(stack.redis_url), state_key(query_of(back)["state"])
    assert 0 < store.ttl(key) <= STATE_TTL
    store.expire(key, 0)
    _assert_rejected(browser, browser.callback("idp", urlsplit(back).query), "expired")
    assert stack.connection("acme", user) is None


# 26 --------------------------------------------------------------------------------------------

def test_authorization_request_uses_s256_and_exchange_needs_the_verifier(
    stack: ConnectStack, browser: GatewayBrowser, user: str
) -> None:
    query = query_of(browser.start())
    assert query["code_challenge_method"] == "S256"
    store = redis.Redis.from_url(stack.redis_url)
    record = json.loads(store.get(state_key(query["state"])) or b"{}")
    assert query["code_challenge"] == s256(record["verifier"])
    assert "verifier" not in str(query) and record["verifier"] not in str(query)
    # A wrong verifier at the exchange is refused by the provider: the verifier is what is sent.
    record["verifier"] = "x" * 64
    store.set(state_key(query["state"]), json.dumps(record), ex=STATE_TTL)
    authorize = f"{stack.provider.issuer}/auth?{urlencode(query)}"
    back = sign_in_at_provider(authorize, user)
    _assert_rejected(browser, browser.callback("idp", urlsplit(back).query), "did not")
    assert stack.connection("acme", user) is None


# 27 --------------------------------------------------------------------------------------------

def test_redirect_uri_is_exact_and_nothing_redirects_elsewhere(
    stack: ConnectStack, browser: GatewayBrowser, user: str
) -> None:
    evil = "https://evil.example/steal"
    answer = browser.post("/oauth/idp/start?next=" + evil + "&return_to=" + evil,
                          {"csrf_token": browser.csrf(), "redirect_uri": evil, "next": evil})
    location = answer.headers["location"]
    assert location.startswith(stack.provider.issuer + "/auth?")
    assert query_of(location)["redirect_uri"] == f"{stack.public_url}/oauth/idp/callback"
    assert "evil" not in location
    back = sign_in_at_provider(location, user)
    done = browser.callback("idp", urlsplit(back).query + "&next=" + evil + "&return_to=" + evil)
    assert done.headers["location"] == "/connect"
    for path in ("/connect?next=" + evil, "/connect?return_to=" + evil):
        assert "evil" not in browser.get(path).headers.get("location", "")
    # The provider itself refuses any other redirect_uri for this client.
    tampered = location.replace("%2Foauth%2Fidp%2Fcallback", "%2Foauth%2Fidp%2Fcallback%2Fx")
    refused = httpx.get(tampered, follow_redirects=False)
    assert refused.status_code == 400 and "redirect_uri" in refused.text


# 28 --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("iss", "phrase"), [
    ("http://127.0.0.1:1/evil", "another issuer"),
    (None, "did not name its issuer"),
])
def test_wrong_or_missing_iss_is_rejected(
    stack: ConnectStack, browser: GatewayBrowser, user: str, iss: str | None, phrase: str
) -> None:
    back = sign_in_at_provider(browser.start(), user)
    assert query_of(back)["iss"] == stack.provider.issuer  # the provider does send it
    _assert_rejected(browser, browser.callback("idp", with_query(back, iss=iss)), phrase)
    assert stack.connection("acme", user) is None


# 29 --------------------------------------------------------------------------------------------

def test_code_for_provider_a_replayed_on_provider_b_is_rejected(
    stack: ConnectStack, browser: GatewayBrowser, user: str
) -> None:
    back_a = sign_in_at_provider(browser.start("idp"), user)
    # A's code and state on B's callback: the state names another provider.
    _assert_rejected(browser, browser.callback("idp2", urlsplit(back_a).query), "another provider")
    # A fresh code for A with a genuine state for B: B's client cannot redeem A's code.
    back_a = sign_in_at_provider(browser.start("idp"), user)
    state_b = query_of(browser.start("idp2"))["state"]
    answer = browser.callback("idp2", with_query(back_a, state=state_b))
    _assert_rejected(browser, answer, "did not")
    assert stack.connection("acme", user, "idp2") is None
    assert stack.connection("acme", user, "idp") is None


# 30 --------------------------------------------------------------------------------------------

def test_access_denied_is_shown_escaped_and_nothing_is_stored(
    stack: ConnectStack, browser: GatewayBrowser, user: str
) -> None:
    state = query_of(browser.start())["state"]
    query = urlencode({"error": "access_denied", "error_description": HOSTILE, "state": state,
                       "iss": stack.provider.issuer})
    assert browser.callback("idp", query).status_code == 303
    page = browser.get("/connect").text
    assert HOSTILE not in page and "<script>" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    assert "access_denied" in page and "Nothing was stored" in page
    assert stack.connection("acme", user) is None


def test_provider_denial_from_the_real_consent_screen(
    stack: ConnectStack, browser: GatewayBrowser, user: str
) -> None:
    back = sign_in_at_provider(browser.start(), user, deny=True)
    assert query_of(back)["error"] == "access_denied"
    assert browser.callback("idp", urlsplit(back).query).status_code == 303
    assert "access_denied" in browser.status_text()
    assert stack.connection("acme", user) is None


# 32 --------------------------------------------------------------------------------------------

def test_disconnect_revokes_at_the_provider_and_deletes(
    stack: ConnectStack, browser: GatewayBrowser, user: str
) -> None:
    browser.callback("idp", urlsplit(sign_in_at_provider(browser.start(), user)).query)
    bundle = stack.tokens("acme", user)
    assert bundle is not None and bundle.refresh_token
    answer = browser.post("/oauth/idp/disconnect", {"csrf_token": browser.csrf()})
    assert answer.status_code == 303
    assert "provider confirmed the revocation" in browser.status_text()
    assert stack.connection("acme", user) is None
    refresh = httpx.post(stack.provider.token_url, auth=stack.client_auth(), data={
        "grant_type": "refresh_token", "refresh_token": bundle.refresh_token})
    assert refresh.status_code == 400 and refresh.json()["error"] == "invalid_grant"


def test_disconnect_tolerates_200_for_an_unknown_token(
    stack: ConnectStack, browser: GatewayBrowser, user: str
) -> None:
    stack.save_tokens("acme", user, "idp", TokenBundle("unknown-access", "unknown-refresh"))
    browser.post("/oauth/idp/disconnect", {"csrf_token": browser.csrf()})
    assert "provider confirmed the revocation" in browser.status_text()
    assert stack.connection("acme", user) is None


# 33 --------------------------------------------------------------------------------------------

def test_cookie_is_opaque_and_flagged(
    stack: ConnectStack, browser: GatewayBrowser, user: str
) -> None:
    attributes = [part.strip().lower() for part in (browser.set_cookie or "").split(";")]
    assert "httponly" in attributes and "samesite=lax" in attributes and "path=/" in attributes
    assert "secure" not in attributes  # http://127.0.0.1 is the development exception
    name, _, value = (browser.cookie or "").partition("=")
    assert name == "gatehouse_connect" and 40 <= len(value) <= 50
    query = query_of(browser.start())
    record = redis.Redis.from_url(stack.redis_url).get(state_key(query["state"])) or b""
    verifier = json.loads(record)["verifier"]
    assert verifier not in (browser.set_cookie or "") and query["state"] not in value
    back = sign_in_at_provider(f"{stack.provider.issuer}/auth?{urlencode(query)}", user)
    done = browser.callback("idp", urlsplit(back).query)
    assert "set-cookie" not in done.headers  # nothing token-like ever goes to the browser
    bundle = stack.tokens("acme", user)
    assert bundle is not None
    for secret in (bundle.access_token, bundle.refresh_token or "", verifier):
        assert secret not in browser.get("/connect").text


def test_cookie_is_secure_and_host_prefixed_outside_development() -> None:
    sessions = SessionStore(redis.asyncio.Redis(), "https://gatehouse.example", ttl=600)

    response = Response()
    sessions.set_cookie(response, BrowserSession("s" * 43, "acme", "alice", "c" * 43))
    header = response.headers["set-cookie"].lower()
    assert header.startswith("__host-gatehouse_connect=")
    assert "secure" in header and "httponly" in header and "samesite=lax" in header


# 34 --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("action", ["start", "disconnect"])
@pytest.mark.parametrize("token", [None, "wrong", "from-another-session"])
def test_csrf_missing_or_wrong_token_is_refused(
    stack: ConnectStack, browser: GatewayBrowser, user: str, action: str, token: str | None
) -> None:
    if token == "from-another-session":
        other = GatewayBrowser(stack)
        other.open_link(stack.link("acme", user))
        token = other.csrf()
    form = {} if token is None else {"csrf_token": token}
    refused = browser.post(f"/oauth/idp/{action}", form)
    assert refused.status_code == 403 and "location" not in refused.headers


def test_cross_origin_post_is_refused_even_with_the_token(
    browser: GatewayBrowser,
) -> None:
    token = browser.csrf()
    refused = browser.post("/oauth/idp/start", {"csrf_token": token},
                           Origin="https://evil.example")
    assert refused.status_code == 403
    refused = browser.post("/oauth/idp/start", {"csrf_token": token}, **{"Sec-Fetch-Site":
                                                                         "cross-site"})
    assert refused.status_code == 403


def test_every_connect_page_refuses_framing(
    stack: ConnectStack, browser: GatewayBrowser, user: str
) -> None:
    bare = httpx.Client(base_url=stack.public_url, follow_redirects=False)
    answers = [
        browser.get("/connect"), bare.get("/connect"), bare.get("/connect?ticket=nope"),
        browser.post("/oauth/idp/start", {}), bare.get("/oauth/idp/callback?state=x"),
        browser.callback("idp", "state=x"), browser.get("/connect/static/connect.css"),
        browser.post("/oauth/idp/start", {"csrf_token": browser.csrf()}),
    ]
    for answer in answers:
        assert answer.headers["x-frame-options"] == "DENY", answer.request.url
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    page = answers[0]
    assert page.headers["cache-control"] == "no-store"
    assert '<html lang="en">' in page.text and 'role="status"' in page.text


def test_connect_link_works_once(stack: ConnectStack, user: str) -> None:
    link = stack.link("acme", user)
    first, second = GatewayBrowser(stack), GatewayBrowser(stack)
    assert first.open_link(link).status_code == 303
    assert second.open_link(link).status_code == 410 and second.cookie is None
    assert second.get("/connect").status_code == 401
