"""RFC 9457 problem documents, and the one table that turns foreign errors into them."""

from __future__ import annotations

from typing import Any

import asyncpg
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.errors import (
    AnsweredByCaller,
    BadRequest,
    GatewayError,
    UpstreamUnavailable,
    title_of,
)
from prompts import PromptError
from resilience import LimiterUnavailable
from sql import DatabaseUnavailable

PROBLEM_TYPE_BASE = "https://gatehouse.dev/problems/"


# SQLSTATE -> what the caller sees; any other data exception (class 22, which also covers
# asyncpg's own refusal to encode an argument, 22000) answers 422. A row-level-security refusal
# (42501) answers 404: it must not reveal that a row exists in another organisation.
_SQLSTATES: dict[str, tuple[int, str, str]] = {
    "23505": (409, "conflict", "the resource already exists"),
    "23503": (409, "conflict", "a referenced resource does not exist"),
    "23514": (422, "validation_failed", "a value is outside what is allowed"),
    "22001": (422, "validation_failed", "a value is too long"),
    "22003": (422, "validation_failed", "a number is out of range"),
    "22021": (422, "validation_failed", "a value contains a character that cannot be stored"),
    "22P05": (422, "validation_failed", "a value contains a character that cannot be stored"),
    "54000": (422, "validation_failed", "a value is too large"),
    "42501": (404, "not_found", "no such resource"),
    "40001": (503, "retry", "a concurrent change conflicted; retry"),
    "40P01": (503, "retry", "a concurrent change conflicted; retry"),
    "57014": (503, "database_unavailable", "the database cancelled the query; retry"),
    "55P03": (503, "retry", "the resource is busy; retry"),
}


def _from_sqlstate(exc: asyncpg.PostgresError) -> GatewayError | None:
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if sqlstate.startswith("08") or sqlstate in ("57P01", "57P02", "57P03", "53300"):
        return UpstreamUnavailable("the database is unavailable", status=503,
                                   code="database_unavailable", retry_after=2)
    if sqlstate in _SQLSTATES:
        status, code, detail = _SQLSTATES[sqlstate]
    elif sqlstate.startswith("22"):  # class 22, data exception: the caller's value, not a bug
        status, code, detail = 422, "validation_failed", "a value cannot be stored as sent"
    else:
        return None
    if status == 503:
        return UpstreamUnavailable(detail, status=503, code=code, retry_after=1)
    return BadRequest(detail, status=status, code=code)


def translate(exc: Exception) -> GatewayError | None:
    """The gateway error a lower package's error is shown as; ``None`` for unexpected errors."""
    if isinstance(exc, AnsweredByCaller):
        return None  # its caller should have answered it: unexpected here, logged, not shown
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, asyncpg.PostgresError):
        return _from_sqlstate(exc)
    if isinstance(exc, PromptError):
        return BadRequest(f"the saved prompt layers cannot be composed: {exc}", status=409,
                          code="prompt_not_composable")
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
        error.status, error.code, error.title, error.detail, headers=error.headers,
        **error.extensions(), **extensions,
    )


async def http_exception(request: Request, exc: Exception) -> Response:
    """The router's own refusals (no such path, method not allowed), as problem documents."""
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
    detail = {404: "no such resource", 405: "method not allowed here"}.get(status, exc.detail)
    return problem_response(status, code, title_of(status), detail,
                            headers=dict(exc.headers or {}),
                            request_id=request.scope.get("state", {}).get("request_id"))


INTERNAL_ERROR = GatewayError("an unexpected error occurred; it has been logged")
