"""``/v1/audit``: the organisation's audit trail, newest first."""

from __future__ import annotations

import json

from starlette.responses import Response

from gateway.api.models import AuditEvent, AuditPage, AuditQuery
from gateway.api.typed_endpoints import Call, Endpoint
from sql import QUERIES, rls_transaction


async def list_audit(call: Call) -> Response:
    query: AuditQuery = call.query
    before = int(query.cursor) if query.cursor is not None else None
    async with rls_transaction(call.services.pool, call.principal) as conn:
        rows = await conn.fetch(QUERIES["list_audit"], call.principal.org_id, query.limit + 1,
                                query.event, query.actor, before)
    page, more = rows[: query.limit], len(rows) > query.limit
    items = [
        AuditEvent(seq=r["seq"], occurred_at=r["occurred_at"], actor=r["actor"],
                   event=r["event"], target=r["target"], outcome=r["outcome"],
                   details=json.loads(r["details"]), request_id=r["request_id"])
        for r in page
    ]
    result = AuditPage(items=items, next_cursor=str(page[-1]["seq"]) if more else None)
    return Response(result.model_dump_json(), media_type="application/json")


ENDPOINTS = [
    Endpoint("GET", "/v1/audit", list_audit, "audit:read", "Read the audit trail",
             query=AuditQuery, response=AuditPage),
]
