"""When each session was last used, kept fresh without a database write per MCP call.

Each replica remembers the latest use of every session it served and writes them in one
statement per organisation every few seconds (and at shutdown). ``last_used_at`` therefore
lags by at most the flush interval, and never moves backwards.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, datetime

import asyncpg

from gateway.audit import SystemTenant
from gateway.sessions import Session
from sql import QUERIES, rls_transaction


class SessionActivity:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._pending: dict[tuple[str, uuid.UUID], datetime] = {}

    def touch(self, session: Session) -> None:
        self._pending[(session.org_id, session.id)] = datetime.now(UTC)

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        by_org: dict[str, list[tuple[uuid.UUID, datetime]]] = defaultdict(list)
        for (org_id, session_id), used_at in pending.items():
            by_org[org_id].append((session_id, used_at))
        for org_id, uses in by_org.items():
            try:
                async with rls_transaction(
                    self._pool, SystemTenant(org_id), org_wide=True
                ) as conn:
                    await conn.execute(
                        QUERIES["touch_sessions"],
                        org_id,
                        [session_id for session_id, _ in uses],
                        [used_at for _, used_at in uses],
                    )
            except Exception:
                for session_id, used_at in uses:  # retried next round unless newer use came
                    self._pending.setdefault((org_id, session_id), used_at)
                raise
