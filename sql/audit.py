"""Verification of the audit log's hash chains (the chain itself is built by a trigger)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from sql.errors import DatabaseError, DatabaseUnavailable
from sql.queries import QUERIES


@dataclass(frozen=True)
class ChainReport:
    rows: int
    organisations: int
    broken_rows: int
    first_break: tuple[str, int] | None  # (organisation, seq) of the first broken row


async def verify_audit_chain(dsn: str) -> ChainReport:
    """Recompute every organisation's chain. The role must see every row: a superuser or a
    BYPASSRLS auditor role (row-level security is forced even for the table's owner)."""
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseUnavailable(f"cannot connect to the database: {type(exc).__name__}") from exc
    try:
        bypasses = await conn.fetchval(
            "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"
        )
        if not bypasses:
            raise DatabaseError("verification needs a role that bypasses row-level security")
        broken = await conn.fetch(QUERIES["verify_audit_chain"])
        totals = await conn.fetchrow(
            "SELECT count(*) AS rows, count(DISTINCT org_id) AS orgs FROM audit_log"
        )
    finally:
        await conn.close()
    assert totals is not None
    first = (broken[0]["org_id"], broken[0]["seq"]) if broken else None
    return ChainReport(totals["rows"], totals["orgs"], len(broken), first)
