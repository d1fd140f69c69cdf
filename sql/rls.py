"""The one way application code touches tenant tables.

``rls_transaction`` opens a transaction and sets ``app.org_id``, ``app.user_id`` and
``app.org_wide`` (whether user-private rows of the whole organisation are visible) with
``set_config(..., is_local => true)``: the settings end with the transaction, so a connection
returned to the pool carries no identity into the next request (never a session-level ``SET``).

Losing the server at any point (acquire, a query, the commit, the release) surfaces as
:class:`~sql.errors.DatabaseUnavailable` and nothing else. A commit whose answer was lost is
ambiguous (it may have happened): callers make creates safe to retry with an idempotency key
written in the same transaction.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Protocol

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from opentelemetry import trace

from sql.errors import DatabaseUnavailable, InvalidTenant
from telemetry.spans import child_span

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)

_MAX_KEY_LENGTH = 255

# How long a request waits for a free pooled connection before it answers "unavailable"
# rather than queueing without bound behind a server that stopped answering.
ACQUIRE_TIMEOUT_SECONDS = 10.0

_SET_TENANT = (
    "SELECT set_config('app.org_id', $1, true), set_config('app.user_id', $2, true),"
    " set_config('app.org_wide', $3, true)"
)

# What a lost, refused or shut-down server looks like to asyncpg: socket errors, the client's
# own protocol errors (InternalClientError is not an InterfaceError), SQLSTATE class 08, and
# the operator-intervention states 57P01-57P03 a fast or immediate shutdown sends.
CONNECTION_LOST: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
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


@contextmanager
def connection_loss_as_unavailable() -> Iterator[None]:
    """Re-raise a lost connection as :class:`DatabaseUnavailable`; other errors pass."""
    try:
        yield
    except CONNECTION_LOST as exc:
        raise DatabaseUnavailable(f"database connection failed: {type(exc).__name__}") from exc


async def _release(pool: asyncpg.Pool, conn: PoolConnectionProxy) -> None:
    """Hand the connection back. A failure here comes after the outcome is settled (the pool
    has already terminated the broken connection), so it must not turn a committed
    transaction into an error the client would retry."""
    try:
        await pool.release(conn)
    except CONNECTION_LOST as exc:
        log.info("a broken database connection was discarded on release (%s)",
                 type(exc).__name__)


@asynccontextmanager
async def rls_transaction(
    pool: asyncpg.Pool, tenant: Tenant, *, org_wide: bool = False
) -> AsyncIterator[PoolConnectionProxy]:
    """Yield a connection inside a transaction scoped to ``tenant``'s organisation and user;
    with ``org_wide`` the user-private rows of every member of the organisation are visible."""
    org_id = _checked(tenant.org_id, "org_id")
    user_id = _checked(tenant.user_id, "user_id")
    with child_span(_tracer, "rls transaction", {"gatehouse.org_id": org_id}):
        with connection_loss_as_unavailable():
            conn = await pool.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS)
        try:
            with connection_loss_as_unavailable():
                async with conn.transaction():
                    await conn.execute(_SET_TENANT, org_id, user_id, "on" if org_wide else "")
                    yield conn
        finally:
            await _release(pool, conn)
