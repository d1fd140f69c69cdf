"""The audit trail: what happened, to what, by whom, with what outcome. Never arguments,
results, tokens or other secrets.

Security events (session and role changes) are written with :meth:`AuditTrail.record` on the
caller's own connection, inside the transaction that makes the change: both commit or neither
does. Tool calls are frequent and only informative, so they are queued and written in batches;
a graceful shutdown flushes the queue. Authentication failures are written under the
``_platform`` organisation and rate-limited, so a flood of bad tokens cannot fill the disk.
Rows are chained by hash in the database (see migration 0002).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from resilience import RateLimiter
from sql import QUERIES, rls_transaction

log = logging.getLogger(__name__)

PLATFORM_ORG = "_platform"
SYSTEM_USER = "_gatehouse"


@dataclass(frozen=True)
class SystemTenant:
    """The identity background work uses inside one organisation."""

    org_id: str
    user_id: str = SYSTEM_USER


@dataclass(frozen=True)
class AuditEntry:
    org_id: str
    actor: str
    event: str
    outcome: str
    target: str = ""
    details: dict[str, Any] | None = None
    request_id: str = ""

    def values(self) -> tuple[str, str, str, str, str, str, str]:
        return (self.org_id, self.actor, self.event, self.target, self.outcome,
                json.dumps(self.details or {}), self.request_id)


class AuditTrail:
    def __init__(
        self, pool: asyncpg.Pool, auth_failure_limiter: RateLimiter, *, batch_size: int = 500
    ) -> None:
        self._pool = pool
        self._auth_failure_limiter = auth_failure_limiter
        self._batch_size = batch_size
        self._queue: list[AuditEntry] = []

    async def record(self, conn: PoolConnectionProxy, entry: AuditEntry) -> None:
        """Append ``entry`` in the caller's transaction."""
        await conn.execute(QUERIES["append_audit"], *entry.values())

    def enqueue(self, entry: AuditEntry) -> None:
        """Queue an informative event (a tool call) for the next batch."""
        self._queue.append(entry)

    async def auth_failure(self, code: str, request_id: str) -> None:
        decision = await self._auth_failure_limiter.hit("auth-failures")
        if not decision.allowed:
            return
        entry = AuditEntry(PLATFORM_ORG, "", "auth.failure", "failure",
                           details={"code": code}, request_id=request_id)
        async with rls_transaction(self._pool, SystemTenant(PLATFORM_ORG)) as conn:
            await self.record(conn, entry)

    async def flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self._batch_size], self._queue[self._batch_size:]
            by_org: dict[str, list[AuditEntry]] = defaultdict(list)
            for entry in batch:
                by_org[entry.org_id].append(entry)
            try:
                for org_id, entries in list(by_org.items()):
                    async with rls_transaction(self._pool, SystemTenant(org_id)) as conn:
                        await conn.executemany(
                            QUERIES["append_audit"], [e.values() for e in entries]
                        )
                    del by_org[org_id]
            except Exception:
                # Keep what was not written for the next round rather than lose it.
                self._queue[:0] = [e for entries in by_org.values() for e in entries]
                raise
