"""RFC 9457 problem documents, and the one table that turns foreign errors into them."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from gateway.errors import GatewayError, UpstreamUnavailable
from resilience import LimiterUnavailable
from sql import DatabaseUnavailable

PROBLEM_TYPE_BASE = "https://gatehouse.dev/problems/"


def translate(exc: Exception) -> GatewayError | None:
    """The gateway error a lower package's error is shown as; ``None`` for unexpected errors."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, DatabaseUnavailable):
        return UpstreamUnavailable(
            "the database is unavailable", status=503, code="database_unavailable", retry_after=2
        )
    if isinstance(exc, LimiterUnavailable):
        return UpstreamUnavailable(
            "the rate limiter is unavailable", status=503, code="rate_limiter_unavailable",
            retry_after=1,
        )
    return None


def problem_response(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    body = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title,
        "status": status,
        "code": code,
        "detail": detail,
        **extensions,
    }
    return JSONResponse(
        body, status_code=status, headers=headers, media_type="application/problem+json"
    )


def error_response(error: GatewayError, **extensions: Any) -> JSONResponse:
    return problem_response(
        error.status, error.code, error.title, error.detail, headers=error.headers, **extensions
    )


INTERNAL_ERROR = GatewayError("an unexpected error occurred; it has been logged")
