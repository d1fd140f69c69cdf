"""``Idempotency-Key`` on ``/v1`` creates: a retry gets the first answer, never a duplicate.

A create whose answer the client did not get (a timeout, or a 503 from a commit whose reply
was lost) may or may not have happened. With a key the client can simply retry: the key is
stored, with the answer, in the same transaction as what the create wrote, so either both are
there (the retry replays the answer, marked ``Idempotent-Replayed: true``) or neither is (the
retry creates). Keys belong to one user, last ``idempotency_key_ttl_seconds`` (at least 24 h),
and follow draft-ietf-httpapi-idempotency-key-header: the same key with another request is
422 ``idempotency_key_reused``; while the first request with a key runs, a second one is 409
``idempotency_key_in_progress``. Failed creates roll back, so their key is not kept.

Use inside the handler's transaction::

    claim = await claim_key(conn, call, tenant)
    if claim.replay is not None:
        return claim.replay
    ...create...
    return await claim.remember(conn, response)
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from asyncpg.pool import PoolConnectionProxy
from starlette.responses import Response

from gateway.api.typed_endpoints import Call
from gateway.errors import BadRequest, Conflict, InvalidInput
from sql import QUERIES, Tenant

HEADER = "idempotency-key"
REPLAYED_HEADER = "Idempotent-Replayed"

# Printable ASCII without spaces: UUIDs, ULIDs and the like; an sf-string's quotes may wrap it.
_KEY = re.compile(r'"?([\x21\x23-\x7e]{1,255})"?')


@dataclass(frozen=True)
class Claim:
    """The outcome of looking a key up: an answer to replay, or the right to create."""

    tenant: Tenant | None
    key: str | None
    fingerprint: bytes
    ttl_seconds: int
    replay: Response | None = None

    async def remember(self, conn: PoolConnectionProxy, response: Response) -> Response:
        """Store ``response`` under the key (in the create's transaction) and return it."""
        if self.key is None or self.tenant is None:
            return response
        await conn.execute(
            QUERIES["insert_idempotency_key"], self.tenant.org_id, self.tenant.user_id,
            self.key, self.fingerprint, response.status_code, response.headers.get("location"),
            bytes(response.body).decode(), self.ttl_seconds,
        )
        return response


def requested_key(call: Call) -> str | None:
    """The request's key, or None without one; a malformed or repeated header is a 400."""
    values = call.request.headers.getlist(HEADER)
    if not values:
        return None
    match = _KEY.fullmatch(values[0]) if len(values) == 1 else None
    if match is None:
        raise BadRequest("Idempotency-Key must be one value of 1 to 255 visible ASCII "
                         "characters", code="invalid_idempotency_key")
    return match[1]


def fingerprint(call: Call) -> bytes:
    """What makes two requests "the same": caller, method, path and the validated body (so
    whitespace and key order do not matter, but every value does)."""
    body = call.body.model_dump(mode="json") if call.body is not None else None
    principal = call.principal
    what = [principal.org_id, principal.user_id, call.request.method,
            call.request.url.path, body]
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).digest()


async def claim_key(conn: PoolConnectionProxy, call: Call, tenant: Tenant) -> Claim:
    """Look the request's key up in ``conn``'s transaction (whose tenant is ``tenant``)."""
    ttl = call.services.settings.idempotency_key_ttl_seconds
    key = requested_key(call)
    if key is None:
        return Claim(None, None, b"", ttl)
    digest = fingerprint(call)
    if not await conn.fetchval(QUERIES["lock_idempotency_key"], tenant.org_id,
                               tenant.user_id, key):
        raise Conflict("a request with this Idempotency-Key is still in progress; retry "
                       "later", code="idempotency_key_in_progress")
    row = await conn.fetchrow(QUERIES["get_idempotency_key"], tenant.org_id, tenant.user_id,
                              key)
    if row is None:
        return Claim(tenant, key, digest, ttl)
    if bytes(row["fingerprint"]) != digest:
        raise BadRequest("this Idempotency-Key was used for a different request; use a new "
                         "key", status=422, code="idempotency_key_reused", errors=[
                             InvalidInput.error("header", [HEADER], "already used for a "
                                                "different request", "idempotency_key_reused")])
    headers = {REPLAYED_HEADER: "true"}
    if row["location"]:
        headers["Location"] = row["location"]
    replay = Response(row["body"], row["status"], headers, media_type="application/json")
    return Claim(tenant, key, digest, ttl, replay)
