"""mcp_server's internal endpoints of the browser connect flow (see :mod:`oauth.connect`).

Only the gateway calls these, on behalf of a browser whose connect ticket it redeemed; like
``/mcp`` they sit behind :class:`~mcp_server.auth.AssertionMiddleware`, so the organisation and
user always come from the gateway's signed assertion, never from the request body. Answers are
JSON and never contain a token, a verifier or a client secret.

    GET  /internal/connect/connections              providers and the caller's connections
    POST /internal/connect/{provider}/authorize     {"binding"} -> {"authorization_url"}
    POST /internal/connect/{provider}/callback      {"binding", "state", "code", "iss", ...}
    POST /internal/connect/{provider}/disconnect    -> {"deleted", "revoked"}

The flow uses what mcp_server's lifespan built (:mod:`mcp_server.lifespan`): the token store,
Redis, the HTTP session and the configured providers. ``GATEHOUSE_CONNECT_STATE_TTL_SECONDS``
(default 600) bounds how long an authorization request may take.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from fastmcp import FastMCP
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mcp_server.errors import connect_status
from mcp_server.lifespan import RuntimeHolder
from mcp_server.metrics import ServerMetrics
from oauth.assertion import CallerIdentity
from oauth.connect import CallbackParams, ConnectFlow, Denied
from oauth.errors import ConnectRejected

Handler = Callable[[ConnectFlow, CallerIdentity, Request], Awaitable[Response]]
Route = Callable[[Request], Awaitable[Response]]
_MAX_BODY = 16_384
_STAGE = "connect_stage"  # where a handler notes which stage of the flow it reached


def _problem(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)


def _flow(holder: RuntimeHolder, state_ttl: int) -> ConnectFlow:
    """A flow over the runtime the lifespan built."""
    runtime = holder.runtime
    if runtime is None or runtime.grants is None:
        raise ConnectRejected("not_configured", "Connecting providers is not available.")
    grants = runtime.grants
    return ConnectFlow(grants.redis, grants.store, runtime.http, runtime.providers,
                       public_url=runtime.public_url, state_ttl=state_ttl)


def _caller(request: Request) -> CallerIdentity:
    caller = request.scope.get("state", {}).get("caller")
    if not isinstance(caller, CallerIdentity):
        raise ConnectRejected("not_configured", "No verified caller.")
    return caller


async def _json(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > _MAX_BODY:
        raise ConnectRejected("invalid_request", "The request is too large.")
    try:
        document = json.loads(body or b"{}")
    except (ValueError, RecursionError):  # RecursionError: nested deeper than json can parse
        raise ConnectRejected("invalid_request", "The request is not JSON.") from None
    if not isinstance(document, dict):
        raise ConnectRejected("invalid_request", "The request is not a JSON object.")
    return {k: v for k, v in document.items() if isinstance(v, str)}


def _guarded(holder: RuntimeHolder, state_ttl: int, handler: Handler,
             count: Callable[[Request, str], None]) -> Route:
    """``count(request, stage)``: the flow's stage, for those handlers that start or end
    one (``failed`` when refused)."""

    async def run(request: Request) -> Response:
        try:
            response = await handler(_flow(holder, state_ttl), _caller(request), request)
        except ConnectRejected as exc:
            count(request, "failed")
            return _problem(connect_status(exc.code), exc.code, str(exc))
        count(request, request.scope.get("state", {}).get(_STAGE, ""))
        return response

    return run


def _counter(metrics: ServerMetrics, counted: bool) -> Callable[[Request, str], None]:
    def count(request: Request, stage: str) -> None:
        if counted and stage:
            metrics.connect(request.path_params.get("provider", ""), stage)

    return count


def _stage(request: Request, stage: str) -> None:
    request.scope.setdefault("state", {})[_STAGE] = stage


async def connections(flow: ConnectFlow, caller: CallerIdentity, request: Request) -> Response:
    listed = []
    for provider, info in await flow.connections(caller):
        item: dict[str, object] = {"provider": provider.name, "connected": info is not None,
                                   "display_name": provider.spec.display_name}
        if info is not None:
            item |= {"account": info.account, "scopes": list(info.scopes),
                     "needs_reconnect": info.needs_reconnect,
                     "expires_at": info.expires_at.isoformat() if info.expires_at else None}
        listed.append(item)
    return JSONResponse({"providers": listed})


async def authorize(flow: ConnectFlow, caller: CallerIdentity, request: Request) -> Response:
    binding = (await _json(request)).get("binding", "")
    if len(binding) < 32:
        raise ConnectRejected("invalid_request", "A browser binding is required.")
    url = await flow.start(caller, request.path_params["provider"], binding)
    _stage(request, "started")
    return JSONResponse({"authorization_url": url})


async def callback(flow: ConnectFlow, caller: CallerIdentity, request: Request) -> Response:
    body = await _json(request)
    params = CallbackParams(
        state=body.get("state", ""), code=body.get("code", ""), iss=body.get("iss"),
        error=body.get("error", ""), error_description=body.get("error_description", ""),
    )
    outcome = await flow.complete(caller, request.path_params["provider"],
                                  body.get("binding", ""), params)
    display = flow.provider(outcome.provider).spec.display_name
    _stage(request, "denied" if isinstance(outcome, Denied) else "completed")
    if isinstance(outcome, Denied):
        return JSONResponse({"status": "denied", "provider": outcome.provider,
                             "display_name": display, "error": outcome.error,
                             "description": outcome.description})
    return JSONResponse({"status": "connected", "provider": outcome.provider,
                         "display_name": display, "account": outcome.account,
                         "scopes": list(outcome.scopes)})


async def disconnect(flow: ConnectFlow, caller: CallerIdentity, request: Request) -> Response:
    provider = flow.provider(request.path_params["provider"])
    result = await flow.disconnect(caller, provider.name)
    return JSONResponse({"deleted": result.deleted, "revoked": result.revoked,
                         "display_name": provider.spec.display_name})


def register(mcp: FastMCP, holder: RuntimeHolder, state_ttl: int,
             metrics: ServerMetrics) -> None:
    """Mount the internal connect endpoints on the FastMCP app; ``metrics`` counts the
    flows started (authorize) and ended (callback)."""
    base = "/internal/connect"
    for path, methods, handler, counted in (
        (f"{base}/connections", ["GET"], connections, False),
        (f"{base}/{{provider}}/authorize", ["POST"], authorize, True),
        (f"{base}/{{provider}}/callback", ["POST"], callback, True),
        (f"{base}/{{provider}}/disconnect", ["POST"], disconnect, False),
    ):
        mcp.custom_route(path, methods=methods, include_in_schema=False)(
            _guarded(holder, state_ttl, handler, _counter(metrics, counted)))
