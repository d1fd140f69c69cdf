"""Tenancy over every /v1 endpoint and the session-scoped MCP endpoint (SECURITY.md 16-18,
22-24): two organisations, two users each, real database, real identity provider."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from fastmcp import Client

from tests.support.databases import Database
from tests.support.oidc_provider import OidcProvider
from tests.support.processes import Server

INJECTION = "x' OR '1'='1'; DROP TABLE sessions; --"


@dataclass(frozen=True)
class Person:
    org: str
    user: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass(frozen=True)
class World:
    admin_a: Person
    member_a: Person
    admin_b: Person
    member_b: Person
    sessions: dict[str, str]  # user -> one of their session ids


def api(server: Server, person: Person, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(method, server.url + path, headers=person.headers, timeout=10, **kw)


def create(server: Server, person: Person, **body: Any) -> dict[str, Any]:
    resp = api(server, person, "POST", "/v1/sessions", json=body)
    assert resp.status_code == 201, resp.text
    data: dict[str, Any] = resp.json()
    return data


@pytest.fixture(scope="module")
def world(gateway: Server, idp: OidcProvider) -> World:
    people = {
        name: Person(org, user, idp.access_token(org, user, roles))
        for name, org, user, roles in [
            ("admin_a", "ten-a", "ann", ["owner"]),
            ("member_a", "ten-a", "abe", ["member"]),
            ("admin_b", "ten-b", "bea", ["owner"]),
            ("member_b", "ten-b", "bob", ["member"]),
        ]
    }
    sessions = {p.user: create(gateway, p, name=f"{p.user}'s")["id"] for p in people.values()}
    return World(**people, sessions=sessions)


async def row_snapshot(database: Database) -> list[Any]:
    conn = await asyncpg.connect(database.admin_url)
    try:
        # last_used_at is left out: replicas write it in the background, on their own schedule.
        rows = await conn.fetch(
            "SELECT id, org_id, user_id, name, allowed_tools, variables, metadata, status,"
            " expires_at, closed_at, prompt FROM sessions ORDER BY id"
        )
        members = await conn.fetch("SELECT * FROM memberships ORDER BY org_id, user_id, role")
        return [tuple(r) for r in rows] + [tuple(m) for m in members]
    finally:
        await conn.close()


# --- foreign and private ids ---------------------------------------------------------------


def id_requests(world: World, victim: str) -> list[tuple[str, str, dict[str, Any]]]:
    session = world.sessions[victim]
    return [
        ("GET", f"/v1/sessions/{session}", {}),
        ("PATCH", f"/v1/sessions/{session}", {"json": {"name": "hijacked"}}),
        ("PATCH", f"/v1/sessions/{session}", {"json": {"status": "closed"}}),
        ("DELETE", f"/v1/sessions/{session}", {}),
    ]


@pytest.mark.parametrize("attacker", ["admin_a", "member_a"])
async def test_other_organizations_ids_answer_404_and_touch_nothing(
    gateway: Server, world: World, database: Database, attacker: str
) -> None:
    before = await row_snapshot(database)
    person: Person = getattr(world, attacker)
    for victim in ("bea", "bob"):
        for method, path, kw in id_requests(world, victim):
            resp = api(gateway, person, method, path, **kw)
            assert resp.status_code == 404, (method, path, resp.text)
            assert resp.json()["code"] == "not_found"
    roles = api(gateway, world.admin_a, "PUT", "/v1/members/bob/roles", json={"roles": ["owner"]})
    assert roles.status_code == 404
    assert await row_snapshot(database) == before


async def test_members_cannot_reach_each_others_sessions_but_admins_can(
    gateway: Server, world: World, database: Database
) -> None:
    before = await row_snapshot(database)
    for method, path, kw in id_requests(world, "ann"):
        assert api(gateway, world.member_a, method, path, **kw).status_code == 404
    assert await row_snapshot(database) == before
    seen = api(gateway, world.admin_a, "GET", f"/v1/sessions/{world.sessions['abe']}")
    assert seen.status_code == 200
    assert seen.json()["user_id"] == "abe"


async def test_admins_may_close_but_not_change_others_sessions(
    gateway: Server, world: World, database: Database
) -> None:
    """SECURITY.md 63: ``sessions:admin`` is "see and close", nothing more."""
    victim = create(gateway, world.member_a, name="abe's tools", allowed_tools=["echo"],
                    prompt="be brief")["id"]
    before = await row_snapshot(database)
    for change in ({"allowed_tools": ["echo", "github_create_issue"]}, {"prompt": "obey ann"},
                   {"name": "x"}, {"variables": {"a": 1}}, {"metadata": {"a": 1}},
                   {"ttl_seconds": 60}, {"status": "closed", "allowed_tools": None}, {}):
        resp = api(gateway, world.admin_a, "PATCH", f"/v1/sessions/{victim}", json=change)
        assert resp.status_code == 403, (change, resp.text)
        assert resp.json()["code"] == "insufficient_scope"
    assert await row_snapshot(database) == before
    # The owner may still change it, and the admin may close it.
    own = api(gateway, world.member_a, "PATCH", f"/v1/sessions/{victim}", json={"name": "mine"})
    assert own.status_code == 200 and own.json()["name"] == "mine"
    closed = api(gateway, world.admin_a, "PATCH", f"/v1/sessions/{victim}",
                 json={"status": "closed"})
    assert closed.status_code == 200, closed.text
    assert closed.json()["status"] == "closed"
    assert closed.json()["allowed_tools"] == ["echo"] and closed.json()["prompt"] == "be brief"
    other = create(gateway, world.member_a, name="closed by delete")["id"]
    assert api(gateway, world.admin_a, "DELETE", f"/v1/sessions/{other}").status_code == 204


def test_unknown_and_malformed_ids_answer_404(gateway: Server, world: World) -> None:
    for raw in ("00000000-0000-0000-0000-000000000000", "not-a-uuid", "1%27%20OR%201=1"):
        assert api(gateway, world.admin_a, "GET", f"/v1/sessions/{raw}").status_code == 404
    assert (
        api(
            gateway, world.admin_a, "PUT", "/v1/members/nobody/roles", json={"roles": ["member"]}
        ).status_code
        == 404
    )


def test_lists_show_only_ones_own_organization(gateway: Server, world: World) -> None:
    mine = api(gateway, world.member_a, "GET", "/v1/sessions").json()["items"]
    assert {s["user_id"] for s in mine} == {"abe"}
    everyone = api(gateway, world.admin_a, "GET", "/v1/sessions?all_users=true").json()["items"]
    assert {s["user_id"] for s in everyone} == {"ann", "abe"}
    members = api(gateway, world.member_a, "GET", "/v1/members").json()["items"]
    assert {m["user_id"] for m in members} == {"ann", "abe"}
    audit = api(gateway, world.admin_a, "GET", "/v1/audit?limit=200").json()["items"]
    assert audit and all(not e["target"].endswith(world.sessions["bea"]) for e in audit)
    assert all(e["actor"] in ("ann", "abe", "") for e in audit)


# --- permissions (SECURITY.md 16) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "missing"),
    [
        ("POST", "/v1/sessions", {}, "sessions:write"),
        ("GET", "/v1/audit", None, "audit:read"),
        ("PUT", "/v1/members/ann/roles", {"roles": ["viewer"]}, "members:write"),
    ],
)
def test_insufficient_role_is_403_naming_the_permission(
    gateway: Server, idp: OidcProvider, method: str, path: str, body: Any, missing: str
) -> None:
    viewer = Person("ten-a", "val", idp.access_token("ten-a", "val", ["viewer"]))
    resp = (
        api(gateway, viewer, method, path, json=body)
        if body is not None
        else api(gateway, viewer, method, path)
    )
    assert resp.status_code == 403
    assert resp.json()["code"] == "insufficient_scope"
    assert missing in resp.json()["detail"]


def test_members_cannot_list_everyones_sessions(gateway: Server, world: World) -> None:
    resp = api(gateway, world.member_a, "GET", "/v1/sessions?all_users=true")
    assert resp.status_code == 403


# --- injection, atomicity, audit (SECURITY.md 22-24) ----------------------------------------


async def test_injection_strings_are_data(
    gateway: Server, world: World, database: Database
) -> None:
    created = create(
        gateway,
        world.member_a,
        name=INJECTION,
        variables={INJECTION: INJECTION},
        metadata={"k": INJECTION},
    )
    fetched = api(gateway, world.member_a, "GET", f"/v1/sessions/{created['id']}").json()
    assert fetched["name"] == INJECTION and fetched["variables"] == {INJECTION: INJECTION}
    listed = api(gateway, world.admin_a, "GET", "/v1/audit", params={"actor": INJECTION})
    assert listed.status_code == 200 and listed.json()["items"] == []
    bad_status = api(gateway, world.member_a, "GET", "/v1/sessions", params={"status": INJECTION})
    assert bad_status.status_code == 422
    bad_cursor = api(gateway, world.member_a, "GET", "/v1/sessions", params={"cursor": INJECTION})
    assert bad_cursor.status_code == 400
    conn = await asyncpg.connect(database.admin_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM sessions") >= 5
    finally:
        await conn.close()


async def test_failed_change_leaves_nothing_behind(
    gateway: Server, world: World, database: Database
) -> None:
    before = await row_snapshot(database)
    audit_before = api(gateway, world.admin_b, "GET", "/v1/audit").json()["items"][0]["seq"]
    # Removing the only owner runs the change, then fails: nothing may remain of it.
    resp = api(gateway, world.admin_b, "PUT", "/v1/members/bea/roles", json={"roles": ["member"]})
    assert resp.status_code == 409
    assert resp.json()["code"] == "last_owner"
    assert await row_snapshot(database) == before
    assert api(gateway, world.admin_b, "GET", "/v1/audit").json()["items"][0]["seq"] == audit_before


async def test_audit_log_is_append_only_for_the_application(database: Database) -> None:
    conn = await asyncpg.connect(database.app_url)
    try:
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.org_id', 'ten-a', true)")
            assert await conn.fetchval("SELECT count(*) FROM audit_log") > 0
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("UPDATE audit_log SET outcome = 'success'")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM audit_log")
    finally:
        await conn.close()


def verify(database: Database) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "audit", "verify", "--database-url", database.admin_url],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_audit_chain_verifies_and_detects_an_edited_row(
    world: World, database: Database
) -> None:
    intact = verify(database)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "intact" in intact.stdout
    conn = await asyncpg.connect(database.admin_url)
    try:
        target = await conn.fetchrow(
            "SELECT org_id, seq FROM audit_log WHERE org_id = 'ten-b' ORDER BY seq LIMIT 1"
        )
        assert target is not None
        # The owner can only edit by switching the append-only trigger off first.
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute(
                "UPDATE audit_log SET actor = 'someone-else' WHERE org_id = $1 AND seq = $2",
                target["org_id"],
                target["seq"],
            )
        broken = verify(database)
        assert broken.returncode == 1
        assert f"organisation 'ten-b', first broken row seq={target['seq']}" in broken.stdout
    finally:
        async with conn.transaction():  # restore, so later tests see an intact chain
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute(
                "UPDATE audit_log SET actor = 'bea'"
                " WHERE org_id = 'ten-b' AND actor = 'someone-else'"
            )
        await conn.close()


def test_security_events_are_audited(gateway: Server, world: World) -> None:
    session = create(gateway, world.member_a, name="audited")["id"]
    api(gateway, world.member_a, "PATCH", f"/v1/sessions/{session}", json={"name": "renamed"})
    api(gateway, world.member_a, "DELETE", f"/v1/sessions/{session}")
    api(gateway, world.admin_a, "PUT", "/v1/members/abe/roles", json={"roles": ["member"]})
    events = api(gateway, world.admin_a, "GET", "/v1/audit?limit=200").json()["items"]
    mine = [(e["event"], e["actor"]) for e in events if e["target"] == f"session:{session}"]
    assert sorted(mine) == [
        ("session.close", "abe"),
        ("session.create", "abe"),
        ("session.update", "abe"),
    ]
    role_changes = [e for e in events if e["event"] == "role.change"]
    assert role_changes[0]["details"] == {"before": ["member"], "after": ["member"]}


# --- quotas ------------------------------------------------------------------------------------


async def test_concurrent_creates_cannot_exceed_the_cap(
    start_gateway: Any, idp: OidcProvider
) -> None:
    capped = start_gateway(session_max_active_per_user="5")
    token = idp.access_token("ten-cap", "cam", ["member"])
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
        responses = await asyncio.gather(
            *(http.post(capped.url + "/v1/sessions", json={"name": f"s{i}"}) for i in range(20))
        )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] * 5 + [409] * 15
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {
        "session_quota_exceeded"
    }


# --- session-scoped MCP ----------------------------------------------------------------------


async def call_whoami(url: str, token: str) -> Any:
    async with Client(url, auth=token) as client:
        result = await client.call_tool("whoami", {})
    return json.loads(result.content[0].text)


async def test_session_scoped_mcp(gateway: Server, world: World, database: Database) -> None:
    scoped = create(gateway, world.member_a, allowed_tools=["echo"])["id"]
    async with Client(f"{gateway.url}/mcp/{scoped}", auth=world.member_a.token) as client:
        assert [t.name for t in await client.list_tools()] == ["echo"]
        assert (await client.call_tool("echo", {"text": "ok"})).content[0].text == "ok"
        refused = await client.call_tool("whoami", {}, raise_on_error=False)
        assert refused.is_error
        assert "not allowed in this session" in refused.content[0].text
    open_session = create(gateway, world.member_a)["id"]
    me = await call_whoami(f"{gateway.url}/mcp/{open_session}", world.member_a.token)
    assert me["session_id"] == open_session


async def test_unusable_sessions_answer_404_on_mcp(
    gateway: Server, world: World, database: Database
) -> None:
    closed = create(gateway, world.member_a)["id"]
    api(gateway, world.member_a, "DELETE", f"/v1/sessions/{closed}")
    expired = create(gateway, world.member_a)["id"]
    conn = await asyncpg.connect(database.admin_url)
    await conn.execute(
        "UPDATE sessions SET expires_at = now() - interval '1 second' WHERE id = $1", expired
    )
    await conn.close()
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    headers = {**world.member_a.headers, "Accept": "application/json, text/event-stream"}
    for session in (
        closed,
        expired,
        world.sessions["ann"],
        world.sessions["bob"],
        "00000000-0000-0000-0000-000000000000",
        "nonsense",
    ):
        resp = httpx.post(f"{gateway.url}/mcp/{session}", json=body, headers=headers)
        assert resp.status_code == 404, session
        assert resp.json()["code"] == "not_found"
    assert api(gateway, world.member_a, "GET", f"/v1/sessions/{expired}").json()["status"] == (
        "expired"
    )


async def test_last_used_is_kept_fresh_and_tool_calls_are_audited(
    start_gateway: Any, world: World
) -> None:
    fast = start_gateway(session_activity_flush_seconds="0.1", audit_flush_seconds="0.1")
    session = create(fast, world.member_a)
    await call_whoami(f"{fast.url}/mcp/{session['id']}", world.member_a.token)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        fresh = api(fast, world.member_a, "GET", f"/v1/sessions/{session['id']}").json()
        events = api(fast, world.admin_a, "GET", "/v1/audit", params={"event": "tool.call"}).json()[
            "items"
        ]
        calls = [e for e in events if e["details"].get("session_id") == session["id"]]
        if fresh["last_used_at"] > session["last_used_at"] and calls:
            break
        await asyncio.sleep(0.05)
    assert fresh["last_used_at"] > session["last_used_at"]
    assert calls[0]["target"] == "tool:whoami" and calls[0]["outcome"] == "success"
    assert calls[0]["details"]["duration_ms"] > 0
    assert "arguments" not in json.dumps(calls[0])


async def test_authentication_failures_are_audited_but_rate_limited(
    start_gateway: Any, database: Database
) -> None:
    flooded = start_gateway(audit_auth_failure_limit="5/minute")
    conn = await asyncpg.connect(database.admin_url)
    try:
        # Summary rows of what was suppressed (auth.failure.suppressed) may land meanwhile.
        count = ("SELECT count(*) FROM audit_log"
                 " WHERE org_id = '_platform' AND event = 'auth.failure'")
        before = await conn.fetchval(count)
        async with httpx.AsyncClient() as http:
            for i in range(40):
                resp = await http.get(
                    flooded.url + "/v1/sessions", headers={"Authorization": f"Bearer bad{i}"}
                )
                assert resp.status_code == 401
        after = await conn.fetchval(count)
        row = await conn.fetchrow(
            "SELECT * FROM audit_log WHERE org_id = '_platform' AND event = 'auth.failure'"
            " ORDER BY seq DESC LIMIT 1"
        )
    finally:
        await conn.close()
    assert 1 <= after - before <= 5
    assert row is not None
    assert (row["event"], row["outcome"]) == ("auth.failure", "failure")
    assert "bad" not in row["details"]  # the presented token is never recorded


def test_values_postgres_cannot_store_are_422_not_500(gateway: Server, world: World) -> None:
    nul = api(gateway, world.member_a, "POST", "/v1/sessions", json={"name": "a\u0000b"})
    assert nul.status_code == 422
    assert nul.json()["code"] == "validation_failed"
    key = api(gateway, world.member_a, "POST", "/v1/sessions", json={"variables": {"\u0000": 1}})
    assert key.status_code == 422
    for cursor in ("\u00b2", "9223372036854775808"):
        assert api(gateway, world.admin_a, "GET", "/v1/audit",
                   params={"cursor": cursor}).status_code == 422


async def test_graceful_shutdown_flushes_queued_tool_call_events(
    start_gateway: Any, world: World, database: Database
) -> None:
    slow = start_gateway(audit_flush_seconds="3600")  # nothing is flushed on a timer
    session = create(slow, world.member_a)["id"]
    await call_whoami(f"{slow.url}/mcp/{session}", world.member_a.token)
    conn = await asyncpg.connect(database.admin_url)
    try:
        query = ("SELECT count(*) FROM audit_log WHERE event = 'tool.call'"
                 " AND details->>'session_id' = $1")
        assert await conn.fetchval(query, session) == 0
        slow.stop()  # SIGTERM: uvicorn ends the lifespan, which flushes what is queued
        assert "Application shutdown complete" in slow.log_text()
        assert await conn.fetchval(query, session) == 1
    finally:
        await conn.close()


async def test_a_tool_error_is_audited_as_a_failure(start_gateway: Any, world: World) -> None:
    """The outcome comes from the forwarded answer: a 200 carrying ``isError`` (here: not
    connected to GitHub) is a failed tool call."""
    fast = start_gateway(audit_flush_seconds="0.1")
    session = create(fast, world.member_a)
    async with Client(f"{fast.url}/mcp/{session['id']}", auth=world.member_a.token) as client:
        assert (await client.call_tool("github_whoami", {}, raise_on_error=False)).is_error
    deadline, calls = time.monotonic() + 10, list[dict[str, Any]]()
    while not calls and time.monotonic() < deadline:
        events = api(fast, world.admin_a, "GET", "/v1/audit", params={"event": "tool.call"})
        calls = [e for e in events.json()["items"]
                 if e["details"].get("session_id") == session["id"]]
        await asyncio.sleep(0.05)
    assert calls and calls[0]["target"] == "tool:github_whoami"
    assert calls[0]["outcome"] == "failure"
