"""Who a test acts as, and provisioning them the way the gateway does on a first request."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from sql import QUERIES, rls_transaction


@dataclass(frozen=True)
class Who:
    """A tenant for ``rls_transaction``: one user of one organisation."""

    org_id: str
    user_id: str


async def provision(pool: asyncpg.Pool, who: Who, roles: Sequence[str] = ("member",)) -> Who:
    async with rls_transaction(pool, who) as conn:
        await conn.fetchval(QUERIES["provision_principal"], who.org_id, who.user_id, list(roles))
    return who


async def new_user(pool: asyncpg.Pool, org: str = "acme", prefix: str = "user") -> Who:
    """A fresh, provisioned user, so tests never share rows or rate-limit buckets."""
    return await provision(pool, Who(org, f"{prefix}-{uuid.uuid4().hex[:10]}"))
