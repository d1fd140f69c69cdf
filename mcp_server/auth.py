"""Pure ASGI middleware admitting only requests that carry a valid internal assertion.

Anything else (no token, a user's own identity-provider token, an expired or forged assertion)
is answered 401 before FastMCP sees it. The verified caller is put in ``scope["state"]`` for
tools to read through :func:`current_caller`.
"""

from __future__ import annotations

from fastmcp.server.dependencies import get_http_request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from mcp_server.errors import NoVerifiedCaller
from oauth.assertion import AssertionVerifier, CallerIdentity
from oauth.errors import AssertionRejected
from telemetry.logs import bind

_OPEN_PATHS = frozenset({"/healthz"})


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
        values = [v for k, v in scope["headers"] if k == b"authorization"]
        scheme, _, token = (values[0].decode("latin-1") if len(values) == 1 else "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            await _unauthorized("an internal assertion is required")(scope, receive, send)
            return
        try:
            caller = self.verifier.verify(token.strip())
        except AssertionRejected as exc:
            await _unauthorized(str(exc))(scope, receive, send)
            return
        scope.setdefault("state", {})["caller"] = caller
        bind(request_id=caller.request_id, org_id=caller.org_id, user_id=caller.user_id,
             session_id=caller.session_id)
        await self.app(scope, receive, send)


def current_caller() -> CallerIdentity:
    """The verified caller of the MCP request being served."""
    caller = get_http_request().scope.get("state", {}).get("caller")
    if not isinstance(caller, CallerIdentity):
        raise NoVerifiedCaller("no verified caller for this request")
    return caller
