"""Pure ASGI middleware admitting only requests that carry a valid internal assertion.

Anything else (no token, a user's own identity-provider token, an expired or forged assertion)
is answered 401 before FastMCP sees it. The verified caller is put in ``scope["state"]`` for
tools to read through :func:`current_caller`, with the request id the gateway sent in
``X-Request-Id`` (an assertion is reused across requests, so it no longer carries one).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import replace

from fastmcp.server.dependencies import get_http_request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from mcp_server.errors import NoVerifiedCaller
from oauth.assertion import AssertionVerifier, CallerIdentity
from oauth.errors import AssertionRejected
from telemetry.logs import bind

_OPEN_PATHS = frozenset({"/healthz"})
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")  # the gateway's own rule


def _unauthorized(detail: str) -> JSONResponse:
    return JSONResponse(
        {
            "type": "https://gatehouse.dev/problems/invalid_assertion",
            "title": "Authentication required",
            "status": 401,
            "code": "invalid_assertion",
            "detail": detail,
        },
        status_code=401,
        media_type="application/problem+json",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


class AssertionMiddleware:
    def __init__(self, app: ASGIApp, verifier: AssertionVerifier) -> None:
        self.app = app
        self.verifier = verifier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        token, request_id = _credentials(scope)
        if token is None:
            await _unauthorized("an internal assertion is required")(scope, receive, send)
            return
        try:
            caller = self.verifier.verify(token, request_id=request_id)
        except AssertionRejected as exc:
            await _unauthorized(str(exc))(scope, receive, send)
            return
        if not caller.request_id:  # neither header nor (older) claim: this hop names it
            caller = replace(caller, request_id=uuid.uuid4().hex)
        scope.setdefault("state", {})["caller"] = caller
        bind(request_id=caller.request_id, org_id=caller.org_id, user_id=caller.user_id,
             session_id=caller.session_id)
        await self.app(scope, receive, send)


def _credentials(scope: Scope) -> tuple[str | None, str | None]:
    """The bearer assertion (``None`` unless exactly one) and a well-formed request id."""
    values, request_id = [], None
    for key, value in scope["headers"]:
        if key == b"authorization":
            values.append(value)
        elif key == b"x-request-id":
            request_id = value.decode("latin-1")
    scheme, _, token = (values[0].decode("latin-1") if len(values) == 1 else "").partition(" ")
    token = token.strip()
    if request_id is not None and not _REQUEST_ID.match(request_id):
        request_id = None
    return (token if scheme.lower() == "bearer" and token else None), request_id


def current_caller() -> CallerIdentity:
    """The verified caller of the MCP request being served."""
    caller = get_http_request().scope.get("state", {}).get("caller")
    if not isinstance(caller, CallerIdentity):
        raise NoVerifiedCaller("no verified caller for this request")
    return caller
