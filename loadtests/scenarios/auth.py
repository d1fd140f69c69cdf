"""Authentication: most requests carry a valid token; a share carry an expired or a forged one,
which the gateway must refuse with 401 (counted as success; anything else is a failure).

A forged token claims the development issuer and its key id but is signed with another key;
an expired one is the issuer's own, expired ten minutes ago (past the allowed clock skew).
"""

from __future__ import annotations

from locust import tag, task

from loadtests.scenarios import mcp
from loadtests.scenarios.common import GatehouseUser, expect_status, forger_key, mint

EXPIRED_LIFETIME = -600  # seconds: well past GATEHOUSE_CLOCK_SKEW_SECONDS (at most 300)


def valid(user: GatehouseUser) -> None:
    with user.client.get("/v1/sessions?limit=1", headers=user.bearer(), catch_response=True,
                         name=f"{user.scenario}: valid token") as response:
        expect_status(response, 200)


def _refused(user: GatehouseUser, label: str, token: str, mcp_request: bool) -> None:
    name = f"{user.scenario}: {label} token (401)"
    if mcp_request:
        request = user.client.post(
            "/mcp", json=mcp.body(mcp.CURRENT, "tools/list"), name=name, catch_response=True,
            headers={**user.bearer(token), **mcp.headers(mcp.CURRENT, "tools/list")})
    else:
        request = user.client.get("/v1/sessions?limit=1", headers=user.bearer(token),
                                  name=name, catch_response=True)
    with request as response:
        if response.status_code == 401:
            response.success()
        else:
            response.failure(f"{label} token answered HTTP {response.status_code}, not 401")


def expired(user: GatehouseUser) -> None:
    token = mint(user.gateway, user.org, user.user_id, lifetime=EXPIRED_LIFETIME)
    _refused(user, "expired", token, mcp_request=False)


def forged(user: GatehouseUser) -> None:
    token = mint(user.gateway, user.org, user.user_id, key=forger_key())
    _refused(user, "forged", token, mcp_request=True)


class AuthUser(GatehouseUser):
    """Seven requests in ten with a valid token, the rest expired or forged."""

    scenario = "auth"

    @tag("auth")
    @task(7)
    def valid_token(self) -> None:
        valid(self)

    @tag("auth")
    @task(2)
    def expired_token(self) -> None:
        expired(self)

    @tag("auth")
    @task(1)
    def forged_token(self) -> None:
        forged(self)
