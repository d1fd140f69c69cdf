"""Verification of the audit log's hash chains (the chain itself is built by a trigger)."""

from __future__ import annotations

from dataclasses import dataclass

from sql.pool import admin_connection
from sql.queries import QUERIES


@dataclass(frozen=True)
class ChainReport:
    rows: int
    organizations: int
    broken_rows: int
    first_break: tuple[str, int] | None  # (organisation, seq) of the first broken row


async def verify_audit_chain(dsn: str) -> ChainReport:
    """Recompute every organisation's chain. The role must see every row: a superuser or a
    BYPASSRLS auditor role (row-level security is forced even for the table's owner)."""
    async with admin_connection(dsn, bypassing_rls_for="verification") as conn:
        broken = await conn.fetch(QUERIES["verify_audit_chain"])
        totals = await conn.fetchrow(
            "SELECT count(*) AS rows, count(DISTINCT org_id) AS orgs FROM audit_log"
        )
    assert totals is not None
    first = (broken[0]["org_id"], broken[0]["seq"]) if broken else None
    return ChainReport(totals["rows"], totals["orgs"], len(broken), first)
