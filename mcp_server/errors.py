"""Errors of mcp_server, and the translation of lower packages' errors into MCP answers.

    McpServerError
    ├── NoVerifiedCaller      a tool ran without a verified caller (AssertionMiddleware missing)
    └── ToolFailed            a tool call failed; its text is the ``isError`` result the model
        │                     reads, so it says what to do next
        └── ConnectRequired   the user acts by opening ``url`` (connect, reconnect, grant a
                              scope); offered as URL elicitation (-32042) where the client
                              declared it (:class:`mcp_server.provider_runner.UrlElicitationOffer`)

``ToolFailed`` is also FastMCP's ``ToolError``, so FastMCP shows its text even when masking
error details, and logs it at the failure's own ``log_level``: an answer the user is expected to
get (not connected, rate limited, a provider's refusal) is not an error of this server.

Lower packages raise their own roots (``oauth.errors.OAuthError``,
``resilience.ResilienceError``). Tool calls translate them with :func:`tool_failure`, the
internal connect routes with :func:`connect_status`; an assertion the middleware refuses is
answered 401 by :mod:`mcp_server.auth`. No message contains a token or a provider's body.
"""

from __future__ import annotations

import logging

from fastmcp.exceptions import ToolError

from oauth.errors import (
    MissingScope,
    NeedsReconnect,
    NotConnected,
    OAuthError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnauthorized,
    ProviderUnavailable,
    RefreshFailed,
    VaultError,
)
from resilience import CircuitOpen, LimiterUnavailable

RECONNECT = "needs_reconnect"


class McpServerError(Exception):
    """Root of every error raised by this package."""


class NoVerifiedCaller(McpServerError):
    """The request reached a tool without the caller AssertionMiddleware verifies: a wiring
    mistake, never a client's doing."""


class ToolFailed(McpServerError, ToolError):
    """A tool call failed in a way its caller can act on (``log_level``: how FastMCP logs it;
    ``outcome``: how :data:`mcp_server.metrics.TOOL_OUTCOMES` counts it)."""

    def __init__(self, message: str, *, log_level: int = logging.INFO,
                 outcome: str = "tool_error") -> None:
        super().__init__(message, log_level=log_level)
        self.outcome = outcome


class ConnectRequired(ToolFailed):
    """An answer the user acts on by opening ``url`` (connect, reconnect, grant a scope)."""

    def __init__(self, reason: str, url: str = "", *, outcome: str = "needs_connect") -> None:
        super().__init__(f"{reason}: {url}" if url else reason, outcome=outcome)
        self.reason = reason
        self.url = url

    def with_url(self, url: str) -> ConnectRequired:
        return ConnectRequired(self.reason, url, outcome=self.outcome)


def unavailable(name: str, retry_after: float) -> ToolFailed:
    """The organisation's breaker for provider ``name`` refuses calls for now."""
    return ToolFailed(f"{name} is unavailable (failing recently); retry in {retry_after:.0f} s",
                      outcome="breaker_open")


def unexpected(tool: str) -> ToolFailed:
    return ToolFailed(f"{tool} failed unexpectedly; try again later", log_level=logging.ERROR)


def tool_failure(exc: Exception, name: str, scopes: tuple[str, ...]) -> ToolFailed | None:
    """What a provider tool (provider display name ``name``, declared ``scopes``) answers when
    it fails with ``exc``; None when the failure is not one the caller can act on (the runner
    logs it and answers :func:`unexpected`). A :class:`ConnectRequired` comes back without its
    ``url``: issuing the link is the runner's job."""
    if isinstance(exc, ToolFailed):
        return exc
    if isinstance(exc, OAuthError):
        return _oauth_failure(exc, name, scopes)
    if isinstance(exc, CircuitOpen):
        return unavailable(name, exc.retry_after)
    if isinstance(exc, LimiterUnavailable):
        return ToolFailed("rate limits cannot be checked right now; retry shortly",
                          log_level=logging.WARNING, outcome="rate_limited")
    return None


def _oauth_failure(exc: OAuthError, name: str, scopes: tuple[str, ...]) -> ToolFailed | None:
    if isinstance(exc, NotConnected):
        return ConnectRequired(f"you have not connected {name}; connect it here")
    if isinstance(exc, NeedsReconnect):
        return ConnectRequired(f"your {name} connection must be renewed; reconnect",
                               outcome=RECONNECT)
    if isinstance(exc, ProviderUnauthorized):
        return ConnectRequired(f"{name} no longer accepts your connection; reconnect",
                               outcome=RECONNECT)
    if isinstance(exc, MissingScope):
        needed = ", ".join(exc.scopes or scopes) or "a permission this tool needs"
        return ConnectRequired(f"your {name} connection is missing scope {needed}; "
                               "reconnect granting it", outcome=RECONNECT)
    if isinstance(exc, VaultError):
        return ConnectRequired(f"your {name} connection cannot be used; reconnect",
                               outcome=RECONNECT)
    if isinstance(exc, RefreshFailed):
        return ToolFailed(f"{name} is unavailable right now (token refresh failed); retry later",
                          log_level=logging.WARNING, outcome="provider_error")
    if isinstance(exc, ProviderUnavailable):
        limited = isinstance(exc, ProviderRateLimited)
        return ToolFailed(f"{name} is unavailable right now ({exc.reason}); retry later",
                          log_level=logging.WARNING,
                          outcome="rate_limited" if limited else "provider_error")
    if isinstance(exc, ProviderRejected):
        return ToolFailed(str(exc), outcome="provider_error")
    return None


# The internal connect routes' HTTP status per ConnectRejected code; any other code is 400.
_CONNECT_STATUS = {"unknown_provider": 404, "not_configured": 503}


def connect_status(code: str) -> int:
    """The HTTP status of a refused connect-flow request with ``ConnectRejected.code``."""
    return _CONNECT_STATUS.get(code, 400)
