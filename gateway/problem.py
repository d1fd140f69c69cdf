"""RFC 9457 problem documents, and the one table that turns foreign errors into them."""

from __future__ import annotations

from typing import Any

import asyncpg
from starlette.responses import JSONResponse

from gateway.errors import BadRequest, GatewayError, UpstreamUnavailable
from prompts import PromptError
from resilience import LimiterUnavailable
from sql import DatabaseUnavailable

PROBLEM_TYPE_BASE = "https://gatehouse.dev/problems/"


# SQLSTATE -> what the caller sees. A row-level-security refusal (42501) answers 404: it must
# not reveal that a row exists in another organisation.
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
    if sqlstate not in _SQLSTATES:
        return None
    status, code, detail = _SQLSTATES[sqlstate]
    if status == 503:
        return UpstreamUnavailable(detail, status=503, code=code, retry_after=1)
    return BadRequest(detail, status=status, code=code)


def translate(exc: Exception) -> GatewayError | None:
    """The gateway error a lower package's error is shown as; ``None`` for unexpected errors."""
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


INTERNAL_ERROR = GatewayError("an unexpected error occurred; it has been logged")
