"""Signing people in to ``/connect`` through the gateway's own issuer (code + PKCE + nonce).

    GET /connect/signin            303 to the issuer's authorization endpoint
    GET /connect/signin/callback   check state, exchange the code, validate the ID token,
                                   start the connect session, 303 /connect

A connect link is not the only way in: operators who configure ``SIGNIN_CLIENT_ID`` let people
open ``/connect`` directly and sign in. The outcome is the very session a connect ticket starts
(:class:`gateway.connect.session.SessionStore`), for the organisation and user the configured
claim mapping reads, after the usual just-in-time provisioning.

A connect link opened without a signed-in session starts a sign-in too: its ticket waits in the
sign-in's record (never in a URL) and is redeemed after the callback only if the signed-in
person is the ticket's user (:mod:`gateway.connect.tickets`).

Each authorization request keeps ``{binding, nonce, verifier[, ticket]}`` in Redis under the
SHA-256 of its ``state`` with a TTL; the callback takes it with ``GETDEL`` before anything
else, so a state works once, and only in the browser whose pre-sign-in cookie hashes to
``binding``. Failures show an escaped page and store nothing. Redirects go only to the
issuer's discovered authorization endpoint or to ``/connect``; nothing in a request chooses a
destination.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.connect import tickets
from gateway.connect.pages import message, redirect
from gateway.connect.session import SessionStore, is_development
from gateway.connect.signin_oidc import SigninClient
from gateway.errors import SigninError, Unauthenticated
from gateway.principal import Principal
from gateway.services import Services, services_of
from oauth.connect import s256

STATE_PREFIX = "gatehouse:connect:signin:"
_STATE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def state_key(state: str) -> str:
    """Where a state's record lives: a hash, so a Redis dump yields no usable state."""
    return STATE_PREFIX + hashlib.sha256(state.encode()).hexdigest()


def cookie_name(public_url: str) -> str:
    return "gatehouse_signin" if is_development(public_url) else "__Host-gatehouse_signin"


def _binding(secret: str) -> str:
    return hashlib.sha256(f"gatehouse-signin|binding|{secret}".encode()).hexdigest()


def _enabled(request: Request) -> tuple[Services, SigninClient]:
    """The services and this application's client; 404 when sign-in is not configured."""
    services = services_of(request.scope)
    if services.signin is None:
        raise HTTPException(404, "Not Found")
    return services, services.signin


def _browser_secret(request: Request, public_url: str) -> str | None:
    secret = request.cookies.get(cookie_name(public_url), "")
    return secret if 40 <= len(secret) <= 100 else None


def _refused(text: str, status: int = 400) -> Response:
    return message("Sign-in not completed", f"{text} Nothing was stored.", status=status)


async def begin(request: Request) -> Response:
    return await start(request)


async def start(request: Request, *, ticket: str | None = None) -> Response:
    """303 to the issuer; ``ticket`` (already looked up) is redeemed after the callback."""
    services, client = _enabled(request)
    settings = services.settings
    try:
        provider = await client.metadata()
    except SigninError as exc:
        return message("Sign-in unavailable", str(exc), status=503)
    # Reusing a well-formed cookie lets two tabs sign in at once; it is never trusted alone.
    secret = _browser_secret(request, settings.public_url) or secrets.token_urlsafe(32)
    state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
    record = {"binding": _binding(secret), "nonce": nonce, "verifier": verifier}
    if ticket is not None:
        record["ticket"] = ticket
    ttl = settings.signin_state_ttl_seconds
    await services.redis.set(state_key(state), json.dumps(record), ex=ttl, nx=True)
    scopes = settings.signin_scopes.split()
    params = {
        "response_type": "code", "client_id": settings.signin_client_id,
        "redirect_uri": client.redirect_uri,
        "scope": " ".join(scopes if "openid" in scopes else ["openid", *scopes]),
        "state": state, "nonce": nonce,
        "code_challenge": s256(verifier), "code_challenge_method": "S256",
    }
    if settings.signin_resource:
        params["resource"] = settings.signin_resource
    endpoint = provider.authorization_endpoint
    response = redirect(endpoint + ("&" if "?" in endpoint else "?") + urlencode(params))
    response.set_cookie(cookie_name(settings.public_url), secret, max_age=ttl, path="/",
                        secure=not is_development(settings.public_url), httponly=True,
                        samesite="lax")
    return response


async def callback(request: Request) -> Response:
    services, client = _enabled(request)
    settings = services.settings
    query = request.query_params
    state = query.get("state", "")
    if not 20 <= len(state) <= 128 or not set(state) <= _STATE_CHARS:
        return _refused("The answer from the identity provider carried no valid state.")
    raw = await services.redis.getdel(state_key(state))  # consumed, whatever happens next
    if raw is None:
        return _refused("This sign-in has expired or was already used; start again.")
    record = json.loads(raw)
    secret = _browser_secret(request, settings.public_url)
    if secret is None or not hmac.compare_digest(_binding(secret), record["binding"]):
        return _refused("This sign-in was started in another browser.")
    try:
        principal = await _complete(services, client, request, record)
    except SigninError as exc:
        return _refused(str(exc))
    sessions = SessionStore.of(services.redis, settings)
    await sessions.end(request)  # a sign-in replaces any earlier session in this browser
    session = await sessions.create(principal.org_id, principal.user_id, signed_in=True)
    refusal = None
    if "ticket" in record:  # signed in as its user, or refused: never linked to another
        refusal = await tickets.use_for(services.redis, record["ticket"], session)
        await sessions.save(session)
    response = refusal or redirect("/connect")
    sessions.set_cookie(response, session)
    response.delete_cookie(cookie_name(settings.public_url), path="/",
                           secure=not is_development(settings.public_url), httponly=True,
                           samesite="lax")
    return response


async def _complete(services: Services, client: SigninClient, request: Request,
                    record: dict[str, str]) -> Principal:
    query = request.query_params
    if "error" in query:
        error = query.get("error", "")[:64]
        raise SigninError(f"The identity provider did not sign you in ({error}).")
    provider = await client.metadata()
    iss = query.get("iss")
    if iss is None and provider.iss_parameter_supported:
        raise SigninError("The answer did not name its issuer.")
    if iss is not None and iss != services.settings.issuer:
        raise SigninError("The answer came from another issuer.")
    code = query.get("code", "")
    if not code or len(code) > 2048:
        raise SigninError("The answer from the identity provider carried no code.")
    answer = await client.exchange(code, record["verifier"])
    claims = await client.validate(answer.id_token, record["nonce"])
    principal = await _principal(services, claims, answer.access_token)
    return await services.provisioner.ensure(principal)


async def _principal(services: Services, id_claims: dict[str, object],
                     access_token: str | None) -> Principal:
    """The configured claim mapping over the ID token; when that lacks the organisation (many
    issuers put it only in access tokens), over the access token too, if it verifies as one of
    ours and names the same subject. ID token claims win where both have a value."""
    try:
        return services.claims.principal(id_claims)
    except Unauthenticated as exc:
        missing = str(exc)
    if access_token is None or access_token.count(".") != 2:
        raise SigninError(f"The identity provider did not say who you are ({missing}).")
    try:
        access_claims = await services.verifier.verify(access_token)
    except Unauthenticated as exc:
        raise SigninError(f"The identity provider did not say who you are ({missing}; "
                          f"access token: {exc}).") from None
    if access_claims.get("sub") != id_claims.get("sub"):
        raise SigninError("The identity provider's tokens describe different users.")
    try:
        return services.claims.principal({**access_claims, **id_claims})
    except Unauthenticated as exc:
        raise SigninError(f"The identity provider did not say who you are ({exc}).") from None


ROUTES = [
    Route("/connect/signin", begin, methods=["GET"]),
    Route("/connect/signin/callback", callback, methods=["GET"]),
]
