"""Provider tools end to end: a real MCP client, the gateway, mcp_server, PostgreSQL, Redis and
a loopback GitHub stand-in serving GitHub's documented shapes (Google's and Slack's tools are in
test_workspace_tools.py)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastmcp import Client

from oauth.connect_links import ConnectGrant, use_connect_ticket
from tests.conftest import GatewayFactory
from tests.support.github_grants import Env, call, connect, env_fixture, fail, requests_of, text
from tests.support.processes import Server, start_uvicorn
from tests.support.tenants import Who
from tests.support.tenants import new_user as fresh_user

LINK = re.compile(r"https://gatehouse\.test/connect\?ticket=([A-Za-z0-9_-]{43})")


env = env_fixture()


async def new_user(env: Env) -> Who:
    return await fresh_user(env.pool)


# -- happy paths ------------------------------------------------------------------------------


async def test_only_enabled_providers_tools_are_listed_with_declared_scopes(
    gateway: Server, env: Env
) -> None:
    """The stack enables GitHub, Google and Slack; Microsoft, Atlassian and Notion are in the
    catalogue but not configured, so their tools are not offered."""
    who = await new_user(env)
    token = env.idp.access_token(who.org_id, who.user_id, ["member"])
    async with Client(gateway.url + "/mcp", auth=token) as client:
        tools = {tool.name: tool for tool in await client.list_tools()}
    assert set(tools) == {
        "echo", "whoami", "count", "github_whoami", "github_list_repositories",
        "github_search_issues", "github_create_issue", "github_get_file_contents",
        "google_whoami", "google_list_calendar_events", "slack_post_message", "slack_whoami"}
    assert "Needs scope: repo" in (tools["github_create_issue"].description or "")


async def test_whoami_calls_github_with_the_users_token(gateway: Server, env: Env) -> None:
    who = await new_user(env)
    token = await connect(env, who)
    result = await call(gateway, env, who, "github_whoami")
    assert not result.is_error
    assert result.structured_content["login"] == who.user_id
    [seen] = requests_of(env, token)
    assert seen["method"] == "GET" and seen["path"] == "/user"
    assert seen["accept"] == "application/vnd.github+json"
    assert seen["api_version"] == "2022-11-28"


async def test_list_repositories_sends_query_and_shapes_results(
    gateway: Server, env: Env
) -> None:
    who = await new_user(env)
    token = await connect(env, who)
    result = await call(gateway, env, who, "github_list_repositories", visibility="public",
                        per_page=10)
    assert not result.is_error
    repos = result.structured_content["result"]
    assert [r["full_name"] for r in repos] == [f"{who.user_id}/hello", "octo-org/tools"]
    assert set(repos[0]) == {"full_name", "private", "html_url", "description",
                             "default_branch", "updated_at"}
    [seen] = requests_of(env, token)
    assert seen["path"] == "/user/repos"
    assert seen["query"] == {"visibility": "public", "sort": "updated", "per_page": "10",
                             "page": "1"}


async def test_search_issues(gateway: Server, env: Env) -> None:
    who = await new_user(env)
    token = await connect(env, who)
    result = await call(gateway, env, who, "github_search_issues", query="is:open label:bug")
    assert not result.is_error
    found = result.structured_content
    assert found["total_count"] == 2
    assert found["items"][0]["repository"] == f"{who.user_id}/hello"
    assert found["items"][0]["author"] == who.user_id
    assert requests_of(env, token)[0]["query"]["q"] == "is:open label:bug"


async def test_create_issue_posts_githubs_request_shape(gateway: Server, env: Env) -> None:
    who = await new_user(env)
    token = await connect(env, who)
    result = await call(gateway, env, who, "github_create_issue", owner="octo-org",
                        repo="tools", title="Broken build", body="It fails.", labels=["bug"])
    assert not result.is_error
    assert result.structured_content["number"] == 1
    assert result.structured_content["html_url"] == "https://github.com/octo-org/tools/issues/1"
    [seen] = requests_of(env, token)
    assert (seen["method"], seen["path"]) == ("POST", "/repos/octo-org/tools/issues")
    assert seen["json"] == {"title": "Broken build", "body": "It fails.", "labels": ["bug"]}


async def test_get_file_contents_decodes_base64(gateway: Server, env: Env) -> None:
    who = await new_user(env)
    token = await connect(env, who)
    result = await call(gateway, env, who, "github_get_file_contents", owner=who.user_id,
                        repo="hello", path="README.md", ref="main")
    assert not result.is_error
    assert result.structured_content["text"].startswith("# hello\n")
    assert result.structured_content["sha"]
    [seen] = requests_of(env, token)
    assert seen["path"] == f"/repos/{who.user_id}/hello/contents/README.md"
    assert seen["query"] == {"ref": "main"}


async def test_a_token_due_for_refresh_is_refreshed_at_the_token_endpoint(
    gateway: Server, env: Env
) -> None:
    """The lifespan wires GitHub's token endpoint (client_secret_post) into the refresher."""
    who = await new_user(env)
    old = await connect(env, who, expires_in=timedelta(seconds=30))  # inside the 60 s margin
    result = await call(gateway, env, who, "github_whoami")
    assert not result.is_error, text(result)
    stored = await env.store.load(who, "github")
    assert stored is not None and stored.access_token != old
    assert stored.access_token.startswith("ghu_") and not stored.expires_within(3600)
    assert [r["path"] for r in requests_of(env, old)] == ["/user"]  # made with the new token


async def test_path_traversal_in_arguments_is_refused(gateway: Server, env: Env) -> None:
    who = await new_user(env)
    token = await connect(env, who)
    result = await call(gateway, env, who, "github_get_file_contents", owner=who.user_id,
                        repo="hello", path="../../../user")
    assert result.is_error and "'..'" in text(result)
    bad_owner = await call(gateway, env, who, "github_create_issue", owner="a/b", repo="c",
                           title="x")
    assert bad_owner.is_error
    assert requests_of(env, token) == []


# -- errors -------------------------------------------------------------------------------------


async def test_not_connected_answers_a_one_time_connect_link(gateway: Server, env: Env) -> None:
    who = await new_user(env)
    result = await call(gateway, env, who, "github_whoami")
    assert result.is_error
    assert "not connected GitHub" in text(result)
    match = LINK.search(text(result))
    assert match is not None
    ticket = match.group(1)
    used = await use_connect_ticket(env.redis, ticket)
    assert used.grant == ConnectGrant(who.org_id, who.user_id, "github")
    assert (await use_connect_ticket(env.redis, ticket)).grant is None
    assert (await use_connect_ticket(env.redis, "not-a-ticket")).grant is None


async def test_401_marks_needs_reconnect_and_links(
    gateway: Server, env: Env, mcp_server: Server
) -> None:
    who = await new_user(env)
    token = await connect(env, who, register=False)  # the stand-in answers 401 Bad credentials
    result = await call(gateway, env, who, "github_whoami")
    assert result.is_error and LINK.search(text(result))
    assert "no longer accepts" in text(result)
    assert token not in text(result)
    info = await env.store.info(who, "github")
    assert info is not None and info.needs_reconnect
    again = await call(gateway, env, who, "github_whoami")
    assert again.is_error and "must be renewed" in text(again) and LINK.search(text(again))
    assert len(requests_of(env, token)) == 0  # unregistered: the stand-in kept no record
    assert token not in mcp_server.log_text()


async def test_missing_scope_is_named(gateway: Server, env: Env) -> None:
    who = await new_user(env)
    await connect(env, who, scopes="read:user")
    result = await call(gateway, env, who, "github_create_issue", owner="o", repo="r",
                        title="t")
    assert result.is_error
    assert "missing scope repo" in text(result) and LINK.search(text(result))


async def test_provider_error_bodies_are_not_reflected(gateway: Server, env: Env) -> None:
    who = await new_user(env)
    token = await connect(env, who)
    fail(env, token, 418, 1)
    result = await call(gateway, env, who, "github_whoami")
    assert result.is_error
    assert text(result) == "GitHub refused the request: HTTP 418"
    missing = await call(gateway, env, who, "github_get_file_contents", owner="o", repo="r",
                         path="nope.txt")
    assert missing.is_error and "HTTP 404" in text(missing) and "Not Found" not in text(missing)


async def test_an_unconfigured_providers_tool_is_unknown(gateway: Server, env: Env) -> None:
    who = await new_user(env)
    result = await call(gateway, env, who, "microsoft_whoami")
    assert result.is_error
    assert text(result) == "Unknown tool: 'microsoft_whoami'"


# -- breaker and limits, on a stack of their own (their state must not leak into other tests) ----


@pytest.fixture(scope="module")
def strict_gateway(
    mcp_server: Server, start_gateway: GatewayFactory, work_dir: Any
) -> Iterator[Server]:
    overrides = {
        "GATEHOUSE_RESILIENCE_NAMESPACE": f"strict-{uuid.uuid4().hex[:8]}",
        "GATEHOUSE_BREAKER_FAILURE_THRESHOLD": "3",
        "GATEHOUSE_BREAKER_RESET_SECONDS": "60",
        "GATEHOUSE_TOOL_RATE_LIMITS": json.dumps({"github_search_issues": "3/minute"}),
    }
    strict = start_uvicorn("mcp_server.app:create_app", {**mcp_server.env, **overrides},
                           work_dir, "mcp_server_strict")
    try:
        yield start_gateway(mcp_server_url=strict.url + "/mcp")
    finally:
        strict.stop()


async def test_user_tool_rate_limit_is_a_clear_error(strict_gateway: Server, env: Env) -> None:
    who = await new_user(env)
    token = await connect(env, who)
    for _ in range(3):
        assert not (await call(strict_gateway, env, who, "github_search_issues", query="x")
                    ).is_error
    limited = await call(strict_gateway, env, who, "github_search_issues", query="x")
    assert limited.is_error
    assert re.search(r"rate limit exceeded \(your limit for github_search_issues: 3 per 60 s\);"
                     r" retry in \d+ s", text(limited))
    assert len(requests_of(env, token)) == 3
    other = await new_user(env)  # another user's budget is untouched
    await connect(env, other)
    assert not (await call(strict_gateway, env, other, "github_search_issues", query="x")
                ).is_error


async def test_breaker_opens_on_5xx_not_on_4xx(strict_gateway: Server, env: Env) -> None:
    who = await new_user(env)
    token = await connect(env, who)
    for _ in range(4):  # business errors: the provider answered
        missing = await call(strict_gateway, env, who, "github_get_file_contents", owner="o",
                             repo="r", path="missing.txt")
        assert "HTTP 404" in text(missing)
    fail(env, token, 502, 100)
    for _ in range(3):
        failed = await call(strict_gateway, env, who, "github_whoami")
        assert failed.is_error and "GitHub is unavailable right now" in text(failed)
    before = len(requests_of(env, token))
    fast = await call(strict_gateway, env, who, "github_whoami")
    assert fast.is_error
    assert re.search(r"GitHub is unavailable \(failing recently\); retry in \d+ s", text(fast))
    assert len(requests_of(env, token)) == before  # refused without calling GitHub


async def test_server_without_vault_settings_starts_and_offers_no_provider_tools(
    internal_keys: Any, work_dir: Any
) -> None:
    """Only the assertion key (GitHub configured, but no vault to hold grants): echo works,
    GitHub's tools are neither listed nor callable."""
    from oauth.assertion import AssertionSigner, CallerIdentity
    from oauth.keys import load_private_key

    bare = start_uvicorn("mcp_server.app:create_app",
                         {"GATEHOUSE_INTERNAL_PUBLIC_KEY_FILE": str(internal_keys.public),
                          "GATEHOUSE_PROVIDERS": json.dumps({"github": {"client_id": "x"}})},
                         work_dir, "mcp_server_bare")
    try:
        signer = AssertionSigner(load_private_key(internal_keys.private.read_bytes()))
        headers = {"Authorization": "Bearer " + signer.sign(CallerIdentity("acme", "bob", "r1")),
                   "Accept": "application/json, text/event-stream"}
        answers = []
        for method, params in (
            ("tools/call", {"name": "echo", "arguments": {"text": "hi"}}),
            ("tools/call", {"name": "github_whoami", "arguments": {}}),
            ("tools/list", {}),
        ):
            body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
            answers.append(httpx.post(bare.url + "/mcp", json=body, headers=headers).text)
    finally:
        bare.stop()
    assert '"text":"hi"' in answers[0].replace(" ", "")
    assert "Unknown tool: 'github_whoami'" in answers[1]
    listed = set(re.findall(r'"name":"([a-z_]+)"', answers[2].replace(" ", "")))
    assert listed == {"echo", "whoami", "count"}
