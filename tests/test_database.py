"""Migrations and row-level security against the real database (SECURITY.md 19-22)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from sql import QUERIES, apply_migrations, create_pool, rls_transaction, verify_app_role
from sql.errors import InvalidTenant, UnsafeRoleError
from sql.migrate import discover
from tests.support.databases import Database, with_database
from tests.support.schema import describe
from tests.support.tenants import Who as Tenant
from tests.support.tenants import provision

SCHEMA_FILE = Path(__file__).parent.parent / "sql" / "schema.sql"



@pytest.fixture
async def pool(database: Database) -> AsyncIterator[asyncpg.Pool]:
    # One connection, so every test step provably reuses the same pooled connection.
    pool = await create_pool(database.app_url, min_size=1, max_size=1)
    yield pool
    await pool.close()


async def _provision(pool: asyncpg.Pool, org: str, user: str) -> None:
    await provision(pool, Tenant(org, user))


async def test_migrations_produce_the_schema_file(database: Database) -> None:
    assert await describe(database.admin_url) == SCHEMA_FILE.read_text()


async def test_migrations_are_idempotent_and_safe_concurrently(database: Database) -> None:
    server = database.admin_url
    name = f"gatehouse_mig_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(server)
    await conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = with_database(server, name)
        first, second = await asyncio.gather(apply_migrations(url), apply_migrations(url))
        everything = [f"{m.version:04d}_{m.name}" for m in discover()]
        assert sorted([first, second], key=len) == [[], everything]
        assert await apply_migrations(url) == []
        check = await asyncpg.connect(url)
        assert await check.fetchval("SELECT count(*) FROM gatehouse_migrations") == len(everything)
        await check.close()
    finally:
        await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await conn.close()


async def test_app_role_cannot_bypass_rls(pool: asyncpg.Pool) -> None:
    row = await pool.fetchrow(
        "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
    )
    assert row is not None
    assert (row["rolsuper"], row["rolbypassrls"]) == (False, False)
    assert await pool.fetchval("SELECT current_user") == "gatehouse_app"
    owned = await pool.fetchval(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner = current_user"
    )
    assert owned == 0
    await verify_app_role(pool)  # does not raise


async def test_superuser_pool_is_refused(database: Database) -> None:
    admin_pool = await create_pool(database.admin_url, min_size=1, max_size=1)
    try:
        with pytest.raises(UnsafeRoleError, match="superuser"):
            await verify_app_role(admin_pool)
    finally:
        await admin_pool.close()


async def test_every_table_forces_rls_and_views_are_security_invoker(database: Database) -> None:
    conn = await asyncpg.connect(database.admin_url)
    try:
        tables = await conn.fetch(
            "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class "
            "WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' "
            "AND relname <> 'gatehouse_migrations'"
        )
        assert tables, "no tenant tables found"
        assert all(t["relrowsecurity"] and t["relforcerowsecurity"] for t in tables), tables
        views = await conn.fetch(
            "SELECT relname, reloptions FROM pg_class "
            "WHERE relnamespace = 'public'::regnamespace AND relkind = 'v'"
        )
        assert all("security_invoker=true" in (v["reloptions"] or []) for v in views), views
    finally:
        await conn.close()


async def test_pooled_connection_carries_no_identity(pool: asyncpg.Pool) -> None:
    await _provision(pool, "org-pool", "user-pool")
    async with pool.acquire() as conn:
        settings = await conn.fetchrow(
            "SELECT current_setting('app.org_id', true) AS org, "
            "current_setting('app.user_id', true) AS usr, current_user AS role"
        )
        assert settings is not None
        assert settings["org"] in (None, "")
        assert settings["usr"] in (None, "")
        assert settings["role"] == "gatehouse_app"
        # Outside a tenant transaction no tenant row is visible at all.
        assert await conn.fetchval("SELECT count(*) FROM users") == 0


async def test_tenants_see_only_their_own_rows(pool: asyncpg.Pool) -> None:
    await _provision(pool, "org-a", "ann")
    await _provision(pool, "org-b", "bob")
    async with rls_transaction(pool, Tenant("org-a", "ann")) as conn:
        assert await conn.fetchval("SELECT array_agg(DISTINCT org_id) FROM users") == ["org-a"]
        assert await conn.fetchval("SELECT count(*) FROM users WHERE org_id = 'org-b'") == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("INSERT INTO users (org_id, id) VALUES ('org-b', 'mallory')")


async def test_empty_tenant_setting_matches_nothing(pool: asyncpg.Pool) -> None:
    await _provision(pool, "org-empty", "eve")
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT set_config('app.org_id', '', true)")
        assert await conn.fetchval("SELECT count(*) FROM organizations") == 0
    with pytest.raises(InvalidTenant):
        async with rls_transaction(pool, Tenant("", "eve")):
            pass


async def test_check_constraints_forbid_empty_tenant_keys(database: Database) -> None:
    conn = await asyncpg.connect(database.admin_url)
    try:
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("INSERT INTO organizations (id) VALUES ('')")
    finally:
        await conn.close()


async def test_failed_transaction_leaves_no_row_and_no_setting(pool: asyncpg.Pool) -> None:
    with pytest.raises(asyncpg.UniqueViolationError):
        async with rls_transaction(pool, Tenant("org-fail", "fay")) as conn:
            await conn.execute(QUERIES["provision_principal"], "org-fail", "fay", ["member"])
            await conn.execute("INSERT INTO users (org_id, id) VALUES ('org-fail', 'fay')")
    async with rls_transaction(pool, Tenant("org-fail", "fay")) as conn:
        assert await conn.fetchval("SELECT count(*) FROM users") == 0
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT current_setting('app.org_id', true)") in (None, "")
