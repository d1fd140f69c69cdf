"""Disconnect revokes the grant at providers without RFC 7009 too (oauth/revocation.py):
GitHub's "Delete an app authorization", Notion's ``/v1/oauth/revoke`` and Slack's
``auth.revoke``, against loopback stand-ins of their documented shapes, with the connection
stored in the real vault. (RFC 7009 itself is tested against oidc-provider in
test_connect_security and test_refresh.)"""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aiohttp
import httpx
import pytest
from aiohttp import web

from oauth.catalogue import ConfiguredProvider, configure, load_catalogue, with_overrides
from oauth.disconnect import Disconnected, disconnect
from oauth.keyring import Keyring, generate_entry
from oauth.revocation import revoker
from oauth.store import TokenStore
from oauth.vault import TokenBundle
from sql import create_pool
from tests.support.databases import Database
from tests.support.github_standin import RunningStandIn
from tests.support.standin import Running
from tests.support.tenants import Who, new_user
from tests.support.workspace_standins import SlackStandIn

CLIENT_ID, CLIENT_SECRET = "gatehouse-test", "test-secret"


@dataclass
class Vault:
    store: TokenStore
    who: Who
    http: aiohttp.ClientSession

    async def connect(self, provider: str, access: str, refresh: str | None = None) -> None:
        bundle = TokenBundle(access, refresh, datetime.now(UTC) + timedelta(hours=1), ())
        await self.store.save(self.who, provider, bundle, account=self.who.user_id)

    async def disconnect(self, provider: ConfiguredProvider) -> Disconnected:
        return await disconnect(self.store, revoker(self.http, provider), self.who,
                                provider.name)


@pytest.fixture
async def vault(database: Database) -> AsyncIterator[Vault]:
    pool = await create_pool(database.app_url)
    try:
        async with aiohttp.ClientSession() as http:
            store = TokenStore(pool, Keyring.parse(generate_entry("revocation")))
            yield Vault(store, await new_user(pool), http)
    finally:
        await pool.close()


@pytest.fixture(scope="module")
def github() -> Iterator[RunningStandIn]:
    standin = RunningStandIn()
    yield standin
    standin.stop()


@pytest.fixture(scope="module")
def slack() -> Iterator[Running]:
    standin = Running(SlackStandIn().app)
    yield standin
    standin.stop()


@dataclass
class NotionRevoke:
    """``POST /v1/oauth/revoke`` as Notion documents it: HTTP Basic client credentials, a
    ``Notion-Version`` header, ``{"token": ...}``; 200 with a request id."""

    revoked: list[str] = field(default_factory=list)

    async def revoke(self, request: web.Request) -> web.Response:
        pair = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {pair}":
            return web.json_response({"object": "error", "status": 401,
                                      "code": "unauthorized"}, status=401)
        body = await request.json()
        if "Notion-Version" not in request.headers or not isinstance(body.get("token"), str):
            return web.json_response({"object": "error", "status": 400,
                                      "code": "validation_error"}, status=400)
        self.revoked.append(body["token"])
        return web.json_response({"request_id": str(uuid.uuid4())})


@pytest.fixture(scope="module")
def notion() -> Iterator[tuple[Running, NotionRevoke]]:
    endpoint = NotionRevoke()
    app = web.Application()
    app.add_routes([web.post("/v1/oauth/revoke", endpoint.revoke)])
    standin = Running(app)
    yield standin, endpoint
    standin.stop()


def provider(name: str, api_base_url: str, secret: str = CLIENT_SECRET) -> ConfiguredProvider:
    spec = with_overrides(load_catalogue()[name], {"api_base_url": api_base_url})
    return configure(spec, CLIENT_ID, secret)


def accept(standin_url: str, token: str, refresh: str | None = None) -> None:
    httpx.post(standin_url + "/_standin/tokens", json={
        "token": token, "login": "octocat", "scopes": "repo, read:user",
        "refresh_token": refresh}).raise_for_status()


def github_user(standin_url: str, token: str) -> int:
    return httpx.get(standin_url + "/user", headers={
        "Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28"}).status_code


def test_api_base_override_moves_githubs_revocation_endpoint() -> None:
    spec = provider("github", "http://127.0.0.1:9/").spec
    assert spec.revocation_endpoint == "http://127.0.0.1:9/applications/{client_id}/grant"
    assert spec.revocation_style == "github"


async def test_github_disconnect_deletes_the_whole_grant(
    vault: Vault, github: RunningStandIn
) -> None:
    access, refresh = f"ghu_{secrets.token_hex(8)}", f"ghr_{secrets.token_hex(8)}"
    accept(github.url, access, refresh)
    await vault.connect("github", access, refresh)
    assert github_user(github.url, access) == 200

    outcome = await vault.disconnect(provider("github", github.url))

    assert outcome.revoked and outcome.deleted
    assert github_user(github.url, access) == 401
    assert refresh not in github.standin.refresh_tokens  # the grant, not only one token
    assert await vault.store.load(vault.who, "github") is None


async def test_github_unconfirmed_revocation_still_deletes_locally(
    vault: Vault, github: RunningStandIn
) -> None:
    """GitHub's 404 means an unknown token or wrong client credentials: not confirmed."""
    access = f"ghu_{secrets.token_hex(8)}"
    accept(github.url, access)
    await vault.connect("github", access)

    outcome = await vault.disconnect(provider("github", github.url, secret="wrong"))

    assert outcome.deleted and not outcome.revoked
    assert github_user(github.url, access) == 200  # the user is told to revoke it there
    assert await vault.store.load(vault.who, "github") is None


async def test_notion_disconnect_revokes_the_token(
    vault: Vault, notion: tuple[Running, NotionRevoke]
) -> None:
    standin, endpoint = notion
    token = f"ntn_{secrets.token_hex(8)}"
    await vault.connect("notion", token)

    outcome = await vault.disconnect(provider("notion", standin.url + "/v1"))

    assert outcome.revoked and outcome.deleted
    assert endpoint.revoked == [token]


async def test_slack_disconnect_revokes_the_token(vault: Vault, slack: Running) -> None:
    token = f"xoxp-{secrets.token_hex(8)}"
    accept(slack.url, token)
    await vault.connect("slack", token)

    outcome = await vault.disconnect(provider("slack", slack.url + "/api"))

    assert outcome.revoked and outcome.deleted
    answer = httpx.post(slack.url + "/api/auth.test", headers={"Authorization": f"Bearer {token}"})
    assert answer.json() == {"ok": False, "error": "invalid_auth"}


async def test_a_slack_token_already_dead_counts_as_revoked(
    vault: Vault, slack: Running
) -> None:
    await vault.connect("slack", f"xoxp-{secrets.token_hex(8)}")  # Slack never knew it

    outcome = await vault.disconnect(provider("slack", slack.url + "/api"))

    assert outcome.revoked and outcome.deleted


async def test_an_unreachable_provider_is_not_confirmed(vault: Vault) -> None:
    await vault.connect("slack", f"xoxp-{secrets.token_hex(8)}")

    outcome = await vault.disconnect(provider("slack", "http://127.0.0.1:9/api"))

    assert outcome.deleted and not outcome.revoked
