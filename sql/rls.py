"""The one way application code touches tenant tables.

``rls_transaction`` opens a transaction and sets ``app.org_id``, ``app.user_id`` and
``app.org_wide`` (whether user-private rows of the whole organisation are visible) with
``set_config(..., is_local => true)``: the settings end with the transaction, so a connection
returned to the pool carries no identity into the next request (never a session-level ``SET``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from sql.errors import DatabaseUnavailable, InvalidTenant

_MAX_KEY_LENGTH = 255

_SET_TENANT = (
    "SELECT set_config('app.org_id', $1, true), set_config('app.user_id', $2, true),"
    " set_config('app.org_wide', $3, true)"
)


class Tenant(Protocol):
    """Whose rows a transaction may see: any object with these two attributes."""

    @property
    def org_id(self) -> str: ...

    @property
    def user_id(self) -> str: ...


def _checked(key: object, what: str) -> str:
    if not isinstance(key, str) or not key or len(key) > _MAX_KEY_LENGTH:
        raise InvalidTenant(f"{what} must be a non-empty string of at most 255 characters")
    return key


@asynccontextmanager
async def rls_transaction(
    pool: asyncpg.Pool, tenant: Tenant, *, org_wide: bool = False
) -> AsyncIterator[PoolConnectionProxy]:
    """Yield a connection inside a transaction scoped to ``tenant``'s organisation and user;
    with ``org_wide`` the user-private rows of every member of the organisation are visible."""
    org_id = _checked(tenant.org_id, "org_id")
    user_id = _checked(tenant.user_id, "user_id")
    try:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(_SET_TENANT, org_id, user_id, "on" if org_wide else "")
            yield conn
    except (
        OSError,
        TimeoutError,
        asyncpg.InterfaceError,
        asyncpg.PostgresConnectionError,
        asyncpg.CannotConnectNowError,
        asyncpg.TooManyConnectionsError,
    ) as exc:
        raise DatabaseUnavailable(f"database connection failed: {type(exc).__name__}") from exc
