"""One-time, short-lived connect links bound to an organisation, user and provider.

A tool that needs a provider the user has not connected (or must reconnect) answers with
``{public_url}/connect?ticket=...``. The ticket is 256 random bits (URL-safe base64), stored in
Redis as ``gatehouse:connect:ticket:<ticket>`` with value ``{"org", "user", "provider"}`` and
``EX ttl``. :func:`look_up_connect_ticket` only reads it (the connect page shows whom a link is
for before anyone accepts it); :func:`use_connect_ticket` swaps the value for a "used" marker
in one ``SET ... XX KEEPTTL GET``, so it works exactly once, on any replica, and until the
ticket would have expired a second attempt can be told "already used". After that, an expired
ticket and one that never existed look the same: both are "not valid or expired".

The ticket is a bearer capability for *starting* a connection; the connect flow must still
bind the person (:mod:`gateway.connect.tickets`) and the browser (state, PKCE).
"""

from __future__ import annotations

import enum
import json
import re
import secrets
from dataclasses import dataclass

from redis.asyncio import Redis

KEY_PREFIX = "gatehouse:connect:ticket:"
TICKET_BYTES = 32
_TICKET = re.compile(r"^[A-Za-z0-9_-]{43}$")
_USED = json.dumps({"used": True})


class TicketState(enum.Enum):
    VALID = "valid"
    USED = "used"
    UNKNOWN = "unknown"  # never issued, or expired (Redis cannot tell which)
    MALFORMED = "malformed"  # could never have been issued


@dataclass(frozen=True)
class ConnectGrant:
    """Whom a ticket was issued for: the only organisation and user it may connect for."""

    org_id: str
    user_id: str
    provider: str


@dataclass(frozen=True)
class TicketLookup:
    state: TicketState
    grant: ConnectGrant | None = None


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


def well_formed(ticket: object) -> bool:
    return isinstance(ticket, str) and _TICKET.match(ticket) is not None


def _parse(raw: bytes | str | None) -> TicketLookup:
    if raw is None:
        return TicketLookup(TicketState.UNKNOWN)
    document = json.loads(raw)
    if not isinstance(document, dict) or document.get("used") is True:
        return TicketLookup(TicketState.USED)
    grant = ConnectGrant(str(document["org"]), str(document["user"]), str(document["provider"]))
    return TicketLookup(TicketState.VALID, grant)


async def look_up_connect_ticket(redis: Redis, ticket: str) -> TicketLookup:
    """What a ticket grants, without using it up."""
    if not well_formed(ticket):
        return TicketLookup(TicketState.MALFORMED)  # never a Redis key built from arbitrary input
    return _parse(await redis.get(KEY_PREFIX + ticket))


async def use_connect_ticket(redis: Redis, ticket: str) -> TicketLookup:
    """Use a ticket up; VALID (with its grant) only for the one caller that used it."""
    if not well_formed(ticket):
        return TicketLookup(TicketState.MALFORMED)
    raw = await redis.set(KEY_PREFIX + ticket, _USED, xx=True, keepttl=True, get=True)
    return _parse(raw if isinstance(raw, (bytes, str)) else None)
