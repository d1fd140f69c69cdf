"""``/v1/sessions``: an agent's working context, owned by one user in one organisation.

Members see and change only their own sessions; holders of ``sessions:admin`` see and close
every session of their organisation, and nothing more: any other change to someone else's
session is 403 (an admin must not widen a member's tools or rewrite its prompt). Row-level
security enforces visibility: a foreign or unknown id finds no row and answers 404. Creation
takes an organisation-wide advisory lock, so the caps on active sessions hold however many
creates race, and honours ``Idempotency-Key`` (see :mod:`gateway.idempotency`). The session
type and its queries are :mod:`gateway.sessions`; this module is their HTTP face.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from starlette.responses import Response

from gateway import sessions
from gateway.api.models import Session as SessionOut
from gateway.api.models import SessionCreate, SessionPage, SessionQuery, SessionUpdate
from gateway.api.typed_endpoints import Call, Endpoint
from gateway.audit import AuditEntry
from gateway.errors import BadRequest, Conflict, Forbidden, InvalidInput
from gateway.idempotency import claim_key
from gateway.permissions import granted
from gateway.principal import Principal
from gateway.sessions import NewSession, Session, SessionChanges, parse_id
from gateway.system_prompt import invalid_prompt
from prompts import LayerKind, PromptError
from sql import rls_transaction

ADMIN_PERMISSION = "sessions:admin"


def to_model(session: Session) -> SessionOut:
    tools = session.allowed_tools
    return SessionOut(
        id=str(session.id),
        user_id=session.user_id,
        name=session.name,
        allowed_tools=list(tools) if tools is not None else None,
        variables=dict(session.variables),
        metadata=dict(session.metadata),
        prompt=session.prompt,
        status=session.status,
        created_at=session.created_at,
        last_used_at=session.last_used_at,
        expires_at=session.expires_at,
        closed_at=session.closed_at,
    )


def _json(
    model: SessionOut | SessionPage, status: int = 200, headers: dict[str, str] | None = None
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


def _check_prompt(call: Call, prompt: str | None, variables: Mapping[str, Any]) -> None:
    """A session prompt is validated like any layer (syntax, sandbox, size, only guaranteed or
    guarded variables) against the session variables it will be composed with."""
    if prompt:
        try:
            call.services.composer.validate(prompt, kind=LayerKind.SESSION,
                                            session_variables=variables)
        except PromptError as exc:
            raise invalid_prompt(exc, "prompt") from exc


async def _check_tools(call: Call, tools: list[str] | None) -> None:
    """An allow-list names only tools mcp_server offers: a misspelt name would silently allow
    nothing, and a name no tool has yet would allow whatever later takes it."""
    if not tools:
        return
    unknown = await call.services.tools.unknown(call.services, call.principal, call.request_id,
                                                tools)
    if unknown:
        raise InvalidInput(
            [InvalidInput.error("body", ["allowed_tools", tools.index(name)],
                                f"no tool is named {name!r}", "unknown_tool") for name in unknown],
            detail="allowed_tools names tools that do not exist: " + ", ".join(unknown))


def _org_wide(principal: Principal) -> bool:
    return granted(principal.roles, ADMIN_PERMISSION)


def _new_session(call: Call, body: SessionCreate) -> NewSession:
    return NewSession(body.name, body.allowed_tools, body.variables, body.metadata,
                      body.prompt, _ttl(call, body.ttl_seconds))


async def create_session(call: Call) -> Response:
    body: SessionCreate = call.body
    settings, principal = call.services.settings, call.principal
    new = _new_session(call, body)
    _check_prompt(call, body.prompt, body.variables or {})
    await _check_tools(call, body.allowed_tools)
    async with rls_transaction(call.services.pool, principal, org_wide=True) as conn:
        claim = await claim_key(conn, call, principal)
        if claim.replay is not None:
            return claim.replay
        # One round trip (lock, caps, insert, audit row): the organisation's lock is held
        # from it to the commit only, however busy the event loop is.
        session_id = uuid.uuid4()
        entry = _audit(call, "session.create", session_id)
        caps = sessions.Caps(settings.session_max_active_per_user,
                             settings.session_max_active_per_org)
        session = await sessions.create(conn, session_id, new, caps, entry)
        call.services.audit.written(entry)
        created = _json(to_model(session), 201, {"Location": f"/v1/sessions/{session.id}"})
        return await claim.remember(conn, created)


def _encode_cursor(session: Session) -> str:
    raw = json.dumps([session.created_at.isoformat(), str(session.id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        created, ident = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return datetime.fromisoformat(created), uuid.UUID(ident)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise BadRequest("the cursor is not one this API issued", code="invalid_cursor") from exc


def _next_link(call: Call, cursor: str) -> dict[str, str]:
    params = {**call.request.query_params, "cursor": cursor}
    return {"Link": f'</v1/sessions?{urlencode(params)}>; rel="next"'}


async def list_sessions(call: Call) -> Response:
    query: SessionQuery = call.query
    principal = call.principal
    if query.all_users and not _org_wide(principal):
        raise Forbidden(f"all_users needs the permission {ADMIN_PERMISSION}")
    after = _decode_cursor(query.cursor) if query.cursor else None
    async with rls_transaction(call.services.pool, principal, org_wide=query.all_users) as conn:
        found = await sessions.page(
            conn, principal, query.limit + 1, after=after, status=query.status,
            user_id=None if query.all_users else principal.user_id,
        )
    shown, more = found[: query.limit], len(found) > query.limit
    next_cursor = _encode_cursor(shown[-1]) if more else None
    headers = _next_link(call, next_cursor) if next_cursor else {}
    result = SessionPage(items=[to_model(s) for s in shown], next_cursor=next_cursor)
    return _json(result, headers=headers)


async def get_session(call: Call) -> Response:
    session_id = parse_id(call.path("session_id"))
    org_wide = _org_wide(call.principal)
    async with rls_transaction(call.services.pool, call.principal, org_wide=org_wide) as conn:
        session = await sessions.visible(conn, call.principal, session_id)
    return _json(to_model(session))


def _changes(call: Call, body: SessionUpdate, changed: dict[str, Any]) -> SessionChanges:
    return SessionChanges(
        name=body.name, variables=body.variables, metadata=body.metadata,
        ttl_seconds=_ttl(call, body.ttl_seconds) if body.ttl_seconds else None,
        replace_tools="allowed_tools" in changed, allowed_tools=body.allowed_tools,
        replace_prompt="prompt" in changed, prompt=body.prompt,
    )


def _may_change(call: Call, session: Session, body: SessionUpdate, changed: object) -> None:
    if session.user_id != call.principal.user_id and (changed or body.status != "closed"):
        raise Forbidden(f"{ADMIN_PERMISSION} allows closing another user's session, not "
                        "changing it")
    if session.status != "active":
        raise Conflict("only active sessions can be changed", code="session_not_active")


async def update_session(call: Call) -> Response:
    body: SessionUpdate = call.body
    session_id = parse_id(call.path("session_id"))
    principal = call.principal
    async with rls_transaction(call.services.pool, principal,
                               org_wide=_org_wide(principal)) as conn:
        session = await sessions.visible(conn, principal, session_id)
        changed = body.model_dump(exclude_unset=True, exclude={"status"})
        _may_change(call, session, body, changed)
        if "prompt" in changed or "variables" in changed:  # the prompt must fit what it gets
            _check_prompt(call, changed.get("prompt", session.prompt),
                          changed.get("variables", session.variables) or {})
        await _check_tools(call, changed.get("allowed_tools"))
        if changed:
            changes = _changes(call, body, changed)
            session = await sessions.update(conn, principal, session_id, changes) or session
            await call.services.audit.record(
                conn, _audit(call, "session.update", session_id, fields=sorted(changed))
            )
        if body.status == "closed":
            session = await sessions.close(conn, principal, session_id) or session
            await call.services.audit.record(conn, _audit(call, "session.close", session_id))
    return _json(to_model(session))


async def delete_session(call: Call) -> Response:
    session_id = parse_id(call.path("session_id"))
    org_wide = _org_wide(call.principal)
    async with rls_transaction(call.services.pool, call.principal, org_wide=org_wide) as conn:
        session = await sessions.visible(conn, call.principal, session_id)
        # An expired session is still open in the table; closing it records that it ended.
        if session.status != "closed":
            await sessions.close(conn, call.principal, session_id)
            await call.services.audit.record(conn, _audit(call, "session.close", session_id))
    return Response(status_code=204)


ENDPOINTS = [
    Endpoint("POST", "/v1/sessions", create_session, "sessions:write", "Create a session",
             status=201, body=SessionCreate, response=SessionOut, errors=(409,)),
    Endpoint("GET", "/v1/sessions", list_sessions, "sessions:read",
             "List sessions, newest first", query=SessionQuery, response=SessionPage),
    Endpoint("GET", "/v1/sessions/{session_id}", get_session, "sessions:read", "Get a session",
             response=SessionOut),
    Endpoint("PATCH", "/v1/sessions/{session_id}", update_session, "sessions:write",
             "Change or close a session", body=SessionUpdate, response=SessionOut,
             errors=(409,)),
    Endpoint("DELETE", "/v1/sessions/{session_id}", delete_session, "sessions:write",
             "Close a session", status=204),
]
