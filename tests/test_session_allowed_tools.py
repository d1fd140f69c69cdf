"""A session's ``allowed_tools`` names only tools mcp_server offers (issue 12 item 5): unknown
names are refused with 422, each listed; if mcp_server cannot say which tools exist, nothing
is created (503)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import GatewayFactory
from tests.support.oidc_provider import OidcProvider
from tests.support.processes import Server, free_port


@pytest.fixture(scope="module")
def member(idp: OidcProvider) -> dict[str, str]:
    token = idp.access_token(f"tools-{uuid.uuid4().hex[:8]}", "tia", ["member"])
    return {"Authorization": f"Bearer {token}"}


def sessions(gateway: Server, headers: dict[str, str], method: str = "POST", path: str = "",
             **body: Any) -> httpx.Response:
    return httpx.request(method, f"{gateway.url}/v1/sessions{path}", json=body, headers=headers,
                         timeout=10)


def assert_unknown(resp: httpx.Response, unknown: dict[int, str]) -> None:
    assert resp.status_code == 422, resp.text
    problem = resp.json()
    assert problem["code"] == "validation_failed"
    assert problem["errors"] == [
        {"loc": ["body", "allowed_tools", index], "msg": f"no tool is named {name!r}",
         "type": "unknown_tool"} for index, name in unknown.items()]
    assert all(name in problem["detail"] for name in unknown.values())


def test_a_new_session_naming_unknown_tools_is_refused_with_their_names(
    gateway: Server, member: dict[str, str]
) -> None:
    before = sessions(gateway, member, "GET").json()["items"]
    resp = sessions(gateway, member, allowed_tools=["echo", "ecoh", "whoami", "no_such/tool"])
    assert_unknown(resp, {1: "ecoh", 3: "no_such/tool"})
    assert sessions(gateway, member, "GET").json()["items"] == before  # nothing was created


def test_known_tools_an_empty_list_and_null_are_fine(
    gateway: Server, member: dict[str, str]
) -> None:
    for tools in (["echo", "whoami", "count"], [], None):
        created = sessions(gateway, member, allowed_tools=tools)
        assert created.status_code == 201, created.text
        assert created.json()["allowed_tools"] == tools


def test_a_change_naming_unknown_tools_is_refused_and_changes_nothing(
    gateway: Server, member: dict[str, str]
) -> None:
    session = sessions(gateway, member, allowed_tools=["echo"]).json()["id"]
    resp = sessions(gateway, member, "PATCH", f"/{session}", allowed_tools=["echo", "rm_rf"],
                    name="renamed")
    assert_unknown(resp, {1: "rm_rf"})
    kept = sessions(gateway, member, "GET", f"/{session}").json()
    assert (kept["allowed_tools"], kept["name"]) == (["echo"], "")
    fine = sessions(gateway, member, "PATCH", f"/{session}", allowed_tools=["whoami"])
    assert fine.status_code == 200 and fine.json()["allowed_tools"] == ["whoami"]


def test_without_mcp_server_an_allow_list_fails_closed(
    start_gateway: GatewayFactory, member: dict[str, str]
) -> None:
    orphan = start_gateway(mcp_server_url=f"http://127.0.0.1:{free_port()}/mcp")
    before = sessions(orphan, member, "GET").json()["items"]
    refused = sessions(orphan, member, allowed_tools=["echo"])
    assert refused.status_code == 503, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["code"] == "upstream_unavailable"
    assert refused.headers["retry-after"]
    assert sessions(orphan, member, "GET").json()["items"] == before
    assert sessions(orphan, member).status_code == 201  # no allow-list: nothing to check
