"""Typed endpoints: one declaration yields the Starlette route, the permission check, request
validation, and the endpoint's OpenAPI entry, so the published contract cannot drift from the
code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.auth import principal_of
from gateway.errors import BadRequest, InvalidInput, JsonBodyError, Location
from gateway.jsonbody import loads
from gateway.permissions import require
from gateway.principal import Principal
from gateway.services import Services, services_of

_MAX_BODY = 256 * 1024


@dataclass(frozen=True)
class Call:
    """What a handler receives: who is calling, with what, through which services."""

    request: Request
    principal: Principal
    services: Services
    body: Any = None
    query: Any = None

    @property
    def request_id(self) -> str:
        return str(self.request.scope["state"]["request_id"])

    def path(self, name: str) -> str:
        return str(self.request.path_params[name])


Handler = Callable[[Call], Awaitable[Response]]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    permission: str
    summary: str
    status: int = 200
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    errors: tuple[int, ...] = field(default=(400, 401, 403, 429, 503))
    # A permission that depends on the path (which prompt layer), checked like ``permission``
    # before the body is read: a caller who may not write learns that, not what their body lacks.
    guard: Callable[[Call], None] | None = None

    def route(self) -> Route:
        async def endpoint(request: Request) -> Response:
            principal = principal_of(request.scope)
            require(principal, self.permission)
            call = Call(request, principal, services_of(request.scope))
            if self.guard is not None:
                self.guard(call)
            return await self.handler(replace(
                call, body=await _parse_body(request, self.body),
                query=_parse_query(request, self.query),
            ))

        return Route(self.path, endpoint, methods=[self.method])


def _errors(exc: ValidationError, where: Location) -> list[dict[str, Any]]:
    # The rejected input is never echoed back: it may be large, or secret.
    return [
        InvalidInput.error(where, err["loc"], err["msg"], err["type"])
        for err in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


async def _parse_body(request: Request, model: type[BaseModel] | None) -> Any:
    if model is None:
        return None
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise BadRequest("send a JSON body", status=415, code="unsupported_media_type")
    raw = await _read(request)
    try:
        loads(raw)  # depth, finite numbers, not empty: the checks every body shares
        # pydantic's own parser still validates: it also refuses lone surrogates, which
        # PostgreSQL cannot store.
        return model.model_validate_json(raw)
    except JsonBodyError as exc:
        raise InvalidInput([InvalidInput.error("body", [], str(exc), "json_invalid")]) from exc
    except ValidationError as exc:
        raise InvalidInput(_errors(exc, "body")) from exc


async def _read(request: Request) -> bytes:
    too_large = BadRequest("request body too large", status=413, code="payload_too_large")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > _MAX_BODY:  # refused without waiting for it
        raise too_large
    raw = b""
    try:
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > _MAX_BODY:
                raise too_large
    except ClientDisconnect:  # nobody is left to answer; not an error of ours
        raise BadRequest("client disconnected before sending the whole body") from None
    return raw


def _parse_query(request: Request, model: type[BaseModel] | None) -> Any:
    if model is None:
        return None
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise InvalidInput(_errors(exc, "query")) from exc
