"""One organisation cannot exhaust a provider for the others (SECURITY 65; issue 9.8).

End to end (MCP client → gateway → mcp_server → GitHub stand-in), each test on a stack of its
own with small limits and a fresh Redis namespace, so no state leaks between tests:

* an organisation past its share of a provider is refused without spending the provider-wide
  budget, other organisations still get theirs, and the provider-wide limit holds across all;
* one organisation's failing calls (5xx) open only its own breaker for the provider; auth
  failures (a revoked token: 401) open none.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import GatewayFactory
from tests.support.github_grants import Env, call, connect, env_fixture, fail, requests_of, text
from tests.support.processes import Server, start_uvicorn
from tests.support.tenants import Who, new_user

StackFactory = Callable[..., Server]


env = env_fixture()


@pytest.fixture
def stack(
    mcp_server: Server, start_gateway: GatewayFactory, work_dir: Any
) -> Iterator[StackFactory]:
    """A gateway in front of an mcp_server of its own with the given settings."""
    servers: list[Server] = []

    def start(**settings: str) -> Server:
        overrides = {f"GATEHOUSE_{k.upper()}": v for k, v in settings.items()}
        overrides["GATEHOUSE_RESILIENCE_NAMESPACE"] = f"noisy-{uuid.uuid4().hex[:8]}"
        server = start_uvicorn("mcp_server.app:create_app", {**mcp_server.env, **overrides},
                               work_dir, "mcp_server_noisy")
        servers.append(server)
        return start_gateway(mcp_server_url=server.url + "/mcp")

    yield start
    for server in servers:
        server.stop()


async def org_user(env: Env, org: str) -> tuple[Who, str]:
    who = await new_user(env.pool, org=org)
    return who, await connect(env, who)


async def whoami(gateway: Server, env: Env, who: Who) -> str:
    result = await call(gateway, env, who, "github_whoami")
    return text(result) if result.is_error else "ok"


def orgs(count: int) -> list[str]:
    run = uuid.uuid4().hex[:8]
    return [f"noisy-{run}-{i}" for i in range(count)]


async def test_an_organization_past_its_share_leaves_the_others_theirs(
    stack: StackFactory, env: Env
) -> None:
    gateway = stack(provider_rate_limit="8/minute", org_provider_rate_limit="3/minute")
    a, b, c = orgs(3)
    (a1, a1_token), (a2, _) = await org_user(env, a), await org_user(env, a)

    answers = [await whoami(gateway, env, a1) for _ in range(8)]
    assert answers[:3] == ["ok"] * 3
    org_limit = "rate limit exceeded (your organisation's limit for GitHub: 3 per 60 s)"
    assert all(answer.startswith(org_limit) for answer in answers[3:])
    assert (await whoami(gateway, env, a2)).startswith(org_limit)  # the share is per org
    assert len(requests_of(env, a1_token)) == 3

    # A's five refusals spent none of the provider's 8: B gets its 3, C the last 2.
    b1, _ = await org_user(env, b)
    assert [await whoami(gateway, env, b1) for _ in range(3)] == ["ok"] * 3
    c1, _ = await org_user(env, c)
    assert [await whoami(gateway, env, c1) for _ in range(2)] == ["ok"] * 2
    capped = await whoami(gateway, env, c1)
    assert re.match(r"rate limit exceeded \(this server's limit for GitHub: 8 per 60 s\); "
                    r"retry in \d+ s", capped), capped


async def test_one_organizations_failures_open_only_its_own_breaker(
    stack: StackFactory, env: Env
) -> None:
    gateway = stack(breaker_failure_threshold="3", breaker_reset_seconds="60")
    noisy, revoked, quiet = orgs(3)

    failing, failing_token = await org_user(env, noisy)
    fail(env, failing_token, 502, 100)
    for _ in range(3):
        assert "GitHub is unavailable right now" in await whoami(gateway, env, failing)
    before = len(requests_of(env, failing_token))
    assert re.match(r"GitHub is unavailable \(failing recently\); retry in \d+ s",
                    await whoami(gateway, env, failing))
    assert len(requests_of(env, failing_token)) == before  # refused without calling GitHub
    colleague, _ = await org_user(env, noisy)  # the breaker is the organisation's
    assert "failing recently" in await whoami(gateway, env, colleague)

    for _ in range(4):  # revoked tokens: GitHub answered, so these are no breaker failures
        who, token = await org_user(env, revoked)
        fail(env, token, 401, 1)
        assert "no longer accepts your connection" in await whoami(gateway, env, who)
    assert await whoami(gateway, env, (await org_user(env, revoked))[0]) == "ok"

    bystander, _ = await org_user(env, quiet)
    assert await whoami(gateway, env, bystander) == "ok"
