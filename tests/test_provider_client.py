"""ProviderApi against a loopback HTTP server: error mapping, redirects, caps, breaker counting."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from redis.asyncio import Redis

from oauth.catalogue import load_catalogue
from oauth.errors import MissingScope, ProviderRejected, ProviderUnauthorized, ProviderUnavailable
from oauth.provider_client import ProviderApi, is_breaker_failure
from resilience import BreakerState, CircuitBreaker, CircuitOpen

ANSWERS: dict[str, Any] = {
    "/ok": (200, {"ok": True}, {}),
    "/401": (401, {"message": "Bad credentials"}, {}),
    "/429": (429, {}, {"Retry-After": "5"}),
    "/503": (503, {"message": "secret internals"}, {}),
    "/404": (404, {"message": "Not Found <b>"}, {}),
    "/403-rate": (403, {}, {"X-RateLimit-Remaining": "0"}),
    "/403-bearer": (403, {}, {"WWW-Authenticate": 'Bearer error="insufficient_scope", '
                                                  'scope="calendar.readonly"'}),
    "/403-github": (403, {}, {"X-Accepted-OAuth-Scopes": "repo", "X-OAuth-Scopes": "gist"}),
    "/slack-auth": (200, {"ok": False, "error": "token_revoked"}, {}),
    "/slack-scope": (200, {"ok": False, "error": "missing_scope", "needed": "chat:write"}, {}),
    "/slack-other": (200, {"ok": False, "error": "channel_not_found"}, {}),
}


@dataclasses.dataclass
class Loopback:
    url: str
    seen: list[str]


@pytest.fixture
async def server() -> AsyncIterator[Loopback]:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("Authorization", ""))
        path = request.path
        if path == "/same-host-redirect":
            raise web.HTTPMovedPermanently("/ok")
        if path == "/other-host-redirect":
            raise web.HTTPFound("http://127.0.0.2:1/steal")
        if path == "/huge":
            return web.Response(body=b"[" + b"1," * 2000 + b"1]")
        if path == "/slow":
            await asyncio.sleep(2)
        status, body, headers = ANSWERS.get(path, (200, {}, {}))
        return web.json_response(body, status=status, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield Loopback(f"http://127.0.0.1:{runner.addresses[0][1]}", seen)
    finally:
        await runner.cleanup()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def api(http: aiohttp.ClientSession, redis: Redis, base: str, provider: str = "github",
        **kwargs: Any) -> ProviderApi:
    spec = dataclasses.replace(load_catalogue()[provider], api_base_url=base)
    breaker = CircuitBreaker(redis, "p", failure_threshold=2, is_failure=is_breaker_failure,
                             namespace=f"test-client-{uuid.uuid4().hex}")
    return ProviderApi(http, spec, breaker, **kwargs)


@pytest.mark.parametrize(("path", "error"), [
    ("/401", ProviderUnauthorized), ("/429", ProviderUnavailable), ("/503", ProviderUnavailable),
    ("/404", ProviderRejected), ("/403-rate", ProviderUnavailable),
    ("/403-bearer", MissingScope), ("/403-github", MissingScope),
    ("/other-host-redirect", ProviderRejected),
])
async def test_answers_are_mapped(
    server: Loopback, redis: Redis, path: str, error: type[Exception]
) -> None:
    async with aiohttp.ClientSession() as http:
        with pytest.raises(error) as caught:
            await api(http, redis, server.url).request("tok-SECRET", "GET", server.url + path)
    message = str(caught.value)
    assert "tok-SECRET" not in message and "internals" not in message and "<b>" not in message
    if isinstance(caught.value, MissingScope):
        assert caught.value.scopes in (("calendar.readonly",), ("repo",))


async def test_redirects_stay_on_the_same_host(server: Loopback, redis: Redis) -> None:
    async with aiohttp.ClientSession() as http:
        client = api(http, redis, server.url)
        assert await client.request("t", "GET", server.url + "/same-host-redirect") == {
            "ok": True}
        with pytest.raises(ProviderRejected, match="redirect_to_other_host"):
            await client.request("t", "GET", server.url + "/other-host-redirect")
    assert len(server.seen) == 3  # the token never went to 127.0.0.2


async def test_size_cap_and_timeout(server: Loopback, redis: Redis) -> None:
    async with aiohttp.ClientSession() as http:
        client = api(http, redis, server.url, timeout=0.3, max_bytes=1024)
        with pytest.raises(ProviderRejected, match="response_too_large"):
            await client.request("t", "GET", server.url + "/huge")
        with pytest.raises(ProviderUnavailable):
            await client.request("t", "GET", server.url + "/slow")
        with pytest.raises(ProviderUnavailable):
            await client.request("t", "GET", "http://127.0.0.1:1/refused")


async def test_slack_style_errors(server: Loopback, redis: Redis) -> None:
    async with aiohttp.ClientSession() as http:
        slack = api(http, redis, server.url, provider="slack")
        with pytest.raises(ProviderUnauthorized):
            await slack.request("t", "POST", server.url + "/slack-auth", json_body={})
        with pytest.raises(MissingScope) as scope:
            await slack.request("t", "POST", server.url + "/slack-scope", json_body={})
        assert scope.value.scopes == ("chat:write",)
        with pytest.raises(ProviderRejected, match="channel_not_found"):
            await slack.request("t", "POST", server.url + "/slack-other", json_body={})


async def test_only_unavailability_trips_the_breaker(server: Loopback, redis: Redis) -> None:
    async with aiohttp.ClientSession() as http:
        client = api(http, redis, server.url)
        for path in ("/404", "/401", "/403-github", "/404", "/429", "/403-rate", "/429"):
            with pytest.raises((ProviderRejected, ProviderUnauthorized, MissingScope,
                                ProviderUnavailable)):
                await client.request("t", "GET", server.url + path)
        breaker = client._breaker
        assert await breaker.state() is BreakerState.CLOSED
        for _ in range(2):
            with pytest.raises(ProviderUnavailable):
                await client.request("t", "GET", server.url + "/503")
        assert await breaker.state() is BreakerState.OPEN
        calls = len(server.seen)
        with pytest.raises(CircuitOpen):
            await client.request("t", "GET", server.url + "/ok")
        assert len(server.seen) == calls
