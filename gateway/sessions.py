"""Sessions, an agent's working context: the :class:`Session` type and the queries that read
and change them.

A session is built once from its row, here, with its variables and metadata parsed and its
status as callers see it (an active session past its expiry is ``expired``); nothing outside
this module reads a row. The HTTP face of sessions (permissions, bodies, problem answers) is
:mod:`gateway.api.sessions`; MCP forwarding and prompt composition use the type directly.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg
from asyncpg import Record
from asyncpg.pool import PoolConnectionProxy

from gateway.audit import AuditEntry
from gateway.errors import Conflict, NotFound
from gateway.principal import Principal
from sql import QUERIES, rls_transaction

SessionStatus = Literal["active", "closed", "expired"]


@dataclass(frozen=True, slots=True)
class Session:
    id: uuid.UUID
    org_id: str
    user_id: str
    name: str
    allowed_tools: tuple[str, ...] | None  # None: every tool the user may call
    variables: Mapping[str, Any]
    metadata: Mapping[str, Any]
    prompt: str | None
    status: SessionStatus
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    closed_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewSession:
    name: str
    allowed_tools: Sequence[str] | None
    variables: Mapping[str, Any]
    metadata: Mapping[str, Any]
    prompt: str | None
    ttl_seconds: int


@dataclass(frozen=True, slots=True)
class SessionChanges:
    """``None`` leaves a field as it is; ``allowed_tools`` and ``prompt`` may be set to
    ``None``, so whether to replace them is said apart."""

    name: str | None = None
    variables: Mapping[str, Any] | None = None
    metadata: Mapping[str, Any] | None = None
    ttl_seconds: int | None = None
    replace_tools: bool = False
    allowed_tools: Sequence[str] | None = None
    replace_prompt: bool = False
    prompt: str | None = None


def _status(row: Record) -> SessionStatus:
    expires_at: datetime = row["expires_at"]
    if row["status"] == "active" and expires_at <= datetime.now(expires_at.tzinfo):
        return "expired"
    return "closed" if row["status"] == "closed" else "active"


def _session(row: Record) -> Session:
    tools = row["allowed_tools"]
    return Session(
        id=row["id"], org_id=row["org_id"], user_id=row["user_id"], name=row["name"],
        allowed_tools=tuple(tools) if tools is not None else None,
        variables=json.loads(row["variables"]), metadata=json.loads(row["metadata"]),
        prompt=row["prompt"], status=_status(row), created_at=row["created_at"],
        last_used_at=row["last_used_at"], expires_at=row["expires_at"],
        closed_at=row["closed_at"],
    )


def _maybe(row: Record | None) -> Session | None:
    return _session(row) if row is not None else None


def _json(value: Mapping[str, Any] | None) -> str | None:
    return json.dumps(value) if value is not None else None


def parse_id(raw: str) -> uuid.UUID:
    """Session ids are UUIDs; anything else cannot name a session (404, like a foreign id)."""
    try:
        return uuid.UUID(raw)
    except ValueError as exc:
        raise NotFound("no such session") from exc


@dataclass(frozen=True, slots=True)
class Caps:
    """The most active sessions a user, and an organisation, may hold."""

    per_user: int
    per_org: int


# Raised by gatehouse_create_session (migration 0007) when a cap is reached; DETAIL names it.
QUOTA_EXCEEDED = "GH001"


def _refusal(exc: asyncpg.PostgresError, caps: Caps) -> Conflict:
    if getattr(exc, "detail", None) == "user":
        message = f"at most {caps.per_user} active sessions per user; close one first"
    else:
        message = f"at most {caps.per_org} active sessions per organisation"
    return Conflict(message, code="session_quota_exceeded")


async def create(
    conn: PoolConnectionProxy, session_id: uuid.UUID, new: NewSession, caps: Caps,
    audit: AuditEntry,
) -> Session:
    """Create the session for the transaction's own tenant, with its ``audit`` row, or raise
    :class:`Conflict` if a cap is reached. One round trip: the organisation's creation lock,
    taken inside it, is held until the transaction ends, so the caps hold however many creates
    race. The transaction must be organisation-wide (the organisation's count sees every
    member's sessions)."""
    try:
        row = await conn.fetchrow(
            QUERIES["create_session"], session_id, new.name, new.allowed_tools,
            json.dumps(new.variables), json.dumps(new.metadata), new.ttl_seconds, new.prompt,
            caps.per_user, caps.per_org, *audit.values(),
        )
    except asyncpg.PostgresError as exc:
        if exc.sqlstate != QUOTA_EXCEEDED:
            raise
        raise _refusal(exc, caps) from exc
    assert row is not None
    return _session(row)


async def page(
    conn: PoolConnectionProxy, principal: Principal, limit: int, *, user_id: str | None,
    status: SessionStatus | None, after: tuple[datetime, uuid.UUID] | None,
) -> list[Session]:
    """Up to ``limit`` sessions, newest first, older than ``after`` (created_at, id);
    ``user_id`` ``None`` lists every session the transaction may see."""
    created, ident = after or (None, None)
    rows = await conn.fetch(
        QUERIES["list_sessions"], principal.org_id, limit, user_id, status, created, ident
    )
    return [_session(row) for row in rows]


async def visible(
    conn: PoolConnectionProxy, principal: Principal, session_id: uuid.UUID
) -> Session:
    """The session if this transaction may see it (row-level security decides), else 404."""
    row = await conn.fetchrow(QUERIES["get_session"], principal.org_id, session_id)
    if row is None:
        raise NotFound("no such session")
    return _session(row)


async def usable(pool: asyncpg.Pool, principal: Principal, raw_id: str) -> Session:
    """The caller's own active session ``raw_id``. Possession of an id is not authentication:
    someone else's, closed, expired and unknown sessions all answer the same 404."""
    session_id = parse_id(raw_id)
    async with rls_transaction(pool, principal) as conn:
        row = await conn.fetchrow(QUERIES["get_session"], principal.org_id, session_id)
    session = _maybe(row)
    if session is None or session.user_id != principal.user_id or session.status != "active":
        raise NotFound("no such session")
    return session


async def update(
    conn: PoolConnectionProxy, principal: Principal, session_id: uuid.UUID,
    changes: SessionChanges,
) -> Session | None:
    """The changed session; ``None`` if it was no longer active."""
    row = await conn.fetchrow(
        QUERIES["update_session"], principal.org_id, session_id, changes.name,
        _json(changes.variables), _json(changes.metadata), changes.ttl_seconds,
        changes.replace_tools, changes.allowed_tools, changes.replace_prompt, changes.prompt,
    )
    return _maybe(row)


async def close(
    conn: PoolConnectionProxy, principal: Principal, session_id: uuid.UUID
) -> Session | None:
    """The closed session; ``None`` if it was already closed."""
    row = await conn.fetchrow(QUERIES["close_session"], principal.org_id, session_id)
    return _maybe(row)
