"""Just-in-time provisioning of organisations, users and memberships from token claims.

The first request of a (organisation, user, roles) triple writes the rows; later ones within
``ttl`` seconds hit an in-process cache and cost nothing. Provisioning is idempotent, so the
cache may be cold on every replica without harm.
"""

from __future__ import annotations

import asyncpg
from cachetools import TTLCache

from gateway.principal import Principal
from sql import QUERIES, rls_transaction


class Provisioner:
    def __init__(self, pool: asyncpg.Pool, *, ttl: float, max_entries: int = 100_000) -> None:
        self._pool = pool
        self._seen: TTLCache[tuple[str, str, tuple[str, ...]], bool] = TTLCache(
            maxsize=max_entries, ttl=max(ttl, 0.001)
        )
        self._enabled = ttl > 0

    async def ensure(self, principal: Principal) -> None:
        key = (principal.org_id, principal.user_id, principal.roles)
        if self._enabled and key in self._seen:
            return
        async with rls_transaction(self._pool, principal) as conn:
            await conn.execute(
                QUERIES["provision_principal"],
                principal.org_id,
                principal.user_id,
                list(principal.roles),
            )
        self._seen[key] = True
