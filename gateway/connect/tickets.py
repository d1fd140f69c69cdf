"""Who may redeem a connect ticket (SECURITY 60; the MCP elicitation spec's URL-mode guidance:
whoever completes the flow must be the user it was started for).

A ticket is a bearer link. Whoever opens it and presses Connect would otherwise link *their*
provider account to the ticket's user, whose assistant then acts with it. So a ticket is only
ever redeemed into a session of its own organisation and user:

- with sign-in configured, the browser must be signed in as that user: without a session it
  signs in first (the ticket waits in the sign-in's server-side state, :mod:`.signin`);
- without sign-in, a page names the organisation and user that will receive the grant and only
  its CSRF-protected confirmation redeems the ticket (:mod:`.confirm`);
- a session of another user is never replaced by a ticket: the person is refused with a page
  saying so, and the ticket is left unused for the user it was issued to.
"""

from __future__ import annotations

from redis.asyncio import Redis
from starlette.responses import Response

from gateway.connect.pages import message, redirect
from gateway.connect.session import BrowserSession, SessionStore
from oauth.connect_links import (
    ConnectGrant,
    TicketState,
    look_up_connect_ticket,
    use_connect_ticket,
)

_UNUSABLE = {
    TicketState.MALFORMED: (404, "This link is not valid",
                            "The connect link is incomplete or was changed. Copy the whole "
                            "link your assistant gave you, or ask it for a new one."),
    TicketState.USED: (410, "This link was already used",
                       "Connect links work only once. Ask your assistant for a new one."),
    TicketState.UNKNOWN: (410, "This link is not valid or has expired",
                          "Connect links work once and only for a few minutes; this one is "
                          "unknown or past its time. Ask your assistant for a new one."),
}


def unusable(state: TicketState) -> Response:
    status, title, text = _UNUSABLE.get(state, _UNUSABLE[TicketState.UNKNOWN])
    return message(title, text, status=status)


def for_someone_else(session: BrowserSession, grant: ConnectGrant) -> Response:
    holder = "you are signed in as" if session.signed_in else (
        "this browser is already connecting accounts for")
    return message(
        "This link is for someone else",
        f"This link is for user {grant.user_id} of organisation {grant.org_id}, but {holder} "
        f"user {session.user_id} of organisation {session.org_id}. Nothing was linked and the "
        f"link was not used: only {grant.user_id} may use it. If someone sent you this link, "
        "do not use it.", status=403)


def note(session: BrowserSession, grant: ConnectGrant) -> None:
    session.say("info", f"Your assistant asked you to connect {grant.provider}: "
                        "use its Connect button below.")


async def use_for(redis: Redis, ticket: str, session: BrowserSession) -> Response | None:
    """Use the ticket up for ``session``'s user: a refusal page, or None when it was used (the
    session then carries a note; the caller saves it)."""
    lookup = await look_up_connect_ticket(redis, ticket)
    if lookup.grant is None:
        return unusable(lookup.state)
    if not session.is_for(lookup.grant.org_id, lookup.grant.user_id):
        return for_someone_else(session, lookup.grant)
    used = await use_connect_ticket(redis, ticket)  # atomic: one of two racing tabs wins
    if used.grant is None:
        return unusable(used.state)
    note(session, used.grant)
    return None


async def accept(redis: Redis, sessions: SessionStore, session: BrowserSession,
                 ticket: str) -> Response:
    """A ticket opened in a browser that already has a session that counts for this mode."""
    refusal = await use_for(redis, ticket, session)
    if refusal is not None:
        return refusal
    await sessions.save(session)
    return redirect("/connect")  # drop the ticket from the address bar and history
