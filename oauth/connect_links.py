"""One-time, short-lived connect links bound to an organisation, user and provider.

A tool that needs a provider the user has not connected (or must reconnect) answers with
``{public_url}/connect?ticket=...``. The ticket is 256 random bits (URL-safe base64), stored in
Redis as ``gatehouse:connect:ticket:<ticket>`` with value ``{"org", "user", "provider"}`` and
``EX ttl``; :func:`redeem_connect_ticket` takes it with ``GETDEL`` so it works exactly once, on
any replica. The ticket is a bearer capability for *starting* a connection; the connect flow
must still bind the browser (state, PKCE) and check the signed-in user matches.
"""

from __future__ import annotations

import json
import re
import secrets

from redis.asyncio import Redis

KEY_PREFIX = "gatehouse:connect:ticket:"
TICKET_BYTES = 32
_TICKET = re.compile(r"^[A-Za-z0-9_-]{43}$")


async def issue_connect_link(
    redis: Redis, public_url: str, org_id: str, user_id: str, provider: str, ttl: int = 600
) -> str:
    """Store a new ticket for ``ttl`` seconds and return the URL that redeems it."""
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    ticket = secrets.token_urlsafe(TICKET_BYTES)
    value = json.dumps({"org": org_id, "user": user_id, "provider": provider})
    await redis.set(KEY_PREFIX + ticket, value, ex=ttl)
    return f"{public_url.rstrip('/')}/connect?ticket={ticket}"


async def redeem_connect_ticket(redis: Redis, ticket: str) -> dict[str, str] | None:
    """The ticket's ``{"org", "user", "provider"}``, once; None if unknown, used or expired."""
    if not isinstance(ticket, str) or not _TICKET.match(ticket):
        return None  # never a Redis key built from arbitrary input
    raw = await redis.getdel(KEY_PREFIX + ticket)
    if raw is None:
        return None
    document = json.loads(raw)
    if not isinstance(document, dict):
        return None
    return {k: str(document[k]) for k in ("org", "user", "provider")}
