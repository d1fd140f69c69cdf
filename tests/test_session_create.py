"""A session create is one database statement (issue 14 item 5): the organisation's creation
lock, the caps check, the insert and the audit row are ``gatehouse_create_session``
(migration 0007), so on a busy event loop the lock is held for one round trip and the commit,
not for four. The function is SECURITY INVOKER: row-level security still applies inside it."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from gateway import sessions
from gateway.audit import AuditEntry
from gateway.errors import Conflict
from sql import QUERIES, create_pool, rls_transaction
from tests.support.databases import Database
from tests.support.oidc_provider import OidcProvider
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.support.processes import Server, start_uvicorn
from tests.support.standin import Running
from tests.support.tenants import Who, new_user

NEW = sessions.NewSession("s", None, {}, {}, None, 3600)
ROOMY = sessions.Caps(per_user=50, per_org=10_000)


@pytest.fixture(scope="module")
def traced_gateway(
    gateway_env: dict[str, str], work_dir: Path
) -> Iterator[tuple[Server, OtlpReceiver]]:
    receiver = OtlpReceiver()
    running = Running(receiver.app)
    gateway = start_uvicorn("gateway.app:create_app", {
        **gateway_env, "OTEL_EXPORTER_OTLP_ENDPOINT": running.url,
        "OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_TRACES_SAMPLER": "parentbased_always_on",
    }, work_dir, "gateway-create-traced")
    try:
        yield gateway, receiver
    finally:
        gateway.stop()
        running.stop()


@pytest.fixture
async def pool(database: Database) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database.app_url)
    try:
        yield pool
    finally:
        await pool.close()


def statements(spans: list[ReceivedSpan]) -> list[str]:
    """The SQL of each database span under the create's RLS transaction."""
    (transaction,) = [s for s in spans if s.name == "rls transaction"]
    return [" ".join(str(s.attributes.get("db.statement", "")).split()) for s in spans
            if s.parent_span_id == transaction.span_id and "db.system" in s.attributes]


def test_a_create_is_one_statement_in_its_transaction(
    traced_gateway: tuple[Server, OtlpReceiver], idp: OidcProvider
) -> None:
    gateway, receiver = traced_gateway
    headers = {"Authorization": "Bearer " + idp.access_token("ten-one", "olive", ["member"])}
    httpx.get(gateway.url + "/v1/sessions", headers=headers).raise_for_status()  # provisions
    trace_id = secrets.token_hex(16)
    headers["traceparent"] = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    created = httpx.post(gateway.url + "/v1/sessions", json={"name": "one"}, headers=headers)
    assert created.status_code == 201, created.text

    spans = receiver.wait_for(
        lambda got: any(s.trace_id == trace_id and s.kind == "SERVER" for s in got))
    sql = statements([s for s in spans if s.trace_id == trace_id])
    assert sql[0].startswith("BEGIN") and "COMMIT;" in sql, sql
    inside = sql[1:sql.index("COMMIT;")]
    assert len(inside) == 2 and inside[0].startswith("SELECT set_config('app.org_id'"), sql
    assert inside[1] == " ".join(QUERIES["create_session"].split()), sql


def entry(who: Who, session_id: uuid.UUID, org_id: str | None = None) -> AuditEntry:
    return AuditEntry(org_id or who.org_id, who.user_id, "session.create", "success",
                      target=f"session:{session_id}")


async def test_the_function_writes_the_session_and_its_audit_row(pool: asyncpg.Pool) -> None:
    who = await new_user(pool, "ten-fn")
    session_id = uuid.uuid4()
    async with rls_transaction(pool, who, org_wide=True) as conn:
        made = await sessions.create(conn, session_id, NEW, ROOMY, entry(who, session_id))
    assert (made.id, made.org_id, made.user_id, made.status) == (
        session_id, who.org_id, who.user_id, "active")
    async with rls_transaction(pool, who) as conn:
        targets = await conn.fetch("SELECT target FROM audit_log WHERE org_id = $1 AND "
                                   "event = 'session.create'", who.org_id)
    assert f"session:{session_id}" in {r["target"] for r in targets}


async def test_row_level_security_applies_inside_the_function(pool: asyncpg.Pool) -> None:
    """SECURITY INVOKER: an audit row for another organisation is refused (the owner of a
    SECURITY DEFINER function would bypass row-level security), and the create with it."""
    who = await new_user(pool, "ten-fn")
    session_id = uuid.uuid4()
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with rls_transaction(pool, who, org_wide=True) as conn:
            await sessions.create(conn, session_id, NEW, ROOMY,
                                  entry(who, session_id, org_id="ten-other"))
    async with rls_transaction(pool, who) as conn:
        assert await conn.fetchval("SELECT count(*) FROM sessions WHERE id = $1",
                                   session_id) == 0


async def test_a_create_needs_an_organization_wide_transaction(pool: asyncpg.Pool) -> None:
    """Without it the organisation's count would see only the caller's own sessions."""
    who = await new_user(pool, "ten-fn")
    session_id = uuid.uuid4()
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with rls_transaction(pool, who) as conn:
            await sessions.create(conn, session_id, NEW, ROOMY, entry(who, session_id))


async def test_the_organization_cap_counts_every_member(pool: asyncpg.Pool) -> None:
    org = f"ten-cap-{uuid.uuid4().hex[:8]}"
    first, second = await new_user(pool, org), await new_user(pool, org)
    caps = sessions.Caps(per_user=5, per_org=1)
    made = uuid.uuid4()
    async with rls_transaction(pool, first, org_wide=True) as conn:
        await sessions.create(conn, made, NEW, caps, entry(first, made))
    refused = uuid.uuid4()
    with pytest.raises(Conflict, match="per organisation") as caught:
        async with rls_transaction(pool, second, org_wide=True) as conn:
            await sessions.create(conn, refused, NEW, caps, entry(second, refused))
    assert caught.value.code == "session_quota_exceeded"
