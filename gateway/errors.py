"""Errors of the gateway, each carrying the HTTP status and stable ``code`` it is shown as.

    GatewayError
    ├── BadRequest            malformed input (400, 413, 415, 431, 422 from the database)
    ├── InvalidInput          well-formed but invalid, with per-field errors (422)
    ├── Unauthenticated       no or invalid bearer token (401 + WWW-Authenticate)
    ├── Forbidden             authenticated, but not allowed (403 insufficient_scope)
    ├── NotFound              unknown, foreign or private ids alike (404)
    ├── Conflict              refused by the current state (409: quotas, closed sessions, owners)
    ├── RateLimited           over a limit (429 + Retry-After, RateLimit headers)
    ├── UpstreamUnavailable   mcp_server, the database or Redis cannot be reached (502/503),
    │                         or mcp_server did not accept or answer in time (504)
    │   └── JwksUnavailable   no usable issuer key set (fetch failed, nothing fresh cached)
    ├── LauncherError         ``gatehouse`` (gateway.cli) failed; printed, never an HTTP answer
    │   ├── EmbeddedError     a private PostgreSQL/Redis could not be started or stopped
    │   └── SupervisorError   a child process (gateway, mcp_server) could not be started
    └── AnsweredByCaller      caught by the gateway code that called the raiser and answered in
        │                     that code's own terms; one reaching the edge is a bug, logged and
        │                     answered as an unexpected 500 like any foreign exception
        ├── RpcError              a malformed JSON-RPC message (answered as a JSON-RPC error)
        ├── JsonBodyError         a body that is not accepted JSON (also a ``ValueError``)
        ├── UpstreamFailed        mcp_server unreachable or broke the exchange off (also a
        │                         ``ConnectionError``)
        ├── ConnectTimeout        mcp_server did not accept a connection in time (also a
        │                         ``TimeoutError``)
        ├── CatalogueUnreadable   mcp_server's ``tools/list`` answer was not a tool list
        ├── CsrfRejected          a connect form not provably from our own page
        ├── InternalError         mcp_server's internal connect endpoints refused or are down
        ├── SigninError           an OpenID Connect sign-in cannot complete (shown on a page)
        └── ClientDocumentError   a client id metadata document (CIMD) cannot identify a client

Lower packages raise their own roots (``sql.DatabaseError``, ``resilience.ResilienceError``,
``oauth.OAuthError``); :mod:`gateway.problem` translates them at the edge, in one table.
Private signals a module raises and catches itself (``_Unwritten`` in :mod:`gateway.audit`,
``_BadBody`` in :mod:`gateway.dev_authorization.routes`) stay in that module.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any, Literal

# The part of a request an ``errors[].loc`` starts with.
Location = Literal["body", "query", "path", "header"]

# RFC 9110's names where Python's HTTPStatus still has the older ones.
_TITLES = {413: "Content too large", 422: "Invalid input"}


def title_of(status: int) -> str:
    """A problem's title: the name of its status, so it never contradicts the status."""
    return _TITLES.get(status) or HTTPStatus(status).phrase.capitalize()


class GatewayError(Exception):
    status = 500
    code = "internal_error"
    title = "Internal error"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}

    def extensions(self) -> dict[str, object]:
        """Extra members of the problem document (RFC 9457 extensions)."""
        return {}


class BadRequest(GatewayError):
    status = 400
    code = "bad_request"
    title = "Bad request"

    def __init__(self, detail: str, *, status: int = 400, code: str = "bad_request",
                 errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.title = title_of(status)
        self.errors = errors  # located like InvalidInput's, when a part of the request is at fault

    def extensions(self) -> dict[str, object]:
        return {"errors": self.errors} if self.errors else {}


class InvalidInput(GatewayError):
    status = 422
    code = "validation_failed"
    title = "Invalid input"

    def __init__(self, errors: list[dict[str, Any]],
                 detail: str = "the request does not match the schema; see errors") -> None:
        super().__init__(detail)
        self.errors = errors

    @staticmethod
    def error(where: Location, path: Sequence[str | int], message: str, kind: str
              ) -> dict[str, Any]:
        """One ``errors[]`` entry. Every 422 locates its errors one way, like FastAPI: the
        request part first, then the path inside it (``["body", "allowed_tools", 2]``,
        ``["query", "limit"]``, ``["header", "idempotency-key"]``; ``["body"]``: all of it)."""
        return {"loc": [where, *path], "msg": message, "type": kind}

    @classmethod
    def at(cls, field: str, message: str, kind: str, *, line: int | None = None,
           column: int | None = None) -> InvalidInput:
        """One invalid body field; ``line``/``column`` locate the problem inside its text."""
        error = cls.error("body", [field], message, kind)
        if line is not None:
            error |= {"line": line, "column": column}
        return cls([error])

    def extensions(self) -> dict[str, object]:
        return {"errors": self.errors}


class Unauthenticated(GatewayError):
    status = 401
    code = "invalid_token"
    title = "Authentication required"

    def __init__(self, detail: str, *, code: str = "invalid_token", reason: str = "") -> None:
        super().__init__(detail)
        self.code = code
        self.reason = reason  # which rule refused a token (oauth.jwt_rules); logged, not shown


class Forbidden(GatewayError):
    status = 403
    code = "insufficient_scope"
    title = "Forbidden"


class NotFound(GatewayError):
    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(GatewayError):
    status = 409
    code = "conflict"
    title = "Conflict"

    def __init__(self, detail: str, *, code: str) -> None:
        super().__init__(detail)
        self.code = code


class RateLimited(GatewayError):
    status = 429
    code = "rate_limited"
    title = "Too many requests"


class UpstreamUnavailable(GatewayError):
    status = 502
    code = "upstream_unavailable"
    title = "Upstream unavailable"

    def __init__(self, detail: str, *, status: int = 502, code: str = "upstream_unavailable",
                 retry_after: int | None = None) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)} if retry_after else None)
        self.status = status
        self.code = code


class JwksUnavailable(UpstreamUnavailable):
    """No usable key set: the endpoint failed and nothing trustworthy is cached.

    The token verifiers turn it into their own refusal; the status only matters if one escapes.
    """

    def __init__(self, detail: str) -> None:
        super().__init__(detail, status=503, code="keys_unavailable")


class LauncherError(GatewayError):
    """``gatehouse`` could not do its job; the message says why and is printed to the operator."""

    code = "launcher_error"


class EmbeddedError(LauncherError):
    """A private server could not be started (or stopped); the message says why."""


class SupervisorError(LauncherError):
    """A child could not be started at all; the message says which and why."""


class AnsweredByCaller(GatewayError):
    """Raised for the calling gateway code to answer in its own terms (a JSON-RPC error, a
    connect page, an OAuth error, a problem it chooses); :func:`gateway.problem.translate` never
    shows one as it is, so its message does not leak if one is left uncaught."""


class RpcError(AnsweredByCaller):
    """A message that is not valid JSON-RPC 2.0; ``body()`` is the JSON-RPC error answer.

    ``rpc_code`` is the JSON-RPC error code (``code`` is every gateway error's problem code)."""

    def __init__(self, code: int, message: str, request_id: Any = None) -> None:
        super().__init__(message)
        self.rpc_code = code
        self.message = message
        self.request_id = request_id

    def body(self) -> bytes:
        return json.dumps({
            "jsonrpc": "2.0",
            "id": self.request_id,
            "error": {"code": self.rpc_code, "message": self.message},
        }).encode()


class JsonBodyError(AnsweredByCaller, ValueError):
    """The body is not a JSON document this gateway accepts; the message says why."""


class UpstreamFailed(AnsweredByCaller, ConnectionError):
    """The upstream could not be reached, or broke the exchange off."""


class ConnectTimeout(AnsweredByCaller, TimeoutError):
    """The upstream did not accept a connection in time (so it never saw the request)."""


class CatalogueUnreadable(AnsweredByCaller):
    """mcp_server's answer to ``tools/list`` was not a tool list."""


class CsrfRejected(AnsweredByCaller):
    """The form is not provably from our own page."""


class InternalError(AnsweredByCaller):
    """mcp_server refused (``code``/``message`` are safe to show) or could not be reached."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class SigninError(AnsweredByCaller):
    """The sign-in cannot complete; the message explains why to the person signing in."""

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason  # the refusing JWT rule's code, for ID token refusals


class ClientDocumentError(AnsweredByCaller):
    """The URL or its document cannot identify a client; the message says why (safe to show)."""
