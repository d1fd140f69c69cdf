"""Connections: the application role's pool (and the check that the role is safe to use), and
single connections for operator commands (migrate, audit verify, key rotation)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from sql.errors import DatabaseError, DatabaseUnavailable, UnsafeRoleError

# Privileges that would let the login role read past row-level security.
_ROLE_CHECK = """
SELECT r.rolsuper, r.rolbypassrls,
       EXISTS (SELECT 1 FROM pg_tables t
               WHERE t.schemaname = 'public' AND t.tableowner = current_user) AS owns_tables
FROM pg_roles r WHERE r.rolname = current_user
"""


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    """A pool whose connections reset fully when released (settings, locks, prepared state).

    Connections idle for a minute are closed (down to ``min_size``): a burst does not keep
    ``max_size`` connections of every replica open against the server's ``max_connections``."""
    try:
        pool = await asyncpg.create_pool(
            dsn, min_size=min(min_size, max_size), max_size=max_size, timeout=10,
            command_timeout=30, max_inactive_connection_lifetime=60,
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseUnavailable(f"cannot connect to the database: {type(exc).__name__}") from exc
    assert pool is not None
    return pool


async def verify_app_role(pool: asyncpg.Pool) -> None:
    """Refuse to serve as a role that row-level security would not bind."""
    row = await pool.fetchrow(_ROLE_CHECK)
    if row is None:
        raise UnsafeRoleError("cannot read the login role's attributes")
    problems = [
        name
        for name, present in (
            ("superuser", row["rolsuper"]),
            ("BYPASSRLS", row["rolbypassrls"]),
            ("owner of tables", row["owns_tables"]),
        )
        if present
    ]
    if problems:
        raise UnsafeRoleError(
            "the database login role is " + ", ".join(problems) + "; connect as gatehouse_app"
        )


@asynccontextmanager
async def admin_connection(
    dsn: str, *, bypassing_rls_for: str | None = None
) -> AsyncIterator[asyncpg.Connection]:
    """One connection for an operator command. With ``bypassing_rls_for`` (what the command
    does), refuse a role that row-level security binds: FORCE RLS applies even to the owner, so
    a command that must see every organisation's rows needs a superuser or BYPASSRLS role."""
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseUnavailable(f"cannot connect to the database: {type(exc).__name__}") from exc
    try:
        if bypassing_rls_for is not None and not await conn.fetchval(
            "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"
        ):
            raise DatabaseError(
                f"{bypassing_rls_for} needs a role that bypasses row-level security"
            )
        yield conn
    finally:
        await conn.close()
