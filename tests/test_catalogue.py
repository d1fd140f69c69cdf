"""The provider catalogue: built-in data, overrides, OpenID discovery (against the real
oidc-provider and hostile loopback servers) and operator configuration."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from mcp_server.providers import configure_providers
from mcp_server.settings import McpServerSettings, ProviderConfig
from oauth.catalogue import (
    check_url,
    discover,
    load_catalogue,
    spec_from_mapping,
    with_overrides,
)
from oauth.errors import CatalogueError
from tests.support.oidc_provider import OidcProvider

CATALOGUE = load_catalogue()


def test_builtin_catalogue_has_the_six_providers_with_real_endpoints() -> None:
    assert set(CATALOGUE) == {"github", "google", "microsoft", "slack", "atlassian", "notion"}
    for spec in CATALOGUE.values():
        for url in (spec.authorization_endpoint, spec.token_endpoint, spec.api_base_url,
                    spec.userinfo_endpoint, spec.revocation_endpoint):
            assert url is None or url.startswith("https://")
        assert spec.userinfo_endpoint  # every provider has a whoami
    github = CATALOGUE["github"]
    assert github.api_base_url == "https://api.github.com"
    assert github.token_endpoint == "https://github.com/login/oauth/access_token"
    assert github.api_headers["X-GitHub-Api-Version"] == "2022-11-28"
    google = CATALOGUE["google"]
    assert google.revocation_endpoint == "https://oauth2.googleapis.com/revoke" and google.pkce
    assert "https://www.googleapis.com/auth/calendar.readonly" in google.default_scopes
    slack = CATALOGUE["slack"]
    assert (slack.scope_parameter, slack.scope_separator, slack.error_style) == (
        "user_scope", ",", "slack")
    with pytest.raises(TypeError):
        github.api_headers["X"] = "y"  # type: ignore[index]


def test_unknown_or_missing_fields_are_refused() -> None:
    entry: dict[str, Any] = {
        "display_name": "X", "authorization_endpoint": "https://x.example/a",
        "token_endpoint": "https://x.example/t", "userinfo_endpoint": None,
        "api_base_url": "https://api.x.example/"}
    assert spec_from_mapping("x", entry).api_base_url == "https://api.x.example"
    with pytest.raises(CatalogueError, match="unknown catalogue fields"):
        spec_from_mapping("x", {**entry, "tokn_endpoint": "https://x.example/t"})
    with pytest.raises(CatalogueError, match="incomplete"):
        spec_from_mapping("x", {"display_name": "X"})
    with pytest.raises(CatalogueError, match="https"):
        spec_from_mapping("x", {**entry, "token_endpoint": "http://x.example/t"})


@pytest.mark.parametrize("url", [
    "http://example.com/x", "ftp://example.com/", "https://user:pw@example.com/",
    "http://10.0.0.1/", "http://169.254.169.254/latest", "https://example.com/#frag", "/relative",
    "http://127.0.0.1.example.com/",
])
def test_check_url_refuses(url: str) -> None:
    with pytest.raises(CatalogueError):
        check_url(url, "endpoint")


@pytest.mark.parametrize("url", [
    "https://example.com/x", "http://127.0.0.1:9/x", "http://[::1]:9/", "http://localhost/",
])
def test_check_url_accepts(url: str) -> None:
    assert check_url(url, "endpoint") == url


def test_overriding_the_api_base_moves_userinfo_under_it() -> None:
    spec = with_overrides(CATALOGUE["github"], {"api_base_url": "http://127.0.0.1:9999"})
    assert spec.userinfo_endpoint == "http://127.0.0.1:9999/user"
    google = with_overrides(CATALOGUE["google"], {"api_base_url": "http://127.0.0.1:1"})
    assert google.userinfo_endpoint == "https://openidconnect.googleapis.com/v1/userinfo"
    with pytest.raises(CatalogueError):
        with_overrides(CATALOGUE["github"], {"client_secret": "x"})
    with pytest.raises(CatalogueError):
        with_overrides(CATALOGUE["github"], {"token_endpoint": "http://evil.example/t"})


async def test_discovery_against_a_real_openid_provider(idp: OidcProvider) -> None:
    async with aiohttp.ClientSession() as http:
        spec = await discover(http, "corp", idp.discovery_url)
    assert spec.issuer == idp.issuer
    assert spec.token_endpoint == idp.token_url
    assert spec.authorization_endpoint.startswith(idp.issuer)
    assert spec.userinfo_endpoint and spec.userinfo_endpoint.startswith(idp.issuer)
    assert spec.pkce is True
    assert "openid" in spec.default_scopes


@pytest.fixture
async def hostile() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A loopback server whose discovery answer the test chooses."""
    answer: dict[str, Any] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        if answer.get("sleep"):
            await asyncio.sleep(answer["sleep"])
        if "redirect" in answer:
            raise web.HTTPFound(answer["redirect"])
        return web.Response(body=answer["body"], content_type="application/json")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield base, answer
    finally:
        await runner.cleanup()


def _document(issuer: str) -> dict[str, str]:
    return {"issuer": issuer, "authorization_endpoint": issuer + "/auth",
            "token_endpoint": issuer + "/token"}


@pytest.mark.parametrize("case", ["wrong_issuer", "too_big", "not_json", "slow", "redirect",
                                  "http_endpoint", "no_token_endpoint"])
async def test_hostile_discovery_documents_are_refused(
    hostile: tuple[str, dict[str, Any]], case: str
) -> None:
    base, answer = hostile
    url = base + "/.well-known/openid-configuration"
    document: dict[str, Any] = _document(base)
    if case == "wrong_issuer":
        document["issuer"] = "https://accounts.example.com"
    if case == "http_endpoint":
        document["token_endpoint"] = "http://203.0.113.9/token"
    if case == "no_token_endpoint":
        del document["token_endpoint"]
    answer["body"] = json.dumps(document).encode()
    if case == "too_big":
        answer["body"] = json.dumps({**document, "pad": "x" * 70_000}).encode()
    if case == "not_json":
        answer["body"] = b"<html>"
    if case == "slow":
        answer["sleep"] = 2
    if case == "redirect":
        answer["redirect"] = "http://169.254.169.254/latest/meta-data"
    async with aiohttp.ClientSession() as http:
        with pytest.raises(CatalogueError) as caught:
            await discover(http, "corp", url, fetch_seconds=0.5)
    assert "169.254" not in str(caught.value) and "<html>" not in str(caught.value)


async def test_discovery_refuses_non_https_without_fetching() -> None:
    async with aiohttp.ClientSession() as http:
        with pytest.raises(CatalogueError, match="https"):
            await discover(http, "corp", "http://sso.example.com/.well-known/openid-configuration")


async def test_operator_configuration(
    idp: OidcProvider, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    providers = {
        "github": {"client_id": "gh-id", "client_secret": "gh-SECRET-1",
                   "api_base_url": "http://127.0.0.1:9999"},
        "corp": {"discovery_url": idp.discovery_url, "client_id": "corp-id",
                 "client_secret": "corp-SECRET-2", "scopes": ["openid", "email"]},
        "nowhere": {"client_id": "x", "client_secret": "nowhere-SECRET-3"},
        "Bad Name": {"client_id": "x"},
    }
    monkeypatch.setenv("GATEHOUSE_PROVIDERS", json.dumps(providers))
    monkeypatch.setenv("GATEHOUSE_INTERNAL_PUBLIC_KEY_FILE", "/dev/null")
    settings = McpServerSettings()  # type: ignore[call-arg]
    assert "SECRET" not in repr(settings)
    caplog.set_level(logging.INFO)
    async with aiohttp.ClientSession() as http:
        enabled = await configure_providers(http, settings.providers, CATALOGUE)
    assert set(enabled) == {"github", "corp"}
    github, corp = enabled["github"], enabled["corp"]
    assert github.client.client_id == "gh-id" and github.scopes == ("read:user", "repo")
    assert github.spec.userinfo_endpoint == "http://127.0.0.1:9999/user"
    assert corp.scopes == ("openid", "email") and corp.spec.issuer == idp.issuer
    assert "nowhere" in caplog.text and "Bad Name" in caplog.text
    assert "SECRET" not in caplog.text + repr(enabled)


def test_provider_config_refuses_unknown_keys() -> None:
    with pytest.raises(ValueError, match="extra"):
        ProviderConfig.model_validate({"client_id": "x", "clientsecret": "y"})
