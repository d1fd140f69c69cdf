"""The audit trail: what happened, to what, by whom, with what outcome. Never arguments,
results, tokens or other secrets.

Security events (session and role changes) are written with :meth:`AuditTrail.record` on the
caller's own connection, inside the transaction that makes the change: both commit or neither
does. Tool calls are frequent and only informative, so they are queued and written in batches;
a graceful shutdown flushes the queue. Rows are chained by hash in the database (migrations
0002 and 0005).

No caller can stop the trail (SECURITY.md 54, 62, 64):

* every field is made storable and bounded when the entry is built (:mod:`gateway.audit_fields`);
* a batch that fails is retried entry by entry, per organisation: an entry the database still
  refuses is quarantined (its safe fields written with a marker, counted, logged) and the others
  are written; only an unreachable database keeps entries queued for the next round;
* the queue is bounded: past ``queue_max`` new entries are dropped, counted, warned about once
  per burst, and each organisation's trail gets a row saying how many of its entries were lost;
* authentication failures (written under ``_platform``) are rate-limited per source (client
  address and key id), under a global ceiling that protects the disk; what either limit
  suppressed is written as an ``auth.failure.suppressed`` summary row at the next flush.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from redis.asyncio import Redis

from gateway.audit_fields import FIELD_LIMITS, Sanitiser
from gateway.metrics import Metrics
from gateway.settings import GatewaySettings
from resilience import RateLimiter, admit
from sql import QUERIES, DatabaseUnavailable, rls_transaction
from sql.errors import InvalidTenant

log = logging.getLogger(__name__)

PLATFORM_ORG = "_platform"
SYSTEM_USER = "_gatehouse"
OUTCOMES = frozenset({"success", "failure", "denied", "error"})
SUMMARY_SOURCES = 20  # sources named in one suppression summary; the rest are only counted
TRACKED_SOURCES = 1000  # distinct sources counted between two summaries; the rest pooled

# Errors that say "this entry cannot be stored", as opposed to "the database cannot store now".
_ENTRY_FAULTS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, InvalidTenant,
                 UnicodeError, ValueError, TypeError, OverflowError)


@dataclass(frozen=True)
class SystemTenant:
    """The identity background work uses inside one organisation."""

    org_id: str
    user_id: str = SYSTEM_USER


@dataclass(frozen=True)
class AuditEntry:
    """One row. Every field is escaped and bounded on construction, so whatever a caller put in
    it, the entry can be queued and stored (what was changed is noted in ``details``)."""

    org_id: str
    actor: str
    event: str
    outcome: str
    target: str = ""
    details: dict[str, Any] | None = None
    request_id: str = ""

    def __post_init__(self) -> None:
        clean = Sanitiser()
        for name, limit in FIELD_LIMITS.items():
            object.__setattr__(self, name, clean.text(getattr(self, name), limit, name))
        details = clean.details(self.details)
        note = clean.note()
        if note is not None:
            details["sanitised"] = note
        object.__setattr__(self, "details", details)

    def values(self) -> tuple[str, str, str, str, str, str, str]:
        return (self.org_id, self.actor, self.event, self.target, self.outcome,
                json.dumps(self.details or {}), self.request_id)

    def quarantined(self, error: BaseException) -> AuditEntry:
        """What is still written of an entry the database refused: no caller-chosen text."""
        return AuditEntry(
            self.org_id, "", self.event or "audit.quarantined",
            self.outcome if self.outcome in OUTCOMES else "error",
            details={"quarantined": True, "error": type(error).__name__},
        )


@dataclass(frozen=True)
class FailureSource:
    """Where a rejected token came from: the client's address, and the key id it named."""

    address: str = ""
    kid: str = ""


_SourceKey = tuple[str | None, str | None, str]  # address, key id, code; None: pooled


@dataclass
class _Suppressed:
    """Authentication failures not written one by one since the last summary."""

    since: datetime | None = None
    counts: Counter[_SourceKey] = field(default_factory=Counter)

    def add(self, source: FailureSource, code: str) -> None:
        key: _SourceKey = (source.address, source.kid, code)
        if key not in self.counts and len(self.counts) >= TRACKED_SOURCES:
            key = (None, None, code)  # the count stays right; the source is no longer named
        self.counts[key] += 1
        self.since = self.since or datetime.now(UTC)

    def merge(self, other: _Suppressed) -> None:
        self.counts.update(other.counts)
        self.since = min(d for d in (self.since, other.since, datetime.now(UTC)) if d)

    def entry(self) -> AuditEntry:
        ranked = [(k, n) for k, n in self.counts.most_common() if k[0] is not None]
        named = ranked[:SUMMARY_SOURCES]
        by_code: Counter[str] = Counter()
        for (_, _, code), n in self.counts.items():
            by_code[code] += n
        details = {
            "suppressed": sum(self.counts.values()),
            "since": self.since.isoformat() if self.since else "",
            "by_code": dict(by_code),
            "sources": [{"address": a, "kid": k, "code": c, "count": n}
                        for (a, k, c), n in named],
            "other_sources": sum(self.counts.values()) - sum(n for _, n in named),
        }
        return AuditEntry(PLATFORM_ORG, "", "auth.failure.suppressed", "failure",
                          details=details)


class AuditTrail:
    def __init__(
        self,
        pool: asyncpg.Pool,
        auth_failure_limiter: RateLimiter,
        *,
        auth_failure_ceiling: RateLimiter | None = None,
        metrics: Metrics | None = None,
        queue_max: int = 100_000,
        batch_size: int = 500,
    ) -> None:
        self._pool = pool
        self._auth_failure_limiter = auth_failure_limiter
        self._auth_failure_ceiling = auth_failure_ceiling
        self._metrics = metrics or Metrics()
        self._queue_max = queue_max
        self._batch_size = batch_size
        self._queue: deque[AuditEntry] = deque()
        self._dropped: Counter[str] = Counter()  # per organisation, until its row is written
        self._dropping = False
        self._suppressed = _Suppressed()

    @classmethod
    def from_settings(
        cls, pool: asyncpg.Pool, redis: Redis, settings: GatewaySettings, metrics: Metrics
    ) -> AuditTrail:
        return cls(
            pool,
            RateLimiter(redis, settings.audit_auth_failure_limit, namespace="gatehouse-audit"),
            auth_failure_ceiling=RateLimiter(redis, settings.audit_auth_failure_ceiling,
                                             namespace="gatehouse-audit-all"),
            metrics=metrics,
            queue_max=settings.audit_queue_max,
        )

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def record(self, conn: PoolConnectionProxy, entry: AuditEntry) -> None:
        """Append ``entry`` in the caller's transaction."""
        await conn.execute(QUERIES["append_audit"], *entry.values())
        self.written(entry)

    def written(self, entry: AuditEntry) -> None:
        """Count ``entry``, which the caller's own statement wrote in its transaction (a
        session create writes its audit row in the same round trip as the session)."""
        self._metrics.audited(entry.event)

    def enqueue(self, entry: AuditEntry) -> None:
        """Queue an informative event (a tool call) for the next batch; past the bound it is
        dropped and counted instead (memory must not grow while the database is away)."""
        if len(self._queue) < self._queue_max:
            self._queue.append(entry)
            return
        self._metrics.audit_dropped.inc()
        self._dropped[entry.org_id] += 1
        if not self._dropping:
            self._dropping = True
            log.warning("audit queue full (%d entries): dropping new entries until it drains",
                        self._queue_max)

    async def auth_failure(
        self, code: str, request_id: str, source: FailureSource | None = None
    ) -> None:
        source = source or FailureSource()
        if not await self._admit_auth_failure(source):
            self._suppressed.add(source, code)
            self._metrics.audit_auth_failures_suppressed.inc()
            return
        details = {"code": code, "address": source.address, "kid": source.kid}
        entry = AuditEntry(PLATFORM_ORG, "", "auth.failure", "failure",
                           details=details, request_id=request_id)
        async with rls_transaction(self._pool, SystemTenant(PLATFORM_ORG)) as conn:
            await self.record(conn, entry)

    async def _admit_auth_failure(self, source: FailureSource) -> bool:
        buckets = [self._auth_failure_limiter.bucket("source", source.address, source.kid)]
        if self._auth_failure_ceiling is not None:
            buckets.append(self._auth_failure_ceiling.bucket("all"))
        return (await admit(buckets)).admitted

    async def flush(self) -> None:
        """Write what is queued now, then the summaries (suppressed failures, dropped entries).
        Raises :class:`DatabaseUnavailable` (entries stay queued) if the database is away."""
        remaining = len(self._queue)  # entries kept back or queued meanwhile wait a round
        while remaining and self._queue:
            size = min(self._batch_size, remaining, len(self._queue))
            remaining -= size
            await self._flush_batch([self._queue.popleft() for _ in range(size)])
        if self._dropping and len(self._queue) < self._queue_max:
            self._dropping = False
            log.warning("audit queue has room again; %d entries were dropped while it was full",
                        sum(self._dropped.values()))
        await self._write_summaries()

    async def _flush_batch(self, batch: list[AuditEntry]) -> None:
        """Each organisation's entries in their own transaction: one cannot hold up another."""
        by_org: dict[str, list[AuditEntry]] = defaultdict(list)
        for entry in batch:
            by_org[entry.org_id].append(entry)
        kept: list[AuditEntry] = []
        groups = list(by_org.values())
        for n, entries in enumerate(groups):
            try:
                kept += await self._write_org(entries)
            except _Unwritten as stop:
                # The database is away: keep this and every later entry, in order, for next round.
                kept += stop.entries + [e for later in groups[n + 1:] for e in later]
                self._queue.extendleft(reversed(kept))
                raise stop.cause from None
        self._queue.extend(kept)

    async def _write_org(self, entries: list[AuditEntry]) -> list[AuditEntry]:
        """Write one organisation's entries; return those to retry later."""
        try:
            await self._insert(entries)
            return []
        except DatabaseUnavailable as exc:
            raise _Unwritten(exc, entries) from exc
        except Exception:  # noqa: S110 - found out below, entry by entry
            pass
        for i, entry in enumerate(entries):
            try:
                await self._insert([entry])
            except DatabaseUnavailable as exc:
                raise _Unwritten(exc, entries[i:]) from exc
            except _ENTRY_FAULTS as exc:
                await self._quarantine(entry, exc, entries[i + 1:])
            except Exception:
                log.warning("audit entries of one organisation kept for the next round",
                            exc_info=True)
                return entries[i:]
        return []

    async def _quarantine(
        self, entry: AuditEntry, error: BaseException, rest: list[AuditEntry]
    ) -> None:
        self._metrics.audit_quarantined.inc()
        log.warning("audit entry quarantined (organisation %r, event %r): %s",
                    entry.org_id, entry.event, type(error).__name__)
        try:
            await self._insert([entry.quarantined(error)])
        except DatabaseUnavailable as exc:
            raise _Unwritten(exc, [entry.quarantined(error), *rest]) from exc
        except Exception:
            self._metrics.audit_dropped.inc()
            log.warning("quarantined audit entry could not be written either", exc_info=True)

    async def _insert(self, entries: list[AuditEntry]) -> None:
        async with rls_transaction(self._pool, SystemTenant(entries[0].org_id)) as conn:
            await conn.executemany(QUERIES["append_audit"], [e.values() for e in entries])

    async def _write_summaries(self) -> None:
        if self._suppressed.counts:
            suppressed, self._suppressed = self._suppressed, _Suppressed()
            try:
                await self._insert([suppressed.entry()])
            except BaseException:
                self._suppressed.merge(suppressed)  # summarised next time instead
                raise
        for org_id, count in list(self._dropped.items()):
            row = AuditEntry(org_id, "", "audit.dropped", "error",
                             details={"entries": count, "reason": "queue full"})
            try:
                await self._insert([row])
            except _ENTRY_FAULTS:
                log.warning("could not record %d dropped audit entries of %r", count, org_id)
            self._dropped[org_id] -= count  # more may have been dropped meanwhile
            if self._dropped[org_id] <= 0:
                del self._dropped[org_id]


class _Unwritten(Exception):  # an internal signal, never leaves this module
    """The database went away while writing: these entries must stay queued."""

    def __init__(self, cause: DatabaseUnavailable, entries: list[AuditEntry]) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.entries = entries
