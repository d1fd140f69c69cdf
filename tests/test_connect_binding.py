"""SECURITY 60: a connect link opened by someone other than its user cannot link that person's
provider account to the link's user (issue 9 item 3; the MCP elicitation spec's URL-mode
guidance: whoever completes the flow must be the user it was started for).

The attack: Eve's tool call answers with a ``/connect?ticket=`` link; Eve sends it to a victim,
who opens it, presses Connect and approves at the provider; Eve's next tool call would then act
with the victim's account. Driven in headless Chromium against two stacks: one without sign-in
(the link's page names its user and needs a confirmation; a browser connecting for the victim
is never switched to Eve) and one whose gateway signs people in through its issuer (the browser
must be signed in as the link's user). Plain-HTTP browsers check the confirmation's CSRF
defences and what each unusable link says (issue 12 item 4).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
from playwright.async_api import Browser, BrowserContext, Page, expect
from redis.asyncio import Redis

from gateway.connect.signin import state_key
from oauth.connect_links import KEY_PREFIX, TicketState, look_up_connect_ticket
from tests.conftest import ConnectStackFactory
from tests.support.browser import (
    ConnectStack,
    GatewayBrowser,
    confirm_form,
    idp_whoami,
    query_of,
    sign_in_on_provider_page,
    text_of,
)
from tests.support.oidc_provider import OidcProvider

ORG = "acme"
HOSTILE = '<script>alert("x")</script>'
SCREENSHOTS = Path("/tmp")


@pytest.fixture(scope="module")
def plain(start_connect_stack: ConnectStackFactory) -> ConnectStack:
    """No sign-in configured: a link's page names its user and asks for a confirmation."""
    return start_connect_stack()


@pytest.fixture(scope="module")
def signed(start_connect_stack: ConnectStackFactory) -> ConnectStack:
    """The gateway signs people in to /connect through its issuer (the provider here)."""
    return start_connect_stack(signin=True)


async def _whoami(stack: ConnectStack, token: str) -> str:
    result = await idp_whoami(stack, token)
    assert result.is_error is ("have not connected" in text_of(result)), text_of(result)
    return text_of(result)


async def _link_from_a_tool_call(stack: ConnectStack, token: str) -> str:
    """What Eve's assistant gets: a tool error carrying a one-time connect link."""
    match = re.search(r"http://\S+/connect\?ticket=[\w-]+", await _whoami(stack, token))
    assert match is not None
    return match[0]


async def _ticket_state(stack: ConnectStack, link: str) -> TicketState:
    redis = Redis.from_url(stack.redis_url)
    try:
        return (await look_up_connect_ticket(redis, query_of(link)["ticket"])).state
    finally:
        await redis.aclose()


async def _assert_nothing_linked_to(stack: ConnectStack, token: str, eve: str) -> None:
    assert await asyncio.to_thread(stack.connection, ORG, eve) is None
    assert "have not connected" in await _whoami(stack, token)  # Eve's next call: nothing


async def _cookie_names(context: BrowserContext, stack: ConnectStack) -> set[str]:
    return {cookie["name"] for cookie in await context.cookies(stack.public_url)}


@dataclass(frozen=True)
class _Plot:
    """Eve and her victim (both of ORG), Eve's token and the link her tool call answered with."""

    eve: str
    victim: str
    eve_token: str
    link: str


async def _eve_gets_a_link(stack: ConnectStack, idp: OidcProvider) -> _Plot:
    eve, victim = stack.new_user(idp, ORG), stack.new_user(idp, ORG)
    eve_token = idp.access_token(ORG, eve)
    return _Plot(eve, victim, eve_token, await _link_from_a_tool_call(stack, eve_token))


async def _refused_as_signed_in_victim(page: Page, plot: _Plot) -> None:
    await expect(page.get_by_role("alert")).to_contain_text(
        f"This link is for user {plot.eve} of organisation {ORG}, but you are signed in as user "
        f"{plot.victim} of organisation {ORG}. Nothing was linked")


# Without sign-in --------------------------------------------------------------------------

async def test_someone_elses_link_names_its_user_and_uses_nothing_until_confirmed(
    plain: ConnectStack, idp: OidcProvider, browser: Browser
) -> None:
    eve = plain.new_user(idp, ORG)
    eve_token = idp.access_token(ORG, eve)
    link = await _link_from_a_tool_call(plain, eve_token)

    context = await browser.new_context()  # the victim's browser, never used for Gatehouse
    page = await context.new_page()
    answer = await page.goto(link)
    assert answer is not None and answer.status == 200
    await expect(page.get_by_role("heading", name="Check who this link is for")).to_be_visible()
    await expect(page.get_by_role("alert")).to_have_text(re.compile(
        rf"You are about to connect an account for user\s+{eve}\s+of organisation\s+{ORG}\.\s+"
        rf"Only continue if you are\s+{eve}\."))
    await expect(page.get_by_role("button", name=f"I am {eve}: continue")).to_be_visible()
    await page.screenshot(path=str(SCREENSHOTS / "gatehouse-connect-confirm.png"),
                          full_page=True)
    assert "gatehouse_connect" not in await _cookie_names(context, plain)
    assert await _ticket_state(plain, link) is TicketState.VALID  # looking used nothing up
    assert (await page.goto(plain.public_url + "/connect")).status == 401  # type: ignore[union-attr]
    await _assert_nothing_linked_to(plain, eve_token, eve)
    await context.close()


async def test_a_link_never_switches_a_browser_connecting_for_another_user(
    plain: ConnectStack, idp: OidcProvider, browser: Browser
) -> None:
    plot = await _eve_gets_a_link(plain, idp)
    eve, victim, eve_token, eve_link = plot.eve, plot.victim, plot.eve_token, plot.link
    own_link = await _link_from_a_tool_call(plain, idp.access_token(ORG, victim))

    page = await (await browser.new_context()).new_page()
    await page.goto(own_link)
    await page.get_by_role("button", name=f"I am {victim}: continue").click()
    await page.wait_for_url(plain.public_url + "/connect")
    who = page.locator("p.who")
    await expect(who).to_contain_text(f"user {victim} of organisation {ORG}")
    await expect(page.get_by_role("status")).to_contain_text("asked you to connect idp")

    answer = await page.goto(eve_link)  # the victim, holding a session, opens Eve's link
    assert answer is not None and answer.status == 403
    await expect(page.get_by_role("heading", name="This link is for someone else")).to_be_visible()
    await expect(page.get_by_role("alert")).to_contain_text(
        f"This link is for user {eve} of organisation {ORG}, but this browser is already "
        f"connecting accounts for user {victim} of organisation {ORG}. Nothing was linked")
    await expect(page.get_by_role("button")).to_have_count(0)
    await page.screenshot(path=str(SCREENSHOTS / "gatehouse-connect-someone-else.png"),
                          full_page=True)
    assert await _ticket_state(plain, eve_link) is TicketState.VALID  # left for Eve

    await page.goto(plain.public_url + "/connect")  # still the victim's own session
    await expect(who).to_contain_text(f"user {victim} of organisation {ORG}")
    await page.get_by_role("button", name="Connect Test IdP").click()
    await sign_in_on_provider_page(page, plain.provider.issuer, victim)
    await page.wait_for_url(plain.public_url + "/connect")
    await expect(page.get_by_role("status")).to_contain_text(f"Connected Test IdP as {victim}.")
    info = await asyncio.to_thread(plain.connection, ORG, victim)
    assert info is not None and info.account == victim  # linked to the victim, who did it
    await _assert_nothing_linked_to(plain, eve_token, eve)


# With sign-in ---------------------------------------------------------------------------

async def test_signed_in_victim_opening_eves_link_is_refused(
    signed: ConnectStack, browser: Browser
) -> None:
    plot = await _eve_gets_a_link(signed, signed.provider)

    page = await (await browser.new_context()).new_page()
    await page.goto(signed.public_url + "/connect")
    await page.get_by_role("link", name="Sign in").click()
    await sign_in_on_provider_page(page, signed.provider.issuer, plot.victim)
    await page.wait_for_url(signed.public_url + "/connect")
    who = page.locator("p.who")
    await expect(who).to_contain_text(f"user {plot.victim} of organisation {ORG}")

    answer = await page.goto(plot.link)
    assert answer is not None and answer.status == 403
    await _refused_as_signed_in_victim(page, plot)
    await expect(page.get_by_role("button")).to_have_count(0)
    assert await _ticket_state(signed, plot.link) is TicketState.VALID
    await page.goto(signed.public_url + "/connect")
    await expect(who).to_contain_text(f"user {plot.victim} of organisation {ORG}")
    await _assert_nothing_linked_to(signed, plot.eve_token, plot.eve)


async def test_a_link_opened_without_sign_in_signs_in_first_and_binds_to_that_user(
    signed: ConnectStack, browser: Browser
) -> None:
    plot = await _eve_gets_a_link(signed, signed.provider)
    eve, link = plot.eve, plot.link

    victims = await browser.new_context()
    page = await victims.new_page()
    await page.goto(link)
    # She signs in as herself, not as Eve:
    await sign_in_on_provider_page(page, signed.provider.issuer, plot.victim)
    await page.wait_for_url(signed.public_url + "/connect/signin/callback?**")
    await _refused_as_signed_in_victim(page, plot)
    assert await _ticket_state(signed, link) is TicketState.VALID
    await _assert_nothing_linked_to(signed, plot.eve_token, eve)

    page = await (await browser.new_context()).new_page()  # Eve herself, in her own browser
    await page.goto(link)
    await sign_in_on_provider_page(page, signed.provider.issuer, eve)
    await page.wait_for_url(signed.public_url + "/connect")
    await expect(page.locator("p.who")).to_contain_text(f"user {eve} of organisation {ORG}")
    await expect(page.get_by_role("status")).to_contain_text("asked you to connect idp")
    assert await _ticket_state(signed, link) is TicketState.USED


def test_with_sign_in_a_link_never_starts_a_session_by_itself(signed: ConnectStack) -> None:
    link = signed.link(ORG, "someone")
    agent = GatewayBrowser(signed)
    answer = agent.open_link(link)
    location = answer.headers["location"]
    assert answer.status_code == 303 and location.startswith(signed.provider.issuer + "/auth?")
    ticket = query_of(link)["ticket"]
    assert ticket not in location and "gatehouse_connect" not in agent.cookies
    # The ticket waits server-side, in the sign-in's state, for the callback to check.
    raw = redis.Redis.from_url(signed.redis_url).get(state_key(query_of(location)["state"]))
    assert raw is not None and ticket.encode() in raw
    refused = agent.post("/connect/confirm", {"ticket": ticket, "csrf_token": "x" * 64})
    assert refused.status_code == 404 and "gatehouse_connect" not in agent.cookies


# The confirmation's defences ---------------------------------------------------------------

def _unused(stack: ConnectStack, link: str) -> bool:
    return asyncio.run(_ticket_state(stack, link)) is TicketState.VALID


def test_confirmation_needs_this_browsers_page_and_our_origin(
    plain: ConnectStack, idp: OidcProvider
) -> None:
    user = plain.new_user(idp, ORG)
    link = plain.link(ORG, user)
    agent = GatewayBrowser(plain)
    page = agent.open_link(link, confirm=False)
    assert page.status_code == 200 and page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    form = confirm_form(page.text)
    assert set(form) == {"ticket", "csrf_token"}
    other = GatewayBrowser(plain)
    other_form = confirm_form(other.open_link(link, confirm=False).text)  # its own cookie
    attempts = [
        httpx.post(plain.public_url + "/connect/confirm", data=form),  # no cookie at all
        other.post("/connect/confirm", form),  # a form copied from another browser
        agent.post("/connect/confirm", {"ticket": form["ticket"]}),
        agent.post("/connect/confirm", form | {"csrf_token": "x" * 64}),
        agent.post("/connect/confirm", form | {"ticket": secrets.token_urlsafe(32)}),
        agent.post("/connect/confirm", form, Origin="https://evil.example"),
        agent.post("/connect/confirm", form, **{"Sec-Fetch-Site": "cross-site"}),
    ]
    for refused in attempts:
        assert refused.status_code == 403, refused.request
        assert "location" not in refused.headers and refused.headers["x-frame-options"] == "DENY"
        assert "gatehouse_connect=" not in refused.headers.get("set-cookie", "")
    assert _unused(plain, link) and "gatehouse_connect" not in agent.cookies

    done = agent.post("/connect/confirm", form)
    assert done.status_code == 303 and done.headers["location"] == "/connect"
    assert "gatehouse_connect=" in done.headers["set-cookie"]
    agent._keep(done)
    assert f"user <strong>{user}</strong>" in agent.get("/connect").text
    assert not _unused(plain, link)
    again = other.post("/connect/confirm", other_form)  # a page shown before it was used
    assert again.status_code == 410 and "already used" in again.text


def test_a_confirmation_page_left_open_cannot_switch_a_session_started_since(
    plain: ConnectStack, idp: OidcProvider
) -> None:
    eve, victim = plain.new_user(idp, ORG), plain.new_user(idp, ORG)
    eve_link = plain.link(ORG, eve)
    agent = GatewayBrowser(plain)
    eve_form = confirm_form(agent.open_link(eve_link, confirm=False).text)
    assert agent.open_link(plain.link(ORG, victim)).status_code == 303  # another tab
    refused = agent.post("/connect/confirm", eve_form)
    assert refused.status_code == 403 and "This link is for someone else" in refused.text
    assert f"user <strong>{victim}</strong>" in agent.get("/connect").text
    assert _unused(plain, eve_link)


def test_a_second_link_for_the_same_user_keeps_the_session(
    plain: ConnectStack, idp: OidcProvider
) -> None:
    user = plain.new_user(idp, ORG)
    agent = GatewayBrowser(plain)
    agent.open_link(plain.link(ORG, user))
    session = agent.cookie
    second = plain.link(ORG, user, provider="idp2")
    answer = agent.open_link(second, confirm=False)  # no page to confirm: already this user
    assert answer.status_code == 303 and answer.headers["location"] == "/connect"
    assert agent.cookie == session and not _unused(plain, second)
    assert "asked you to connect idp2" in agent.status_text()


def test_pages_escape_whom_a_link_is_for(plain: ConnectStack, idp: OidcProvider) -> None:
    hostile = GatewayBrowser(plain).open_link(plain.link(HOSTILE, HOSTILE), confirm=False)
    assert hostile.status_code == 200
    assert HOSTILE not in hostile.text and "&lt;script&gt;" in hostile.text
    agent = GatewayBrowser(plain)
    agent.open_link(plain.link(ORG, plain.new_user(idp, ORG)))
    refused = agent.open_link(plain.link(HOSTILE, HOSTILE))
    assert refused.status_code == 403 and refused.headers["x-frame-options"] == "DENY"
    assert HOSTILE not in refused.text and "&lt;script&gt;" in refused.text


def test_each_unusable_link_says_why(plain: ConnectStack, idp: OidcProvider) -> None:
    """Issue 12 item 4: malformed -> "not valid"; used -> "already used"; unknown or expired
    (Redis cannot tell them apart once a ticket expires) -> "not valid or has expired"."""
    bare = httpx.Client(base_url=plain.public_url, follow_redirects=False)
    malformed = bare.get("/connect", params={"ticket": "nope"})
    assert malformed.status_code == 404 and "This link is not valid<" in malformed.text
    assert "expired" not in malformed.text
    unknown = bare.get("/connect", params={"ticket": secrets.token_urlsafe(32)})
    assert unknown.status_code == 410 and "not valid or has expired" in unknown.text
    link = plain.link(ORG, plain.new_user(idp, ORG))
    assert GatewayBrowser(plain).open_link(link).status_code == 303
    used = GatewayBrowser(plain).open_link(link)
    assert used.status_code == 410 and "already used" in used.text
    short = plain.link(ORG, "someone", ttl=1)  # tickets stay short-lived
    store = redis.Redis.from_url(plain.redis_url)
    deadline = time.monotonic() + 10
    while store.exists(KEY_PREFIX + query_of(short)["ticket"]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    expired = bare.get(short.removeprefix(plain.public_url))
    assert expired.status_code == 410 and "not valid or has expired" in expired.text
    for answer in (malformed, unknown, used, expired):
        assert answer.headers["x-frame-options"] == "DENY"
