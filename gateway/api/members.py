"""``/v1/members``: who belongs to the organisation, and with which roles.

Role changes are security events, audited in the same transaction. Only an owner may grant or
take away ``owner``, and the last owner cannot be removed.
"""

from __future__ import annotations

from starlette.responses import Response

from gateway.api.models import Member, MemberList, RolesUpdate
from gateway.api.typed_endpoints import Call, Endpoint
from gateway.audit import AuditEntry
from gateway.errors import Conflict, Forbidden, NotFound
from sql import QUERIES, rls_transaction


async def list_members(call: Call) -> Response:
    async with rls_transaction(call.services.pool, call.principal) as conn:
        rows = await conn.fetch(QUERIES["list_members"], call.principal.org_id)
    members = MemberList(items=[Member(user_id=r["user_id"], roles=r["roles"]) for r in rows])
    return Response(members.model_dump_json(), media_type="application/json")


async def set_roles(call: Call) -> Response:
    body: RolesUpdate = call.body
    principal, user_id = call.principal, call.path("user_id")
    async with rls_transaction(call.services.pool, principal) as conn:
        before: list[str] = await conn.fetchval(QUERIES["roles_of"], principal.org_id, user_id)
        if not await conn.fetchval(QUERIES["member_exists"], principal.org_id, user_id):
            raise NotFound("no such member")
        if ("owner" in before) != ("owner" in body.roles) and "owner" not in principal.roles:
            raise Forbidden("only an owner can grant or take away the owner role")
        await conn.execute(QUERIES["replace_roles"], principal.org_id, user_id, body.roles)
        if not await conn.fetchval(QUERIES["owner_count"], principal.org_id) and "owner" in before:
            raise Conflict("the organisation would have no owner left", code="last_owner")
        await call.services.audit.record(conn, AuditEntry(
            principal.org_id, principal.user_id, "role.change", "success",
            target=f"user:{user_id}", details={"before": before, "after": body.roles},
            request_id=call.request_id,
        ))
    call.services.provisioner.forget(principal.org_id, user_id)
    member = Member(user_id=user_id, roles=list(body.roles))
    return Response(member.model_dump_json(), media_type="application/json")


ENDPOINTS = [
    Endpoint("GET", "/v1/members", list_members, "members:read",
             "List the organisation's members and roles", response=MemberList),
    Endpoint("PUT", "/v1/members/{user_id}/roles", set_roles, "members:write",
             "Replace a member's roles", body=RolesUpdate, response=Member, errors=(409,)),
]
