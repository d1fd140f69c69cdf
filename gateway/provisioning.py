"""Just-in-time provisioning of organisations, users and memberships from token claims.

The first request of a user creates the organisation and user rows and seeds the user's
memberships from the token's roles claim; from then on the roles come from memberships (they
can be changed through ``/v1/members``). Results are cached per replica for ``ttl`` seconds, so
a role change reaches other replicas within that time; the replica that made it forgets at once.
"""

from __future__ import annotations

from dataclasses import replace

import asyncpg
from cachetools import TTLCache

from gateway.principal import Principal
from sql import QUERIES, rls_transaction


class Provisioner:
    def __init__(self, pool: asyncpg.Pool, *, ttl: float, max_entries: int = 100_000) -> None:
        self._pool = pool
        self._roles: TTLCache[tuple[str, str], tuple[str, ...]] = TTLCache(
            maxsize=max_entries, ttl=max(ttl, 0.001)
        )
        self._enabled = ttl > 0

    async def ensure(self, principal: Principal) -> Principal:
        """The principal with its roles as the organisation records them."""
        key = (principal.org_id, principal.user_id)
        roles = self._roles.get(key) if self._enabled else None
        if roles is None:
            async with rls_transaction(self._pool, principal) as conn:
                created = await conn.fetchval(
                    QUERIES["provision_principal"],
                    principal.org_id,
                    principal.user_id,
                    list(principal.roles),
                )
                found = principal.roles if created else await conn.fetchval(
                    QUERIES["roles_of"], principal.org_id, principal.user_id
                )
            roles = tuple(sorted(found))
            self._roles[key] = roles
        return replace(principal, roles=roles)

    def forget(self, org_id: str, user_id: str) -> None:
        self._roles.pop((org_id, user_id), None)
