"""Running one provider tool call: limits, the user's token, the call, and clear MCP errors.

Order: the per-(user, tool), per-(organisation, provider) and per-provider limits and the
organisation's circuit breaker for the provider decide in one Redis script run
(:func:`resilience.admit`: one round trip, all or nothing, so a call refused by one limit counts
against none), then the user's token
is loaded (and if due, refreshed), then the call is made under the breaker's admission. A call
admitted but not made (the user is not connected, say) gives its half-open trial slot back.

Every failure becomes a :class:`~mcp_server.errors.ToolFailed` whose text a person can act on
(the translation is :func:`mcp_server.errors.tool_failure`):

* not connected / needs reconnect / token rejected (401, marked needs_reconnect) — each with a
  one-time connect link for this organisation, user and provider;
* missing scope (named when the provider says which; else the tool's declared scopes) — with a
  connect link to grant it;
* provider unavailable (breaker open, 429, 5xx, timeout, refresh failing) with a retry hint;
* rate limited (which limit, and when to retry);
* the provider refused the request (status code only: bodies are never reflected).

No message contains a token; unexpected exceptions are logged by type only.

Link answers are :class:`ConnectRequired`. On protocol 2025-11-25 :class:`UrlElicitationOffer`
(a FastMCP middleware: FastMCP turns any exception raised *inside* a tool into an ``isError``
result, but lets an ``MCPError`` raised by middleware reach the wire) also offers the link as
URL-mode elicitation: JSON-RPC error -32042 with ``{"elicitations": [{"mode": "url", ...}]}``,
the only way a stateless server can (it cannot send ``elicitation/create``). Only when the client
declared ``elicitation.url``: a stateless server never sees ``initialize``, so the declaration is
read from the request's ``_meta["io.modelcontextprotocol/clientCapabilities"]`` (or from the
handshake, had the server kept it). Otherwise, and always on 2026-07-28 (which removed -32042),
the answer stays the plain tool error with the link.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import mcp_types as mt
from fastmcp import Context
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools import ToolResult
from mcp.shared.exceptions import UrlElicitationRequiredError

from mcp_server.auth import current_caller
from mcp_server.errors import ConnectRequired, ToolFailed, tool_failure, unavailable, unexpected
from mcp_server.lifespan import (
    REFRESH_MARGIN,
    RUNTIME_KEY,
    GrantAccess,
    ProviderRuntime,
    ToolLimits,
)
from mcp_server.provider_watch import BreakerWatch
from oauth.assertion import CallerIdentity
from oauth.connect_links import issue_connect_link
from oauth.errors import NotConnected, ProviderUnauthorized, VaultError
from oauth.provider_client import ProviderApi
from resilience import BreakerTicket, CircuitBreaker, LimiterUnavailable, admit

log = logging.getLogger(__name__)
T = TypeVar("T")
ProviderCall = Callable[[ProviderApi, str], Awaitable[T]]
# Whose limit each of _admit's buckets is, in their order, and its metrics label.
_LIMIT_OWNERS = ("your limit for {tool}", "your organisation's limit for {name}",
                 "this server's limit for {name}")
_LIMIT_LABELS = ("user_tool", "org_provider", "provider")
URL_ELICITATION_VERSIONS = frozenset({"2025-11-25"})  # -32042 exists in these versions only


class UrlElicitationOffer(Middleware):
    """Re-raise :class:`ConnectRequired` as URL elicitation for clients that declared it."""

    async def on_call_tool(
        self,
        context: MiddlewareContext[mt.CallToolRequestParams],
        call_next: CallNext[mt.CallToolRequestParams, ToolResult],
    ) -> ToolResult:
        try:
            return await call_next(context)
        except ConnectRequired as exc:
            ctx = context.fastmcp_context
            request = None if ctx is None else ctx.request_context
            if request is None or request.protocol_version not in URL_ELICITATION_VERSIONS:
                raise
            if not _declares_url_elicitation(request.session.client_capabilities, request.meta):
                raise
            elicitation = mt.ElicitRequestURLParams(
                message=exc.reason, url=exc.url, elicitation_id=secrets.token_urlsafe(16)
            )
            raise UrlElicitationRequiredError([elicitation], exc.reason) from None


def _declares_url_elicitation(
    handshake: mt.ClientCapabilities | None, meta: dict[str, Any] | None
) -> bool:
    if handshake is not None:
        return handshake.elicitation is not None and handshake.elicitation.url is not None
    declared = (meta or {}).get(mt.CLIENT_CAPABILITIES_META_KEY)
    elicitation = declared.get("elicitation") if isinstance(declared, dict) else None
    return isinstance(elicitation, dict) and isinstance(elicitation.get("url"), dict)


def _runtime(ctx: Context) -> ProviderRuntime | None:
    runtime = ctx.lifespan_context.get(RUNTIME_KEY)
    return runtime if isinstance(runtime, ProviderRuntime) else None


async def run_provider_tool(
    ctx: Context, tool: str, provider: str, scopes: tuple[str, ...], call: ProviderCall[T]
) -> T:
    """Call ``call(api, access_token)`` for the current caller, mapping every failure."""
    runtime = _runtime(ctx)
    api = None if runtime is None else runtime.apis.get(provider)
    if runtime is None or runtime.grants is None or api is None:
        # Only listed when enabled (provider_tools), so only a stale or racing client gets here.
        raise ToolFailed(f"provider {provider!r} is not configured on this Gatehouse server")
    caller = current_caller()
    try:
        return await _run(runtime, runtime.grants, api, caller, tool, provider, call)
    except Exception as exc:  # never let a provider body or token surface through FastMCP
        raise await _answer(runtime, runtime.grants, caller, tool, provider, scopes, exc
                            ) from None


async def _answer(
    runtime: ProviderRuntime, grants: GrantAccess, caller: CallerIdentity, tool: str, provider: str,
    scopes: tuple[str, ...], exc: Exception,
) -> ToolFailed:
    """The tool's answer to ``exc`` (see :func:`mcp_server.errors.tool_failure`), with a
    connect link where the user must act."""
    answer = tool_failure(exc, runtime.apis[provider].spec.display_name, scopes)
    if answer is None:  # logged by type only: a message could carry a provider's body
        log.error("tool %s failed unexpectedly (%s)", tool, type(exc).__name__)
        return unexpected(tool)
    if isinstance(exc, VaultError):
        log.error("stored %s connection cannot be opened", provider)
        runtime.metrics.vault_failures.labels(runtime.metrics.provider(provider)).inc()
    if not isinstance(answer, ConnectRequired) or answer.url:
        return answer
    try:
        return answer.with_url(await _link(runtime, grants, caller, provider))
    except Exception as link_exc:  # Redis down, say: the answer still must not leak
        log.error("tool %s: no connect link (%s)", tool, type(link_exc).__name__)
        return unexpected(tool)


async def _run(
    runtime: ProviderRuntime, grants: GrantAccess, api: ProviderApi, caller: CallerIdentity,
    tool: str, provider: str, call: ProviderCall[T],
) -> T:
    breaker = api.breaker.scoped(caller.org_id)  # one tenant's failures open only its own
    watch = BreakerWatch(runtime.metrics, provider, caller.org_id, breaker)
    ticket = await _admit(grants.limits, api, breaker, caller, tool, provider, watch)
    view = api.admitted(ticket, breaker)
    try:
        token = await _fresh_token(grants, caller, provider)
        async with watch.timed():
            return await call(view, token)
    except ProviderUnauthorized:
        if grants.cache is not None:
            grants.cache.forget(caller, provider)
        await grants.store.mark_needs_reconnect(caller, provider)
        raise
    finally:
        await view.release_unused()


async def _admit(limits: ToolLimits, api: ProviderApi, breaker: CircuitBreaker,
                 caller: CallerIdentity, tool: str, provider: str, watch: BreakerWatch
                 ) -> BreakerTicket | None:
    """The three limits and the organisation's breaker for the provider, in one Redis round
    trip. The organisation's share is checked with the provider-wide limit in the same run, so
    an organisation past its share is refused without spending the shared budget."""
    buckets = [limits.for_tool(tool).bucket(caller.org_id, caller.user_id, tool),
               limits.org_provider.bucket(caller.org_id, provider),
               limits.provider.bucket(provider)]
    try:
        admission = await admit(buckets, breaker)
    except LimiterUnavailable:
        watch.metrics.limit_refusals.labels("unavailable").inc()
        raise
    name = api.spec.display_name
    for decision, whose, label in zip(admission.decisions, _LIMIT_OWNERS, _LIMIT_LABELS,
                                      strict=True):
        if not decision.allowed:
            watch.metrics.limit_refusals.labels(label).inc()
            what = whose.format(tool=tool, name=name)
            raise ToolFailed(f"rate limit exceeded ({what}: {decision.limit} per "
                             f"{decision.window_seconds} s); retry in {decision.retry_after} s",
                             outcome="rate_limited")
    if admission.ticket is not None:
        watch.seen(admission.ticket.state)
    if admission.ticket is not None and not admission.ticket.admitted:
        raise unavailable(name, admission.ticket.retry_after)
    return admission.ticket


async def _fresh_token(grants: GrantAccess, caller: CallerIdentity, provider: str) -> str:
    """From the sealed-row cache when fresh; else through the refresher (database, lock)."""
    if grants.cache is not None:
        bundle = await grants.cache.bundle(caller, provider)
        if bundle is None:
            raise NotConnected(provider)
        if not bundle.expires_within(REFRESH_MARGIN):
            return bundle.access_token
        grants.cache.forget(caller, provider)
    return await grants.refresher.access_token(caller, provider)


async def _link(runtime: ProviderRuntime, grants: GrantAccess, caller: CallerIdentity, provider: str
                ) -> str:
    return await issue_connect_link(
        grants.redis, runtime.public_url, caller.org_id, caller.user_id, provider,
        ttl=runtime.connect_link_ttl,
    )
