"""Per-user request limit, applied after authentication, shared by every replica via Redis."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.auth import is_protected, principal_of
from gateway.errors import RateLimited
from gateway.problem import error_response
from gateway.services import services_of


class UserRateLimitMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_protected(scope["path"]):
            await self.app(scope, receive, send)
            return
        services = services_of(scope)
        principal = principal_of(scope)
        decision = await services.user_limiter.hit(principal.org_id, principal.user_id)
        if decision.allowed:
            await self.app(scope, receive, send)
            return
        services.metrics.rate_limited.labels("user").inc()
        error = RateLimited("too many requests for this user; retry later")
        error.headers.update({
            "Retry-After": str(decision.retry_after),
            "RateLimit-Policy": f'"user";q={decision.limit};w={decision.window_seconds}',
            "RateLimit": f'"user";r={max(decision.remaining, 0)};t={decision.retry_after}',
        })
        response = error_response(error, request_id=scope["state"].get("request_id"))
        await response(scope, receive, send)
