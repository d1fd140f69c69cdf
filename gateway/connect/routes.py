"""Browser routes of the connect flow; the gateway only serves pages and redirects.

    GET  /connect?ticket=...           open a one-time connect link, for its own user only
                                       (:mod:`.tickets`): sign in first, or confirm
    POST /connect/confirm              (CSRF) without sign-in: redeem the link, 303 /connect
    GET  /connect                      the providers and their state, Connect/Disconnect forms
    GET  /connect/signin[/callback]    optional sign-in through the issuer (:mod:`.signin`)
    POST /oauth/{provider}/start       (CSRF) 303 to the provider's authorization URL
    GET  /oauth/{provider}/callback    hand code/state/iss/error to mcp_server, 303 /connect
    POST /oauth/{provider}/disconnect  (CSRF) revoke and forget, 303 /connect

Redirects only ever go to ``/connect`` or to the authorization URL mcp_server built from its
catalogue: no ``next``/``return_to`` is read from any request. Outcomes travel as messages in
the server-side session (shown once, escaped), never in the URL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.connect import confirm, csrf, internal, signin, tickets
from gateway.connect.pages import message, redirect, render, stale_form, stylesheet
from gateway.connect.session import BrowserSession, SessionStore
from gateway.errors import CsrfRejected, InternalError
from gateway.services import Services, services_of
from oauth.connect_links import look_up_connect_ticket

_NO_SESSION = ("Open the connect link again",
               "This page needs the one-time connect link your assistant gave you. Links work "
               "once and expire after a few minutes; ask for a new one.")


def _sessions(services: Services) -> SessionStore:
    return SessionStore.of(services.redis, services.settings)


async def connect_page(request: Request) -> Response:
    services = services_of(request.scope)
    sessions = _sessions(services)
    if "ticket" in request.query_params:
        return await _open_link(sessions, request)
    session = await sessions.load(request)
    if session is None:
        if services.settings.signin_client_id:
            return render("signin.html", 401, title="Sign in to connect accounts")
        return message(*_NO_SESSION, status=401)
    try:
        listed = await internal.call(services, session, "GET", "/connections")
    except InternalError as exc:
        return message("Connections unavailable", str(exc), status=503)
    flash, session.flash = session.flash, []
    if flash:
        await sessions.save(session)
    return render("connect.html", title="Connected accounts", org_id=session.org_id,
                  user_id=session.user_id, csrf=session.csrf, flash=flash,
                  providers=[_describe(p) for p in listed.get("providers", [])])


async def _open_link(sessions: SessionStore, request: Request) -> Response:
    services = services_of(request.scope)
    ticket = request.query_params["ticket"]
    lookup = await look_up_connect_ticket(services.redis, ticket)
    if lookup.grant is None:
        return tickets.unusable(lookup.state)
    with_signin = bool(services.settings.signin_client_id)
    session = await sessions.load(request)
    if session is not None and (session.signed_in or not with_signin):
        return await tickets.accept(services.redis, sessions, session, ticket)
    if with_signin:
        return await signin.start(request, ticket=ticket)
    return confirm.interstitial(request, services.settings, ticket, lookup.grant)


def _describe(item: dict[str, Any]) -> dict[str, Any]:
    described = {"account": "", "scopes": [], "needs_reconnect": False, "expires_at": None,
                 **item}
    expires = described["expires_at"]
    described["expires_text"] = (
        datetime.fromisoformat(expires).strftime("%Y-%m-%d %H:%M UTC") if expires else ""
    )
    return described


async def _form_session(request: Request) -> tuple[Services, SessionStore, BrowserSession]:
    services = services_of(request.scope)
    sessions = _sessions(services)
    session = await sessions.load(request)
    if session is None:
        raise CsrfRejected("no session")
    form = await csrf.read_form(request)
    csrf.check(request, session, form, services.settings.public_url)
    return services, sessions, session


async def start(request: Request) -> Response:
    try:
        services, _, session = await _form_session(request)
    except CsrfRejected:
        return stale_form()
    provider = request.path_params["provider"]
    try:
        answer = await internal.call(services, session, "POST", "/authorize",
                                     {"binding": session.binding}, provider=provider)
    except InternalError as exc:
        return message("Cannot connect", str(exc), status=exc.status)
    return redirect(str(answer["authorization_url"]))


async def callback(request: Request) -> Response:
    services = services_of(request.scope)
    sessions = _sessions(services)
    session = await sessions.load(request)
    if session is None:
        return message("Sign-in not completed", "This sign-in did not start in this browser "
                       "session, so it was not completed. Nothing was stored.", status=400)
    query = request.query_params
    body: dict[str, str | None] = {
        name: query.get(name, "") for name in ("state", "code", "error", "error_description")
    }
    body |= {"iss": query.get("iss"), "binding": session.binding}
    provider = request.path_params["provider"]
    try:
        outcome = await internal.call(services, session, "POST", "/callback", body,
                                      provider=provider)
    except InternalError as exc:
        session.say("error", f"Not connected: {exc}")
    else:
        session.say(*_outcome_note(outcome))
    await sessions.save(session)
    return redirect("/connect")


def _outcome_note(outcome: dict[str, Any]) -> tuple[str, str]:
    provider = outcome.get("display_name") or outcome.get("provider", "")
    if outcome.get("status") == "connected":
        account = outcome.get("account") or "an unnamed account"
        return "success", f"Connected {provider} as {account}."
    description = outcome.get("description") or "no reason given"
    return "error", (f"{provider} did not grant access ({outcome.get('error')}): "
                     f"{description}. Nothing was stored.")


async def disconnect(request: Request) -> Response:
    try:
        services, sessions, session = await _form_session(request)
    except CsrfRejected:
        return stale_form()
    provider = request.path_params["provider"]
    try:
        result = await internal.call(services, session, "POST", "/disconnect",
                                     provider=provider)
    except InternalError as exc:
        session.say("error", f"Not disconnected: {exc}")
    else:
        confirmed = ("the provider confirmed the revocation" if result.get("revoked")
                     else "the provider did not confirm revocation; revoke access there too")
        name = result.get("display_name") or provider
        session.say("success", f"Disconnected {name}; {confirmed}.")
    await sessions.save(session)
    return redirect("/connect")


ROUTES = [
    Route("/connect", connect_page, methods=["GET"]),
    Route("/connect/static/connect.css", stylesheet, methods=["GET"]),
    Route("/oauth/{provider}/start", start, methods=["POST"]),
    Route("/oauth/{provider}/callback", callback, methods=["GET"]),
    Route("/oauth/{provider}/disconnect", disconnect, methods=["POST"]),
    *confirm.ROUTES,
    *signin.ROUTES,
]
