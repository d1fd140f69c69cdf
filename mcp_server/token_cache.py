"""A short-lived, per-process cache of *sealed* connection rows: the hot path skips PostgreSQL.

Loading a connection costs a pool checkout and four round trips (BEGIN, tenant settings,
SELECT, COMMIT), most of a provider tool call's own overhead. This cache keeps the row's
ciphertext, nonce and key id (never the plaintext) for ``ttl`` seconds; every call still
decrypts (AES-256-GCM, bound to the row), and rows are read only under
:func:`sql.rls_transaction`. Tokens due for refresh bypass the cache (the
:class:`~oauth.refresh.Refresher` reads the database under its lock).

The price: another replica's change is seen up to ``ttl`` seconds late. A token refreshed
elsewhere is still valid then (refresh happens ``margin`` ahead of expiry); a token the
provider stopped accepting answers 401 and the connection is marked and forgotten here; but a
*disconnect* on another replica, at a provider without revocation, leaves the user's own
agents able to use the old token here for up to ``ttl`` seconds. ``ttl=0`` disables the cache
(``GATEHOUSE_TOKEN_CACHE_SECONDS``).
"""

from __future__ import annotations

import asyncpg
from cachetools import TTLCache

from oauth.errors import NeedsReconnect
from oauth.vault import ConnectionRef, Sealed, TokenBundle, Vault
from sql import QUERIES, Tenant, rls_transaction

_Key = tuple[str, str, str]


class ConnectionCache:
    def __init__(self, pool: asyncpg.Pool, vault: Vault, *, ttl: float,
                 maxsize: int = 10_000) -> None:
        self._pool = pool
        self._vault = vault
        self._rows: TTLCache[_Key, Sealed] = TTLCache(maxsize, ttl)

    async def bundle(self, tenant: Tenant, provider: str) -> TokenBundle | None:
        """The decrypted tokens, None when not connected; :class:`NeedsReconnect` if marked."""
        key = (tenant.org_id, tenant.user_id, provider)
        sealed = self._rows.get(key)
        if sealed is None:
            entry = await self._read(tenant, provider)
            if entry is None:
                return None  # not cached: a connection made a moment later must be seen
            sealed, needs_reconnect = entry
            if needs_reconnect:
                raise NeedsReconnect(provider)  # not cached either
            self._rows[key] = sealed
        return self._vault.open(ConnectionRef(*key), sealed)

    def forget(self, tenant: Tenant, provider: str) -> None:
        self._rows.pop((tenant.org_id, tenant.user_id, provider), None)

    async def _read(self, tenant: Tenant, provider: str) -> tuple[Sealed, bool] | None:
        async with rls_transaction(self._pool, tenant) as conn:
            row = await conn.fetchrow(
                QUERIES["get_connection"], tenant.org_id, tenant.user_id, provider
            )
        if row is None:
            return None
        sealed = Sealed(row["key_id"], bytes(row["nonce"]), bytes(row["ciphertext"]))
        return sealed, bool(row["needs_reconnect"])
