"""``/v1/sessions``: an agent's working context, owned by one user in one organisation.

Members see and change only their own sessions; holders of ``sessions:admin`` see and close
every session of their organisation, and nothing more: any other change to someone else's
session is 403 (an admin must not widen a member's tools or rewrite its prompt). Row-level
security enforces visibility: a foreign or unknown id finds no row and answers 404. Creation
takes an organisation-wide advisory lock, so the caps on active sessions hold however many
creates race, and honours ``Idempotency-Key`` (see :mod:`gateway.idempotency`).
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import asyncpg
from asyncpg import Record
from asyncpg.pool import PoolConnectionProxy
from starlette.responses import Response

from gateway.api.endpoints import Call, Endpoint
from gateway.api.models import Session, SessionCreate, SessionPage, SessionQuery, SessionUpdate
from gateway.audit import AuditEntry
from gateway.errors import BadRequest, Conflict, Forbidden, InvalidInput, NotFound
from gateway.idempotency import claim_key
from gateway.permissions import granted
from gateway.principal import Principal
from gateway.prompting import invalid_prompt
from prompts import LayerKind, PromptError
from sql import QUERIES, rls_transaction

ADMIN_PERMISSION = "sessions:admin"


def parse_id(raw: str) -> uuid.UUID:
    """Session ids are UUIDs; anything else cannot name a session (404, like a foreign id)."""
    try:
        return uuid.UUID(raw)
    except ValueError as exc:
        raise NotFound("no such session") from exc


def status_of(row: Record) -> str:
    if row["status"] == "active" and row["expires_at"] <= datetime.now(row["expires_at"].tzinfo):
        return "expired"
    return str(row["status"])


def to_model(row: Record) -> Session:
    return Session(
        id=str(row["id"]),
        user_id=row["user_id"],
        name=row["name"],
        allowed_tools=row["allowed_tools"],
        variables=json.loads(row["variables"]),
        metadata=json.loads(row["metadata"]),
        prompt=row["prompt"],
        status=status_of(row),  # type: ignore[arg-type]
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        expires_at=row["expires_at"],
        closed_at=row["closed_at"],
    )


def _json(
    model: Session | SessionPage, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(model.model_dump_json(), status, headers, media_type="application/json")


def _ttl(call: Call, requested: int | None) -> int:
    settings = call.services.settings
    ttl = requested or settings.session_default_ttl_seconds
    if ttl > settings.session_max_ttl_seconds:
        raise InvalidInput.at("ttl_seconds", f"at most {settings.session_max_ttl_seconds} "
                              "seconds", "less_than_equal")
    return ttl


def _audit(call: Call, event: str, session_id: object, **details: Any) -> AuditEntry:
    return AuditEntry(call.principal.org_id, call.principal.user_id, event, "success",
                      target=f"session:{session_id}", details=details or None,
                      request_id=call.request_id)


def _check_prompt(call: Call, prompt: str | None) -> None:
    """A session prompt is validated like any layer (syntax, sandbox, size) before it is kept."""
    if prompt:
        try:
            call.services.composer.validate(prompt, kind=LayerKind.SESSION)
        except PromptError as exc:
            raise invalid_prompt(exc, "prompt") from exc


def _org_wide(principal: Principal) -> bool:
    return granted(principal.roles, ADMIN_PERMISSION)


async def create_session(call: Call) -> Response:
    body: SessionCreate = call.body
    settings, principal = call.services.settings, call.principal
    ttl = _ttl(call, body.ttl_seconds)
    _check_prompt(call, body.prompt)
    async with rls_transaction(call.services.pool, principal, org_wide=True) as conn:
        claim = await claim_key(conn, call, principal)
        if claim.replay is not None:
            return claim.replay
        await conn.execute(QUERIES["lock_session_quota"], principal.org_id)
        counts = await conn.fetchrow(
            QUERIES["count_active_sessions"], principal.org_id, principal.user_id
        )
        assert counts is not None
        if counts["user_active"] >= settings.session_max_active_per_user:
            raise Conflict(f"at most {settings.session_max_active_per_user} active sessions "
                           "per user; close one first", code="session_quota_exceeded")
        if counts["org_active"] >= settings.session_max_active_per_org:
            raise Conflict(f"at most {settings.session_max_active_per_org} active sessions "
                           "per organisation", code="session_quota_exceeded")
        row = await conn.fetchrow(
            QUERIES["insert_session"], principal.org_id, principal.user_id, body.name,
            body.allowed_tools, json.dumps(body.variables), json.dumps(body.metadata), ttl,
            body.prompt,
        )
        assert row is not None
        await call.services.audit.record(conn, _audit(call, "session.create", row["id"]))
        created = _json(to_model(row), 201, {"Location": f"/v1/sessions/{row['id']}"})
        return await claim.remember(conn, created)


def _encode_cursor(row: Record) -> str:
    raw = json.dumps([row["created_at"].isoformat(), str(row["id"])]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        created, ident = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return datetime.fromisoformat(created), uuid.UUID(ident)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise BadRequest("the cursor is not one this API issued", code="invalid_cursor") from exc


async def list_sessions(call: Call) -> Response:
    query: SessionQuery = call.query
    principal = call.principal
    if query.all_users and not _org_wide(principal):
        raise Forbidden(f"all_users needs the permission {ADMIN_PERMISSION}")
    after = _decode_cursor(query.cursor) if query.cursor else (None, None)
    async with rls_transaction(call.services.pool, principal, org_wide=query.all_users) as conn:
        rows = await conn.fetch(
            QUERIES["list_sessions"], principal.org_id, query.limit + 1,
            None if query.all_users else principal.user_id, query.status, *after,
        )
    page, more = rows[: query.limit], len(rows) > query.limit
    next_cursor = _encode_cursor(page[-1]) if more else None
    headers = {}
    if next_cursor:
        params = {**call.request.query_params, "cursor": next_cursor}
        headers["Link"] = f'</v1/sessions?{urlencode(params)}>; rel="next"'
    result = SessionPage(items=[to_model(r) for r in page], next_cursor=next_cursor)
    return _json(result, headers=headers)


async def usable_session(pool: asyncpg.Pool, principal: Principal, raw_id: str) -> Record:
    """The caller's own active session ``raw_id``. Possession of an id is not authentication:
    someone else's, closed, expired and unknown sessions all answer the same 404."""
    session_id = parse_id(raw_id)
    async with rls_transaction(pool, principal) as conn:
        row = await conn.fetchrow(QUERIES["get_session"], principal.org_id, session_id)
    if row is None or row["user_id"] != principal.user_id or status_of(row) != "active":
        raise NotFound("no such session")
    return row


async def fetch_visible(
    conn: PoolConnectionProxy, principal: Principal, session_id: uuid.UUID
) -> Record:
    """The session if this transaction may see it (row-level security decides), else 404."""
    row = await conn.fetchrow(QUERIES["get_session"], principal.org_id, session_id)
    if row is None:
        raise NotFound("no such session")
    return row


async def get_session(call: Call) -> Response:
    session_id = parse_id(call.path("session_id"))
    org_wide = _org_wide(call.principal)
    async with rls_transaction(call.services.pool, call.principal, org_wide=org_wide) as conn:
        row = await fetch_visible(conn, call.principal, session_id)
    return _json(to_model(row))


async def update_session(call: Call) -> Response:
    body: SessionUpdate = call.body
    session_id = parse_id(call.path("session_id"))
    org_wide = _org_wide(call.principal)
    async with rls_transaction(call.services.pool, call.principal, org_wide=org_wide) as conn:
        row = await fetch_visible(conn, call.principal, session_id)
        changed = body.model_dump(exclude_unset=True, exclude={"status"})
        if row["user_id"] != call.principal.user_id and (changed or body.status != "closed"):
            raise Forbidden(f"{ADMIN_PERMISSION} allows closing another user's session, not "
                            "changing it")
        if status_of(row) != "active":
            raise Conflict("only active sessions can be changed", code="session_not_active")
        _check_prompt(call, body.prompt)
        if changed:
            ttl = _ttl(call, body.ttl_seconds) if body.ttl_seconds else None
            row = await conn.fetchrow(
                QUERIES["update_session"], call.principal.org_id, session_id, body.name,
                json.dumps(body.variables) if body.variables is not None else None,
                json.dumps(body.metadata) if body.metadata is not None else None,
                ttl, "allowed_tools" in changed, body.allowed_tools,
                "prompt" in changed, body.prompt,
            ) or row
            await call.services.audit.record(
                conn, _audit(call, "session.update", session_id, fields=sorted(changed))
            )
        if body.status == "closed":
            row = await conn.fetchrow(
                QUERIES["close_session"], call.principal.org_id, session_id
            ) or row
            await call.services.audit.record(conn, _audit(call, "session.close", session_id))
    return _json(to_model(row))


async def delete_session(call: Call) -> Response:
    session_id = parse_id(call.path("session_id"))
    org_wide = _org_wide(call.principal)
    async with rls_transaction(call.services.pool, call.principal, org_wide=org_wide) as conn:
        row = await fetch_visible(conn, call.principal, session_id)
        if row["status"] == "active":
            await conn.execute(QUERIES["close_session"], call.principal.org_id, session_id)
            await call.services.audit.record(conn, _audit(call, "session.close", session_id))
    return Response(status_code=204)


ENDPOINTS = [
    Endpoint("POST", "/v1/sessions", create_session, "sessions:write", "Create a session",
             status=201, body=SessionCreate, response=Session, errors=(409,)),
    Endpoint("GET", "/v1/sessions", list_sessions, "sessions:read",
             "List sessions, newest first", query=SessionQuery, response=SessionPage),
    Endpoint("GET", "/v1/sessions/{session_id}", get_session, "sessions:read", "Get a session",
             response=Session),
    Endpoint("PATCH", "/v1/sessions/{session_id}", update_session, "sessions:write",
             "Change or close a session", body=SessionUpdate, response=Session, errors=(409,)),
    Endpoint("DELETE", "/v1/sessions/{session_id}", delete_session, "sessions:write",
             "Close a session", status=204),
]
