"""Google's and Slack's tools end to end: a real MCP client through the gateway to mcp_server,
which decrypts the user's grant and calls loopback stand-ins serving Google's and Slack's
documented shapes (tests/support/workspace_standins.py)."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastmcp import Client
from mcp_types import TextContent

from oauth.keyring import Keyring
from oauth.store import TokenStore
from oauth.vault import TokenBundle
from sql import create_pool
from tests.support.databases import Database
from tests.support.oidc_provider import OidcProvider
from tests.support.processes import Server
from tests.support.tenants import Who
from tests.support.tenants import new_user as fresh_user

LINK = re.compile(r"https://gatehouse\.test/connect\?ticket=[A-Za-z0-9_-]{43}")
CALENDAR = "https://www.googleapis.com/auth/calendar.readonly"


@dataclass(frozen=True)
class Workspace:
    store: TokenStore
    who: Who
    urls: dict[str, str]  # provider -> stand-in base URL
    idp: OidcProvider

    async def connect(self, provider: str, scopes: str, *, register: bool = True) -> str:
        """Store a grant for ``who``; unless told not to, the stand-in accepts its token."""
        token = f"{provider}-{secrets.token_hex(16)}"
        bundle = TokenBundle(token, None, datetime.now(UTC) + timedelta(hours=1),
                             tuple(re.split(r"[ ,]+", scopes)))
        await self.store.save(self.who, provider, bundle, account=self.who.user_id)
        if register:
            httpx.post(self.urls[provider] + "/_standin/tokens", json={
                "token": token, "login": self.who.user_id, "scopes": scopes}
            ).raise_for_status()
        return token

    def requests(self, provider: str, token: str) -> list[dict[str, Any]]:
        answer = httpx.get(self.urls[provider] + "/_standin/requests", params={"token": token})
        seen: list[dict[str, Any]] = answer.json()
        return seen

    def fail(self, provider: str, token: str, status: int) -> None:
        httpx.post(self.urls[provider] + "/_standin/fail",
                   json={"token": token, "status": status, "count": 1}).raise_for_status()


@pytest.fixture
async def workspace(
    mcp_server: Server, database: Database, idp: OidcProvider
) -> AsyncIterator[Workspace]:
    """A fresh user (so no test shares a cached connection or a limit bucket)."""
    providers = json.loads(mcp_server.env["GATEHOUSE_PROVIDERS"])
    urls = {"google": providers["google"]["api_base_url"],
            "slack": providers["slack"]["api_base_url"].removesuffix("/api")}
    pool = await create_pool(database.app_url)
    try:
        store = TokenStore(pool, Keyring.parse(mcp_server.env["GATEHOUSE_TOKEN_KEYS"]))
        yield Workspace(store, await fresh_user(pool), urls, idp)
    finally:
        await pool.close()


async def use(gateway: Server, workspace: Workspace, tool: str, **arguments: Any) -> Any:
    who = workspace.who
    token = workspace.idp.access_token(who.org_id, who.user_id, ["member"])
    async with Client(gateway.url + "/mcp", auth=token) as client:
        return await client.call_tool(tool, arguments, raise_on_error=False)


def text(result: Any) -> str:
    content = result.content[0]
    assert isinstance(content, TextContent)
    return content.text


# -- Google -----------------------------------------------------------------------------------


async def test_calendar_events_are_listed_with_the_users_token(
    gateway: Server, workspace: Workspace
) -> None:
    token = await workspace.connect("google", f"openid email {CALENDAR}")
    result = await use(gateway, workspace, "google_list_calendar_events", max_results=2,
                       time_min="2025-01-01T00:00:00Z")
    assert not result.is_error, text(result)
    events = result.structured_content["events"]
    assert [e["summary"] for e in events] == ["Meeting 1", "Meeting 2"]
    assert events[0]["start"] == "2025-01-06T09:00:00+01:00" and events[0]["status"] == "confirmed"
    assert result.structured_content["next_page_token"] == "CigKGjRvN2ZxZ2s"
    [seen] = workspace.requests("google", token)
    assert seen["path"] == "/calendar/v3/calendars/primary/events"
    assert seen["query"] == {"singleEvents": "true", "orderBy": "startTime", "maxResults": "2",
                             "timeMin": "2025-01-01T00:00:00Z"}


async def test_calendar_without_its_scope_asks_to_reconnect_naming_it(
    gateway: Server, workspace: Workspace
) -> None:
    await workspace.connect("google", "openid email")
    result = await use(gateway, workspace, "google_list_calendar_events")
    assert result.is_error
    message = text(result)
    assert "your Google connection is missing scope" in message and CALENDAR in message
    assert "reconnect granting it" in message and LINK.search(message)


async def test_unknown_calendar_is_a_clear_refusal(gateway: Server, workspace: Workspace) -> None:
    await workspace.connect("google", CALENDAR)
    result = await use(gateway, workspace, "google_list_calendar_events",
                       calendar_id="someone/else@example.com")
    assert result.is_error
    assert text(result) == "Google refused the request: HTTP 404"


async def test_google_whoami_reads_openid_userinfo(gateway: Server, workspace: Workspace) -> None:
    await workspace.connect("google", "openid email")
    result = await use(gateway, workspace, "google_whoami")
    assert not result.is_error, text(result)
    assert result.structured_content["email"] == f"{workspace.who.user_id}@example.com"


async def test_a_token_google_rejects_needs_reconnect(
    gateway: Server, workspace: Workspace
) -> None:
    token = await workspace.connect("google", CALENDAR)
    workspace.fail("google", token, 401)
    rejected = await use(gateway, workspace, "google_list_calendar_events")
    assert rejected.is_error
    assert "Google no longer accepts your connection; reconnect" in text(rejected)
    again = await use(gateway, workspace, "google_list_calendar_events")
    assert "your Google connection must be renewed; reconnect" in text(again)
    assert LINK.search(text(again))


# -- Slack ------------------------------------------------------------------------------------


async def test_post_message_sends_slack_json_as_the_user(
    gateway: Server, workspace: Workspace
) -> None:
    token = await workspace.connect("slack", "chat:write,users:read")
    result = await use(gateway, workspace, "slack_post_message", channel="#general",
                       text="Deploy finished <!here>")
    assert not result.is_error, text(result)
    assert result.structured_content["channel"] == "C0GENERAL1"
    assert re.fullmatch(r"\d+\.\d{6}", result.structured_content["ts"])
    [seen] = workspace.requests("slack", token)
    assert (seen["method"], seen["path"]) == ("POST", "/api/chat.postMessage")
    assert seen["content_type"] == "application/json; charset=utf-8"
    assert seen["json"] == {"channel": "#general", "text": "Deploy finished <!here>"}


async def test_slack_missing_scope_asks_to_reconnect_naming_it(
    gateway: Server, workspace: Workspace
) -> None:
    await workspace.connect("slack", "users:read")
    missing = await use(gateway, workspace, "slack_post_message", channel="#general", text="x")
    assert "your Slack connection is missing scope chat:write" in text(missing)
    assert LINK.search(text(missing))


async def test_slack_error_codes_are_named(gateway: Server, workspace: Workspace) -> None:
    await workspace.connect("slack", "chat:write")
    unknown = await use(gateway, workspace, "slack_post_message", channel="#nope", text="x")
    assert text(unknown) == "Slack refused the request: HTTP 200 (channel_not_found)"


async def test_slack_rate_limit_is_a_retry_later(gateway: Server, workspace: Workspace) -> None:
    token = await workspace.connect("slack", "chat:write")
    workspace.fail("slack", token, 429)
    limited = await use(gateway, workspace, "slack_post_message", channel="#general", text="x")
    assert text(limited) == "Slack is unavailable right now (rate limited, HTTP 429); retry later"
    ok = await use(gateway, workspace, "slack_post_message", channel="#general", text="x")
    assert not ok.is_error


async def test_a_token_slack_calls_invalid_needs_reconnect(
    gateway: Server, workspace: Workspace
) -> None:
    await workspace.connect("slack", "chat:write", register=False)
    revoked = await use(gateway, workspace, "slack_post_message", channel="#general", text="x")
    assert "Slack no longer accepts your connection; reconnect" in text(revoked)
    assert LINK.search(text(revoked))


async def test_slack_whoami_is_auth_test(gateway: Server, workspace: Workspace) -> None:
    await workspace.connect("slack", "users:read")
    result = await use(gateway, workspace, "slack_whoami")
    assert not result.is_error, text(result)
    assert result.structured_content["user"] == workspace.who.user_id
    assert result.structured_content["team_id"] == "T0GATEHSE"
