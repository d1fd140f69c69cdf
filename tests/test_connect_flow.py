"""The whole connect flow in headless Chromium (Playwright) against a real OpenID provider.

A tool's connect link is opened in a browser with no other sign-in; the user confirms the page
naming whom the link is for, presses Connect, signs in and consents at ``oidc-provider``, and
lands back on ``/connect`` showing whom the connection is for and its scopes; an MCP client
then uses the connection through the gateway; Disconnect revokes the grant at the provider
(its refresh token stops working) and deletes it.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, expect

from tests.conftest import ConnectStackFactory
from tests.support.browser import (
    ConnectStack,
    idp_whoami,
    sign_in_on_provider_page,
    text_of,
)
from tests.support.oidc_provider import OidcProvider

SCREENSHOTS = Path("/tmp")


@pytest.fixture(scope="module")
def stack(start_connect_stack: ConnectStackFactory) -> ConnectStack:
    return start_connect_stack()


async def test_connect_use_and_disconnect_in_a_browser(
    stack: ConnectStack, idp: OidcProvider, browser: Browser
) -> None:
    user = "pat-" + uuid.uuid4().hex[:8]
    token = idp.access_token("acme", user)  # the agent's own bearer token (gateway's issuer)
    first = httpx.get(stack.public_url + "/v1/sessions",
                      headers={"Authorization": f"Bearer {token}"})
    assert first.status_code == 200

    answer = await idp_whoami(stack, token)
    assert answer.is_error and "have not connected" in text_of(answer)
    link = re.search(r"http://\S+/connect\?ticket=[\w-]+", text_of(answer))
    assert link is not None  # the tool answered with a one-time connect link

    page = await browser.new_page()
    await page.goto(link[0])  # no sign-in configured: the link first says whom it is for
    await expect(page.get_by_role("alert")).to_contain_text(
        f"You are about to connect an account for user {user} of organisation acme. "
        f"Only continue if you are {user}.")
    await page.get_by_role("button", name=f"I am {user}: continue").click()
    await page.wait_for_url(stack.public_url + "/connect")  # the ticket is gone from the URL
    await expect(page.get_by_role("heading", name="Connected accounts")).to_be_visible()
    await expect(page.get_by_text(f"Connecting accounts for user {user}")).to_be_visible()

    await page.get_by_role("button", name="Connect Test IdP").click()
    await page.wait_for_url(stack.provider.issuer + "/**")
    await sign_in_on_provider_page(page, stack.provider.issuer, user)

    await page.wait_for_url(stack.public_url + "/connect")
    status = page.get_by_role("status")
    await expect(status).to_contain_text(f"Connected Test IdP as {user}.")
    card = page.get_by_role("listitem").filter(has_text="Test IdP")
    await expect(card).to_contain_text(f"Connected as{user}")
    await expect(card).to_contain_text("openid, offline_access")
    await expect(card.get_by_role("button", name="Disconnect Test IdP")).to_be_visible()
    await page.screenshot(path=str(SCREENSHOTS / "gatehouse-connect-connected.png"),
                          full_page=True)

    bundle = stack.tokens("acme", user)
    assert bundle is not None and bundle.refresh_token
    info = stack.connection("acme", user)
    assert info is not None and info.account == user
    assert set(info.scopes) == {"openid", "offline_access"}

    answer = await idp_whoami(stack, token)  # the provider tool now uses the stored grant
    assert not answer.is_error, text_of(answer)
    assert user in text_of(answer)  # the provider's userinfo answer for this very user

    await page.get_by_role("button", name="Disconnect Test IdP").click()
    await page.wait_for_url(stack.public_url + "/connect")
    await expect(status).to_contain_text("provider confirmed the revocation")
    await expect(page.get_by_role("button", name="Connect Test IdP")).to_be_visible()
    await page.screenshot(path=str(SCREENSHOTS / "gatehouse-connect-disconnected.png"),
                          full_page=True)

    assert stack.connection("acme", user) is None
    refresh = httpx.post(stack.provider.token_url, auth=stack.client_auth(), data={
        "grant_type": "refresh_token", "refresh_token": bundle.refresh_token})
    assert refresh.status_code == 400 and refresh.json()["error"] == "invalid_grant"
