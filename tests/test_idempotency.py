"""``Idempotency-Key`` on /v1 creates (issue 10.3, SECURITY.md 56): a retry replays the first
answer, another request under the same key is 422, a key in use is 409, keys are per user."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from tests.support.databases import Database
from tests.support.oidc_provider import OidcProvider
from tests.support.processes import Server


def headers(token: str, key: str | None = None) -> dict[str, str]:
    found = {"Authorization": f"Bearer {token}"}
    return found | ({"Idempotency-Key": key} if key is not None else {})


def post(gateway: Server, token: str, key: str | None, **body: Any) -> httpx.Response:
    return httpx.post(gateway.url + "/v1/sessions", json=body, headers=headers(token, key),
                      timeout=10)


async def count_named(database: Database, org: str, name: str) -> int:
    conn = await asyncpg.connect(database.admin_url)
    try:
        found = await conn.fetchval(
            "SELECT count(*) FROM sessions WHERE org_id = $1 AND name = $2", org, name)
        return int(found)
    finally:
        await conn.close()


@pytest.fixture
def token(idp: OidcProvider) -> str:
    return idp.access_token("idem", f"u-{uuid.uuid4().hex[:8]}", ["member"])


async def test_a_retry_replays_the_first_answer(
    gateway: Server, database: Database, token: str
) -> None:
    key, name = str(uuid.uuid4()), f"s-{uuid.uuid4().hex[:8]}"
    first = post(gateway, token, key, name=name, variables={"a": 1})
    again = post(gateway, token, f'"{key}"', variables={"a": 1}, name=name)  # sf-string form
    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert again.content == first.content
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert await count_named(database, "idem", name) == 1


async def test_the_same_key_with_another_body_is_422(
    gateway: Server, database: Database, token: str
) -> None:
    key, name = str(uuid.uuid4()), f"s-{uuid.uuid4().hex[:8]}"
    assert post(gateway, token, key, name=name).status_code == 201
    reused = post(gateway, token, key, name=name + "-other")
    assert reused.status_code == 422, reused.text
    assert reused.json()["code"] == "idempotency_key_reused"
    assert await count_named(database, "idem", name + "-other") == 0


async def test_keys_belong_to_one_user(
    gateway: Server, database: Database, token: str, idp: OidcProvider
) -> None:
    other = idp.access_token("idem", f"v-{uuid.uuid4().hex[:8]}", ["member"])
    key, name = str(uuid.uuid4()), f"s-{uuid.uuid4().hex[:8]}"
    mine, theirs = post(gateway, token, key, name=name), post(gateway, other, key, name=name)
    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["id"] != theirs.json()["id"]
    assert "idempotent-replayed" not in theirs.headers
    assert await count_named(database, "idem", name) == 2


def test_malformed_keys_are_400(gateway: Server, token: str) -> None:
    for key in ("", "a" * 256, "with space", "caf\u00e9", "tab\tkey"):
        resp = httpx.post(gateway.url + "/v1/sessions", json={},
                          headers=[(b"Authorization", f"Bearer {token}".encode()),
                                   (b"Idempotency-Key", key.encode())])
        assert resp.status_code == 400, (key, resp.text)
        assert resp.json()["code"] == "invalid_idempotency_key"


async def test_a_key_in_use_is_409_until_its_request_ends(
    gateway: Server, database: Database, token: str
) -> None:
    key, name = str(uuid.uuid4()), f"s-{uuid.uuid4().hex[:8]}"
    # Stand in for a first request still running: hold the lock it would hold.
    first = post(gateway, token, key, name=name)
    user = first.json()["user_id"]
    key2 = str(uuid.uuid4())
    conn = await asyncpg.connect(database.admin_url)
    try:
        async with conn.transaction():
            assert await conn.fetchval(
                "SELECT pg_try_advisory_xact_lock(hashtextextended('gatehouse.idempotency:'"
                " || jsonb_build_array($1::text, $2::text, $3::text)::text, 0))",
                "idem", user, key2)
            busy = await asyncio.to_thread(post, gateway, token, key2, name=name + "-2")
            assert busy.status_code == 409, busy.text
            assert busy.json()["code"] == "idempotency_key_in_progress"
    finally:
        await conn.close()
    assert post(gateway, token, key2, name=name + "-2").status_code == 201


async def test_concurrent_duplicates_create_once(
    gateway: Server, database: Database, token: str
) -> None:
    key, name = str(uuid.uuid4()), f"s-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
        answers = await asyncio.gather(*(
            client.post("/v1/sessions", json={"name": name}, headers=headers(token, key))
            for _ in range(12)
        ))
    codes = sorted({a.status_code for a in answers})
    assert set(codes) <= {201, 409}, [a.text for a in answers]
    assert len({a.json()["id"] for a in answers if a.status_code == 201}) == 1
    assert all(a.json()["code"] == "idempotency_key_in_progress"
               for a in answers if a.status_code == 409)
    assert await count_named(database, "idem", name) == 1


async def test_expired_keys_are_purged_and_not_replayed(
    gateway: Server, database: Database, token: str
) -> None:
    key, name = str(uuid.uuid4()), f"s-{uuid.uuid4().hex[:8]}"
    first = post(gateway, token, key, name=name)
    user = first.json()["user_id"]
    conn = await asyncpg.connect(database.admin_url)
    try:
        kept = await conn.fetchval(
            "SELECT expires_at - created_at FROM idempotency_keys"
            " WHERE org_id = 'idem' AND user_id = $1 AND key = $2", user, key)
        assert kept.total_seconds() >= 86_400
        await conn.execute(
            "UPDATE idempotency_keys SET created_at = now() - interval '2 days',"
            " expires_at = now() - interval '1 second' WHERE user_id = $1", user)
        again = post(gateway, token, key, name=name)
        assert again.status_code == 201 and "idempotent-replayed" not in again.headers
        assert again.json()["id"] != first.json()["id"]
        rows = await conn.fetch(
            "SELECT expires_at > now() AS live FROM idempotency_keys WHERE user_id = $1", user)
        assert [r["live"] for r in rows] == [True]
    finally:
        await conn.close()


async def test_a_failed_create_keeps_no_key(
    start_gateway: Any, database: Database, idp: OidcProvider
) -> None:
    capped = start_gateway(session_max_active_per_user="1")
    token = idp.access_token("idem", f"w-{uuid.uuid4().hex[:8]}", ["member"])
    held = post(capped, token, None, name="held")
    key = str(uuid.uuid4())
    refused = post(capped, token, key, name="second")
    assert refused.status_code == 409 and refused.json()["code"] == "session_quota_exceeded"
    httpx.delete(capped.url + held.headers["location"], headers=headers(token), timeout=10)
    retried = post(capped, token, key, name="second")
    assert retried.status_code == 201 and "idempotent-replayed" not in retried.headers


def test_prompt_saves_and_rollbacks_replay_too(gateway: Server, token: str) -> None:
    def send(method: str, path: str, key: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.request(method, gateway.url + path, json=body,
                             headers=headers(token, key), timeout=10)

    save_key, rollback_key = str(uuid.uuid4()), str(uuid.uuid4())
    saves = [send("PUT", "/v1/prompts/user", save_key, {"source": "be kind"}) for _ in range(2)]
    assert saves[0].status_code == saves[1].status_code == 200, saves[0].text
    assert saves[1].content == saves[0].content and saves[0].json()["version"] == 1
    send("PUT", "/v1/prompts/user", str(uuid.uuid4()), {"source": "be terse"})
    rollbacks = [send("POST", "/v1/prompts/user/rollback", rollback_key, {"version": 1})
                 for _ in range(2)]
    assert rollbacks[1].content == rollbacks[0].content and rollbacks[0].json()["version"] == 3
    assert rollbacks[1].headers["idempotent-replayed"] == "true"
    reused = send("PUT", "/v1/prompts/user", rollback_key, {"source": "be kind"})
    assert reused.status_code == 422 and reused.json()["code"] == "idempotency_key_reused"
    history = httpx.get(gateway.url + "/v1/prompts/user/versions", headers=headers(token),
                        timeout=10).json()["items"]
    assert [item["version"] for item in history] == [3, 2, 1]


async def test_a_create_whose_answer_was_lost_is_replayed(
    gateway: Server, database: Database, token: str
) -> None:
    """The ambiguous case: the client gives up waiting, the server commits anyway."""
    key, name = str(uuid.uuid4()), f"s-{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(database.admin_url)
    try:
        async with conn.transaction():  # stall creates in this organisation
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('gatehouse.sessions:' || $1, 0))",
                "idem")
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(gateway.url + "/v1/sessions", json={"name": name},
                           headers=headers(token, key), timeout=1)
            busy = await asyncio.to_thread(post, gateway, token, key, name=name)
            assert busy.status_code == 409  # the lost request is still running
    finally:
        await conn.close()
    deadline = asyncio.get_running_loop().time() + 10
    while (retry := post(gateway, token, key, name=name)).status_code == 409:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    assert retry.status_code == 201 and retry.headers["idempotent-replayed"] == "true"
    assert await count_named(database, "idem", name) == 1
