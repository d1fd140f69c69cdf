"""The confirmation a connect link needs when no sign-in is configured (SECURITY 60).

    GET  /connect?ticket=...   (no session here) a page naming who receives the grant
    POST /connect/confirm      (CSRF) redeem the ticket, start the session, 303 /connect

Opening a link only shows the page; the ticket stays unused until its form is posted. The
form's token is bound to this browser without server state: the page sets a random HttpOnly
cookie and the token is a domain-separated hash of that cookie and the ticket, so a form made
by another site or copied from another browser is refused (with the same ``Origin`` and
``Sec-Fetch-Site`` checks as every connect form). With sign-in configured this route does not
exist: there the issuer, not a click, says who the person is.
"""

from __future__ import annotations

import hashlib
import secrets

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.connect import csrf, tickets
from gateway.connect.pages import redirect, render, stale_form
from gateway.connect.session import SessionStore, is_development
from gateway.errors import CsrfRejected
from gateway.services import services_of
from gateway.settings import GatewaySettings
from oauth.connect_links import ConnectGrant, use_connect_ticket

CONFIRM_SECONDS = 900  # long enough to read the page; the ticket's own TTL still applies


def cookie_name(public_url: str) -> str:
    return "gatehouse_confirm" if is_development(public_url) else "__Host-gatehouse_confirm"


def _token(secret: str, ticket: str) -> str:
    return hashlib.sha256(f"gatehouse-connect|confirm|{secret}|{ticket}".encode()).hexdigest()


def _browser_secret(request: Request, public_url: str) -> str | None:
    secret = request.cookies.get(cookie_name(public_url), "")
    return secret if 40 <= len(secret) <= 100 else None


def _set_cookie(response: Response, settings: GatewaySettings, secret: str) -> None:
    response.set_cookie(cookie_name(settings.public_url), secret, max_age=CONFIRM_SECONDS,
                        path="/", secure=not is_development(settings.public_url),
                        httponly=True, samesite="lax")


def interstitial(request: Request, settings: GatewaySettings, ticket: str,
                 grant: ConnectGrant) -> Response:
    # Reusing a well-formed cookie lets two tabs confirm two links; it is never trusted alone.
    secret = _browser_secret(request, settings.public_url) or secrets.token_urlsafe(32)
    response = render("confirm.html", title="Check who this link is for",
                      org_id=grant.org_id, user_id=grant.user_id, provider=grant.provider,
                      ticket=ticket, csrf=_token(secret, ticket))
    _set_cookie(response, settings, secret)
    return response


async def confirm(request: Request) -> Response:
    services = services_of(request.scope)
    settings = services.settings
    if settings.signin_client_id:
        raise HTTPException(404, "Not Found")
    form = await csrf.read_form(request)
    ticket, secret = form.get("ticket", ""), _browser_secret(request, settings.public_url)
    try:
        csrf.check_origin(request, settings.public_url)
        csrf.check_token(form, _token(secret, ticket) if secret else "")
    except CsrfRejected:
        return stale_form()
    sessions = SessionStore.of(services.redis, settings)
    session = await sessions.load(request)
    if session is not None:  # e.g. another tab started one since this page was shown
        return await tickets.accept(services.redis, sessions, session, ticket)
    used = await use_connect_ticket(services.redis, ticket)
    if used.grant is None:
        return tickets.unusable(used.state)
    session = await sessions.create(used.grant.org_id, used.grant.user_id, signed_in=False)
    tickets.note(session, used.grant)
    await sessions.save(session)
    response = redirect("/connect")
    sessions.set_cookie(response, session)
    return response  # the confirmation cookie stays: another tab's page still gets a clear answer


ROUTES = [Route("/connect/confirm", confirm, methods=["POST"])]
